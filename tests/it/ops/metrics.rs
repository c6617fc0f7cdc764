//! `/metrics` parsed by a real Prometheus text parser (Python `prometheus_client`), with
//! values that match the runs made; `/healthz` and `/readyz`.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::api::{Api, add_key};

/// `(name, sorted labels)` → value, as the Python parser read them; `None` when the parser
/// is not installed (the caller skips, saying so).
fn parse_with_prometheus_client(text: &str) -> Option<HashMap<(String, String), f64>> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())), s.value])
print(json.dumps(out))
"#;
    let probe = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, String, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    Some(rows.into_iter().map(|(n, l, v)| ((n, l), v)).collect())
}

async fn scrape(api: &Api, key: Option<&str>) -> (u16, String, String) {
    let mut req = api.http.get(api.url("/metrics"));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = req.send().await.unwrap();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (resp.status().as_u16(), ct, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_match_the_runs_made() {
    let api = Api::start().await;
    api.apply(
        "id: ok\nsteps:\n  - id: t\n    type: action\n    uses: transform\n    with: {value: 1}\n",
    )
    .await;
    api.apply("id: bad\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/status/500\"}\n").await;
    api.apply(
        "id: ask\nsteps:\n  - {id: review, type: approval, message: ok?, options: [yes, no]}\n",
    )
    .await;
    for (def, n) in [("ok", 3), ("bad", 2), ("ask", 1)] {
        for _ in 0..n {
            let (s, b) = api
                .call(
                    "POST",
                    "/v1/workflow-runs?wait=10s",
                    Some(json!({"definitionId": def})),
                )
                .await;
            assert_eq!(s, 201, "{b}");
        }
    }
    api.env.engine.until_idle().await.unwrap();

    // Auth: a key of the default workspace; none is 401, another workspace's is 403.
    let (s, _, _) = scrape(&api, None).await;
    assert_eq!(s, 401);
    let other = add_key(api.env.engine.store().as_ref(), "ws_other");
    let (s, _, body) = scrape(&api, Some(&other)).await;
    assert_eq!(s, 403, "{body}");
    let (s, ct, text) = scrape(&api, Some(&api.key)).await;
    assert_eq!(s, 200, "{text}");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");

    let Some(samples) = parse_with_prometheus_client(&text) else {
        eprintln!(
            "SKIPPED the Prometheus parser check: python3 cannot import prometheus_client (pip install prometheus_client)"
        );
        assert!(
            text.contains("stepwise_runs_started_total{workflow=\"ok\",trigger=\"api\"} 3"),
            "{text}"
        );
        return;
    };
    let get = |name: &str, labels: &str| -> f64 {
        *samples
            .get(&(name.to_string(), labels.to_string()))
            .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in\n{text}"))
    };
    assert_eq!(
        get("stepwise_runs_started_total", "trigger=api,workflow=ok"),
        3.0
    );
    assert_eq!(
        get("stepwise_runs_started_total", "trigger=api,workflow=bad"),
        2.0
    );
    assert_eq!(
        get(
            "stepwise_runs_finished_total",
            "status=COMPLETED,workflow=ok"
        ),
        3.0
    );
    assert_eq!(
        get("stepwise_runs_finished_total", "status=FAILED,workflow=bad"),
        2.0
    );
    assert_eq!(
        get(
            "stepwise_run_duration_seconds_count",
            "status=COMPLETED,workflow=ok"
        ),
        3.0
    );
    assert_eq!(get("stepwise_run_queue_seconds_count", "workflow=ok"), 3.0);
    assert_eq!(
        get("stepwise_step_attempts_total", "type=transform,workflow=ok"),
        3.0
    );
    assert_eq!(
        get("stepwise_step_attempts_total", "type=http,workflow=bad"),
        2.0
    );
    assert_eq!(
        get(
            "stepwise_step_failures_total",
            "error=http_status,type=http,workflow=bad"
        ),
        2.0
    );
    assert_eq!(
        get(
            "stepwise_step_duration_seconds_count",
            "status=COMPLETED,type=transform"
        ),
        3.0
    );
    assert_eq!(get("stepwise_waiting_runs", "kind=approval"), 1.0);
    assert_eq!(get("stepwise_timers_due", ""), 0.0);
    assert_eq!(get("stepwise_store_up", ""), 1.0);
    assert_eq!(get("stepwise_store_errors_total", ""), 0.0);
    assert!(get("stepwise_commit_batch_writes_count", "") >= 1.0);
    assert_eq!(
        get("stepwise_commit_seconds_count", ""),
        get("stepwise_commit_batch_writes_count", ""),
        "every commit succeeded"
    );
    assert!(get("stepwise_commit_batch_writes_sum", "") >= 6.0 * 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_readyz_answer_separately() {
    let api = Api::start().await;
    let resp = api.http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    let resp = api.http.get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

/// Every webhook delivery counts once: signal-only deliveries and signal-with-start are
/// firings too (they counted nothing before), and a delivery whose run the engine refused
/// is one error (it counted two).
#[tokio::test(flavor = "multi_thread")]
async fn each_webhook_delivery_counts_once_as_a_firing_or_an_error() {
    use crate::signals::{ORDER, api};
    use crate::triggers::add;
    let a = api(&[ORDER]).await;
    add(
        &a.triggers,
        "trigger: paid\nwebhook: {endpoint: paid}\nsignal: {type: payment.confirmed, correlate: \"{{ event.body.orderId }}\"}\n",
    );
    add(
        &a.triggers,
        "trigger: checkout\nworkflow: order\nwebhook: {endpoint: checkout}\ntransform: {orderId: \"{{ event.body.orderId }}\"}\nsignal: {type: payment.confirmed, correlate: \"{{ event.body.orderId }}\", start_if_none: true}\n",
    );
    add(
        &a.triggers,
        "trigger: bad-input\nworkflow: order\nwebhook: {endpoint: bad-input}\ntransform: {orderId: 5}\n",
    );
    let (s, _) = a
        .post("/v1/webhooks/paid", json!({"orderId": "o-1", "amount": 1}))
        .await;
    assert_eq!(s, 202, "the signal is buffered (ORDER's `buffer`)");
    let (s, b) = a
        .post(
            "/v1/webhooks/checkout",
            json!({"orderId": "o-2", "amount": 2}),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = a.post("/v1/webhooks/bad-input", json!({})).await;
    assert_eq!(s, 400, "the workflow's input schema refuses a number: {b}");
    let text = a.engine.metrics().render(&Default::default(), 0, true);
    for line in [
        "stepwise_trigger_firings_total{trigger=\"paid\",kind=\"webhook\"} 1",
        "stepwise_trigger_firings_total{trigger=\"checkout\",kind=\"webhook\"} 1",
        "stepwise_trigger_errors_total{trigger=\"bad-input\",kind=\"webhook\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}
