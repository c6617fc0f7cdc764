//! Failure alerts: a webhook retried until delivered, once; a workflow started once per
//! failure; a global alert from the configuration; delivery once across a kill -9 of the
//! real server, between attempts and in the middle of one.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stepwise::model::EventKind;
use stepwise::store::{SqliteStore, Store, Synchronous};

use crate::api::Api;
use crate::engine::{Env, config};
use crate::server::TestServer;

fn kinds(store: &dyn Store, run_id: &str) -> Vec<(EventKind, Value)> {
    store
        .events(run_id)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str().starts_with("alert."))
        .map(|e| (e.kind, e.data))
        .collect()
}

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn failed_run(api: &Api, def: &str) -> String {
    let (s, b) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=10s",
            Some(json!({"definitionId": def})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["data"]["status"], "FAILED", "{b}");
    b["data"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_alert_is_retried_and_delivered_once() {
    let api = Api::start().await;
    api.apply("id: doomed\non_failure:\n  webhook: {url: \"{server}/flaky/1\", headers: {x-team: payments}}\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/status/500\"}\n").await;
    let id = failed_run(&api, "doomed").await;
    let store = api.env.engine.store().clone();
    let events = until("the alert", async || {
        let k = kinds(store.as_ref(), &id);
        k.iter()
            .any(|(k, _)| *k == EventKind::AlertDelivered)
            .then_some(k)
    })
    .await;
    let names: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["alert.queued", "alert.retrying", "alert.delivered"],
        "{events:?}"
    );
    let alert_id = events[0].1["alertId"].as_str().unwrap().to_string();
    let calls: Vec<_> = api
        .env
        .server
        .seen()
        .into_iter()
        .filter(|s| s.path == "/flaky/1")
        .collect();
    assert_eq!(calls.len(), 2, "one failed attempt, one delivery");
    for c in &calls {
        assert_eq!(c.idempotency_key.as_deref(), Some(alert_id.as_str()));
        assert_eq!(c.body["run"]["id"], id.as_str());
        assert_eq!(c.body["run"]["status"], "FAILED");
        assert_eq!(c.body["error"]["kind"], "http_status");
        assert_eq!(c.body["event"], "run.failed");
    }
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        api.env
            .server
            .seen()
            .iter()
            .filter(|s| s.path == "/flaky/1")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_alert_starts_one_run_per_failure() {
    let api = Api::start().await;
    api.apply("id: handler\ninput: {type: object, required: [run, error]}\nsteps:\n  - id: note\n    type: action\n    uses: transform\n    with: {value: \"{{ input.run.id }}\"}\n").await;
    api.apply("id: doomed\non_failure: {workflow: handler}\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/status/500\"}\n").await;
    let id = failed_run(&api, "doomed").await;
    let store = api.env.engine.store().clone();
    let delivered = async |n: usize| {
        until("the alert workflow", async || {
            let k = kinds(store.as_ref(), &id);
            let d: Vec<Value> = k
                .into_iter()
                .filter(|(k, _)| *k == EventKind::AlertDelivered)
                .map(|(_, v)| v)
                .collect();
            (d.len() >= n).then_some(d)
        })
        .await
    };
    let first = delivered(1).await;
    let child = first[0]["result"]["childRunId"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, b) = api
        .call(
            "GET",
            &format!("/v1/workflow-runs/{child}?wait=10s&include=trigger"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["status"], "COMPLETED", "{b}");
    assert_eq!(b["data"]["output"], id.as_str(), "{b}");
    assert_eq!(b["data"]["trigger"]["kind"], "alert", "{b}");

    // A retry that fails again is another failure: another alert, another run.
    let (s, b) = api
        .call("POST", &format!("/v1/workflow-runs/{id}/retry"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    api.env.engine.until_idle().await.unwrap();
    let both = delivered(2).await;
    assert_ne!(
        both[0]["result"]["childRunId"],
        both[1]["result"]["childRunId"]
    );
    let (_, b) = api
        .call("GET", "/v1/workflow-runs?definitionId=handler", None)
        .await;
    assert_eq!(b["meta"]["total"], 2, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_global_alert_covers_every_workflow() {
    let server = TestServer::start().await;
    let mut cfg = config(&server);
    cfg.on_failure = Some(stepwise::definition::OnFailure {
        webhook: Some(stepwise::definition::AlertWebhook {
            url: server.url("/echo"),
            headers: Default::default(),
        }),
        workflow: None,
    });
    let env = Env::with(server, cfg).await;
    let (rec, _) = env
        .engine
        .apply_definition("ws_default", "plain.yaml", &format!("id: plain\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {{url: \"{}\"}}\n", env.server.url("/status/500")))
        .await
        .unwrap()
        .unwrap();
    let (run, _) = env
        .engine
        .create_run(stepwise::engine::CreateRun {
            workspace_id: "ws_default".into(),
            definition: rec.slug,
            input: json!({}),
            idempotency_key: None,
            trigger: json!({"kind": "api"}),
        })
        .await
        .unwrap();
    let store = env.engine.store().clone();
    let events = until("the global alert", async || {
        let k = kinds(store.as_ref(), &run.id);
        k.iter()
            .any(|(k, _)| *k == EventKind::AlertDelivered)
            .then_some(k)
    })
    .await;
    assert_eq!(events[0].1["scope"], "global", "{events:?}");
    let echoed: Vec<_> = env
        .server
        .seen()
        .into_iter()
        .filter(|s| s.path == "/echo")
        .collect();
    assert_eq!(echoed.len(), 1);
    assert_eq!(echoed[0].body["scope"], "global");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Served(Child, String);

/// The real server on `dir`; an alert attempt lasts at most 2 s, so one claimed by a
/// server that died is taken again 7 s later.
fn serve(dir: &std::path::Path) -> Served {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args(["serve", "--insecure-no-auth", "--addr", &addr, "--db"])
        .arg(dir.join("server.db"))
        .arg("--definitions")
        .arg(dir.join("defs"))
        .env("STEPWISE_ALERT_TIMEOUT", "2s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Served(child, format!("http://{addr}"))
}

/// The real server on a fresh folder whose workflow `doomed` fails and alerts the
/// receiver's `alert_path`; one run of it, failed.
async fn doomed_server(
    receiver: &TestServer,
    alert_path: &str,
) -> (tempfile::TempDir, Served, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("defs")).unwrap();
    std::fs::write(
        dir.path().join("defs/doomed.yaml"),
        format!(
            "id: doomed\non_failure:\n  webhook: {{url: \"{}\"}}\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {{url: \"{}\"}}\n",
            receiver.url(alert_path),
            receiver.url("/status/500")
        ),
    )
    .unwrap();
    let served = serve(dir.path());
    let http = reqwest::Client::new();
    let created: Value = until("the definition to load", async || {
        let r = http
            .post(format!("{}/v1/workflow-runs?wait=10s", served.1))
            .json(&json!({"definitionId": "doomed"}))
            .send()
            .await
            .ok()?;
        (r.status().as_u16() == 201).then_some(r.json().await.ok()?)
    })
    .await;
    assert_eq!(created["data"]["status"], "FAILED", "{created}");
    let run_id = created["data"]["id"].as_str().unwrap().to_string();
    (dir, served, run_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_is_delivered_once_across_kill_9() {
    let receiver = TestServer::start().await;
    // The receiver refuses the first two attempts: one before the kill, one after.
    let (dir, mut first, run_id) = doomed_server(&receiver, "/flaky/2").await;
    let alert_calls = || {
        receiver
            .seen()
            .into_iter()
            .filter(|s| s.path == "/flaky/2")
            .count()
    };
    until("the first attempt", async || {
        (alert_calls() >= 1).then_some(())
    })
    .await;
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();

    let mut second = serve(dir.path());
    until("the delivery", async || (alert_calls() >= 3).then_some(())).await;
    // Time for a wrong extra attempt to show.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    second.0.kill().unwrap();
    second.0.wait().unwrap();

    let calls: Vec<_> = receiver
        .seen()
        .into_iter()
        .filter(|s| s.path == "/flaky/2")
        .collect();
    assert_eq!(
        calls.len(),
        3,
        "two refused attempts and one delivery: {calls:?}"
    );
    let key = calls[0].idempotency_key.clone().unwrap();
    assert!(
        calls
            .iter()
            .all(|c| c.idempotency_key.as_deref() == Some(key.as_str()))
    );
    let attempts: Vec<_> = calls.iter().map(|c| c.attempt.clone().unwrap()).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let store = SqliteStore::open(&dir.path().join("server.db"), Synchronous::Full).unwrap();
    let events = kinds(&store, &run_id);
    let count = |k: EventKind| events.iter().filter(|(e, _)| *e == k).count();
    assert_eq!(count(EventKind::AlertQueued), 1, "{events:?}");
    assert_eq!(count(EventKind::AlertDelivered), 1, "{events:?}");
    let alert = store.alert(&key).unwrap().unwrap();
    assert_eq!(alert.status.as_str(), "delivered");
    assert!(alert.attempts >= 2, "{alert:?}");
}

/// The server dies while the receiver holds the first attempt: the next server sends the
/// same alert again, with the same key and body, as attempt 2, once its claim has lapsed; a
/// receiver that keeps the keys it has seen acts on it once.
#[tokio::test(flavor = "multi_thread")]
async fn an_alert_cut_off_by_kill_9_mid_delivery_is_sent_again_with_its_key() {
    let receiver = TestServer::start().await;
    let (dir, mut first, run_id) = doomed_server(&receiver, "/hold-first").await;
    let calls = || {
        receiver
            .seen()
            .into_iter()
            .filter(|s| s.path == "/hold-first")
            .collect::<Vec<_>>()
    };
    until("the first attempt", async || {
        (!calls().is_empty()).then_some(())
    })
    .await;
    first.0.kill().unwrap(); // SIGKILL while the receiver holds the request
    first.0.wait().unwrap();

    let mut second = serve(dir.path());
    until("the second attempt", async || {
        (calls().len() >= 2).then_some(())
    })
    .await;
    let store = SqliteStore::open(&dir.path().join("server.db"), Synchronous::Full).unwrap();
    until("the delivery to be recorded", async || {
        let k = kinds(&store, &run_id);
        k.iter()
            .any(|(e, _)| *e == EventKind::AlertDelivered)
            .then_some(())
    })
    .await;
    // Time for a wrong extra attempt to show.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    second.0.kill().unwrap();
    second.0.wait().unwrap();

    let calls = calls();
    assert_eq!(
        calls.len(),
        2,
        "the cut-off attempt and one more: {calls:?}"
    );
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert_eq!(calls[0].body, calls[1].body);
    let attempts: Vec<_> = calls.iter().map(|c| c.attempt.clone().unwrap()).collect();
    assert_eq!(attempts, ["1", "2"]);
    // A receiver that keeps the keys it has acted on acts once.
    let distinct: std::collections::HashSet<_> =
        calls.iter().map(|c| c.idempotency_key.clone()).collect();
    assert_eq!(distinct.len(), 1);
    let events = kinds(&store, &run_id);
    let count = |k: EventKind| events.iter().filter(|(e, _)| *e == k).count();
    assert_eq!(count(EventKind::AlertQueued), 1, "{events:?}");
    assert_eq!(count(EventKind::AlertDelivered), 1, "{events:?}");
    assert_eq!(count(EventKind::AlertRetrying), 0, "{events:?}");
    let key = calls[0].idempotency_key.clone().unwrap();
    let alert = store.alert(&key).unwrap().unwrap();
    assert_eq!(alert.status.as_str(), "delivered");
    assert_eq!(alert.attempts, 2, "{alert:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_the_receiver_refuses_is_given_up_and_recorded() {
    let api = Api::start().await;
    api.apply("id: picky\ninput: {type: object, required: [nope]}\nsteps:\n  - id: note\n    type: action\n    uses: transform\n    with: {value: 1}\n").await;
    api.apply("id: doomed\non_failure:\n  workflow: picky\n  webhook: {url: \"{server}/status/400\"}\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/status/500\"}\n").await;
    let id = failed_run(&api, "doomed").await;
    let store = api.env.engine.store().clone();
    let failed = until("both alerts to give up", async || {
        let f: Vec<Value> = kinds(store.as_ref(), &id)
            .into_iter()
            .filter(|(k, _)| *k == EventKind::AlertFailed)
            .map(|(_, v)| v)
            .collect();
        (f.len() == 2).then_some(f)
    })
    .await;
    let errors: Vec<&str> = failed
        .iter()
        .map(|f| f["error"].as_str().unwrap())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("answered 400")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("input")), "{errors:?}");
    assert!(failed.iter().all(|f| f["attempts"] == 1), "{failed:?}");
    let (_, b) = api
        .call("GET", "/v1/workflow-runs?definitionId=picky", None)
        .await;
    assert_eq!(b["meta"]["total"], 0, "{b}");
}
