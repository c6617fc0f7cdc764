//! Bulk actions over real HTTP: a dry run counts, an operation acts in batches and reports
//! progress, bad requests name their field; the CLI follows an operation to its end.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::Api;

async fn start_runs(api: &Api, def: &str, n: usize) {
    for _ in 0..n {
        let (s, b) = api
            .call(
                "POST",
                "/v1/workflow-runs",
                Some(json!({"definitionId": def})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
}

async fn total(api: &Api, query: &str) -> u64 {
    let (s, b) = api
        .call("GET", &format!("/v1/workflow-runs?{query}"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    b["meta"]["total"].as_u64().unwrap()
}

async fn follow(api: &Api, id: &str) -> Value {
    let started = Instant::now();
    let mut seen_progress = Vec::new();
    loop {
        let (s, b) = api
            .call("GET", &format!("/v1/workflow-runs/bulk/{id}"), None)
            .await;
        assert_eq!(s, 200, "{b}");
        let op = b["data"].clone();
        seen_progress.push(op["processed"].as_u64().unwrap());
        if op["status"] == "COMPLETED" {
            assert!(
                seen_progress.windows(2).all(|w| w[0] <= w[1]),
                "{seen_progress:?}"
            );
            return op;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never finished: {op}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_retry_of_200_failed_runs() {
    let api = Api::start().await;
    // Fails the first call per run, succeeds on the retry.
    api.apply("id: flaky\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/flaky/1\"}\n").await;
    api.apply("id: other\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/status/500\"}\n").await;
    start_runs(&api, "flaky", 200).await;
    start_runs(&api, "other", 3).await;
    api.env.engine.until_idle().await.unwrap();
    assert_eq!(total(&api, "status=FAILED&definitionId=flaky").await, 200);

    let filter = json!({"status": "FAILED", "definitionId": "flaky"});
    let (s, b) = api
        .call(
            "POST",
            "/v1/workflow-runs/bulk",
            Some(json!({"action": "retry", "filter": filter, "dryRun": true})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["count"], 200, "{b}");
    assert_eq!(
        total(&api, "status=FAILED&definitionId=flaky").await,
        200,
        "a dry run changes nothing"
    );

    let began = Instant::now();
    let resp = api
        .http
        .post(api.url("/v1/workflow-runs/bulk"))
        .header("x-api-key", &api.key)
        .json(&json!({"action": "retry", "filter": filter}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    let id = body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/workflow-runs/bulk/{id}"));
    assert_eq!(body["data"]["total"], 200);

    let op = follow(&api, &id).await;
    eprintln!(
        "bulk retry: 200 runs acted on in {} ms (in batches of 100)",
        began.elapsed().as_millis()
    );
    assert_eq!(
        (
            op["total"].as_u64(),
            op["processed"].as_u64(),
            op["succeeded"].as_u64(),
            op["failed"].as_u64()
        ),
        (Some(200), Some(200), Some(200), Some(0)),
        "{op}"
    );
    // Its times read like a run's: milliseconds, as the seeds write them.
    for field in ["createdAt", "updatedAt", "finishedAt"] {
        let t = op[field].as_str().unwrap_or_default();
        let fraction = t.split('.').nth(1).unwrap_or_default();
        assert_eq!(fraction.len(), 4, "{field}: {t}");
        assert!(fraction.ends_with('Z'), "{field}: {t}");
    }
    api.env.engine.until_idle().await.unwrap();
    assert_eq!(
        total(&api, "status=COMPLETED&definitionId=flaky").await,
        200
    );
    assert_eq!(
        total(&api, "status=FAILED&definitionId=other").await,
        3,
        "the filter kept others out"
    );

    // Nothing left to retry: an operation over an empty selection completes at once.
    let (s, b) = api
        .call(
            "POST",
            "/v1/workflow-runs/bulk",
            Some(json!({"action": "retry", "filter": filter})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let op = follow(&api, b["data"]["id"].as_str().unwrap()).await;
    assert_eq!(op["total"], 0, "{op}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_requests_name_the_wrong_field() {
    let api = Api::start().await;
    for (body, field) in [
        (json!({}), "action"),
        (json!({"action": "delete"}), "action"),
        (
            json!({"action": "retry", "filter": {"status": "COMPLETED"}}),
            "filter.status",
        ),
        (
            json!({"action": "cancel", "filter": {"status": "FAILED"}}),
            "filter.status",
        ),
        (
            json!({"action": "cancel", "filter": {"owner": "x"}}),
            "filter.owner",
        ),
        (
            json!({"action": "cancel", "filter": {"from": "yesterday"}}),
            "filter.from",
        ),
        (json!({"action": "cancel", "dryRun": "yes"}), "dryRun"),
    ] {
        let (s, b) = api
            .call("POST", "/v1/workflow-runs/bulk", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body} → {b}");
        assert_eq!(b["error"]["details"]["field"], field, "{body} → {b}");
    }
    let (s, _) = api
        .call(
            "GET",
            "/v1/workflow-runs/bulk/bulk_0190c1d2e3f4a5b6c7d8e9f0a1b2c3d4",
            None,
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_cancels_by_filter_and_reports_progress() {
    let api = Api::start().await;
    api.apply(
        "id: ask\nsteps:\n  - {id: review, type: approval, message: ok?, options: [yes, no]}\n",
    )
    .await;
    start_runs(&api, "ask", 5).await;
    api.env.engine.until_idle().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stepwise"))
            .args(args)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("STEPWISE_SERVER", &api.base)
            .env("STEPWISE_API_KEY", &api.key)
            .output()
            .unwrap()
    };
    let o = cli(&[
        "runs",
        "cancel",
        "--filter",
        "workflow=ask,status=PAUSED",
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::util::show(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "5 runs would be cancelled"
    );
    let o = cli(&[
        "runs",
        "cancel",
        "--filter",
        "workflow=ask",
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::util::show(&o));
    let op: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (op["status"].as_str(), op["succeeded"].as_u64()),
        (Some("COMPLETED"), Some(5)),
        "{op}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("5/5 (5 done, 0 skipped, 0 failed)"), "{err}");
    assert_eq!(total(&api, "status=CANCELLED").await, 5);
    let o = cli(&["runs", "cancel", "--filter", "color=red"]);
    assert_eq!(o.status.code(), Some(2), "{}", crate::util::show(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unfinished_operation_goes_on_after_a_restart() {
    let api = Api::start().await;
    api.apply("id: flaky\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/flaky/1\"}\n").await;
    start_runs(&api, "flaky", 30).await;
    api.env.engine.until_idle().await.unwrap();
    // The row a server stored before it died, mid-way: 10 runs already retried.
    let engine = &api.env.engine;
    let (s, b) = api
        .call("GET", "/v1/workflow-runs?status=FAILED&pageSize=100", None)
        .await;
    assert_eq!(s, 200);
    let mut runs: Vec<(String, String)> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["createdAt"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    runs.sort();
    for (_, id) in &runs[..10] {
        engine.retry("ws_default", id).await.unwrap();
    }
    let now = jiff::Timestamp::now();
    let op = json!({
        "id": "bulk_0190c1d2e3f4a5b6c7d8e9f0a1b2c3d4", "action": "retry", "filter": {"definitionId": "flaky"},
        "status": "RUNNING", "total": 30, "processed": 0, "succeeded": 0, "skipped": 0, "failed": 0,
        "errors": [], "until": now.to_string(), "cursor": null,
        "createdAt": now.to_string(), "updatedAt": now.to_string(), "finishedAt": null
    });
    engine
        .store()
        .put_bulk(&stepwise::store::BulkRecord {
            id: "bulk_0190c1d2e3f4a5b6c7d8e9f0a1b2c3d4".into(),
            workspace_id: "ws_default".into(),
            finished: false,
            state: op,
        })
        .unwrap();
    assert_eq!(stepwise::bulk::resume(engine).await.unwrap(), 1);
    let op = follow(&api, "bulk_0190c1d2e3f4a5b6c7d8e9f0a1b2c3d4").await;
    // The 10 done before the restart are no longer FAILED: not selected, not retried twice.
    assert_eq!(
        (op["succeeded"].as_u64(), op["failed"].as_u64()),
        (Some(20), Some(0)),
        "{op}"
    );
    // They count as skipped, so the counts add up to the total.
    assert_eq!(
        (op["skipped"].as_u64(), op["processed"].as_u64()),
        (Some(10), Some(30)),
        "{op}"
    );
    engine.until_idle().await.unwrap();
    assert_eq!(total(&api, "status=COMPLETED").await, 30);
}

/// A crash after a batch acted and before its cursor was saved: the batch is selected again.
/// Runs it retried that failed again are FAILED once more, so a 409 cannot protect them:
/// they must be skipped, not retried a second time, and the counts still add up.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_redone_after_a_crash_does_not_retry_a_run_twice() {
    let api = Api::start().await;
    api.apply("id: broken\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/status/500\"}\n").await;
    start_runs(&api, "broken", 30).await;
    let engine = &api.env.engine;
    engine.until_idle().await.unwrap();
    // The operation started here...
    let until = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, b) = api
        .call("GET", "/v1/workflow-runs?status=FAILED&pageSize=100", None)
        .await;
    let mut runs: Vec<(String, String)> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["createdAt"].as_str().unwrap().into(),
                r["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    runs.sort();
    // ...and retried its first batch (they failed again) before the server died, with the
    // cursor not yet saved.
    for (_, id) in &runs[..10] {
        engine.retry("ws_default", id).await.unwrap();
    }
    engine.until_idle().await.unwrap();
    let id = "bulk_0190c1d2e3f4a5b6c7d8e9f0a1b2c3d5";
    let op = json!({
        "id": id, "action": "retry", "filter": {"definitionId": "broken"},
        "status": "RUNNING", "total": 30, "processed": 0, "succeeded": 0, "skipped": 0, "failed": 0,
        "errors": [], "until": until.to_string(), "cursor": null,
        "createdAt": until.to_string(), "updatedAt": until.to_string(), "finishedAt": null
    });
    engine
        .store()
        .put_bulk(&stepwise::store::BulkRecord {
            id: id.into(),
            workspace_id: "ws_default".into(),
            finished: false,
            state: op,
        })
        .unwrap();
    assert_eq!(stepwise::bulk::resume(engine).await.unwrap(), 1);
    let op = follow(&api, id).await;
    engine.until_idle().await.unwrap();
    assert_eq!(
        (
            op["succeeded"].as_u64(),
            op["skipped"].as_u64(),
            op["processed"].as_u64()
        ),
        (Some(20), Some(10), Some(30)),
        "{op}"
    );
    for (_, run) in &runs {
        let r = engine.run("ws_default", run).await.unwrap();
        assert_eq!(r.attempt, 2, "{run} was retried {} times", r.attempt - 1);
    }
}
