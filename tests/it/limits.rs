//! Concurrency and rate limits over real HTTP: never more RUNNING runs per key than the
//! limit (sampled), PENDING runs start in creation order, other keys are not held up, rate
//! windows open with the clock, step slots are shared by every run, and queues survive a
//! restart.

use std::time::Duration;

use serde_json::{Value, json};
use stepwise::model::{RunStatus, StepStatus};
use stepwise::store::{DEFAULT_WORKSPACE, RunRecord};

use crate::signals::api;

fn limited(url: &str) -> String {
    format!(
        r#"
id: limited
concurrency: {{limit: 3, key: "{{{{ input.customerId }}}}"}}
input:
  type: object
  required: [customerId]
  properties:
    customerId: {{type: string}}
steps:
  - id: call
    type: action
    uses: http
    with: {{url: "{url}", method: POST, body: {{customer: "{{{{ input.customerId }}}}", run: "{{{{ run.id }}}}"}}}}
"#
    )
}

async fn create(a: &crate::signals::Api, definition: &str, input: Value) -> String {
    let (status, body) = a
        .post(
            "/v1/workflow-runs",
            json!({"definitionId": definition, "input": input}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["id"].as_str().unwrap().to_string()
}

async fn running(a: &crate::signals::Api, definition: &str) -> Vec<Value> {
    let r = a
        .http
        .get(format!(
            "{}/v1/workflow-runs?status=RUNNING&definitionId={definition}&pageSize=100",
            a.base
        ))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    body["data"].as_array().unwrap().clone()
}

async fn finished(a: &crate::signals::Api, id: &str) -> RunRecord {
    a.engine
        .wait_for(DEFAULT_WORKSPACE, id, Duration::from_secs(60), |s| {
            s.is_terminal()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_runs_with_limit_3_never_run_more_than_3_at_once() {
    let server = crate::server::TestServer::start().await;
    let def = limited(&server.url("/slow/200"));
    let a = api(&[&def]).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(create(&a, "limited", json!({"customerId": "c1"})).await);
    }
    // Another customer's run, created last, has its own slots: it does not wait for c1.
    let before = server.seen().len();
    assert!(before < 50, "the queue of c1 is still long");
    let other = create(&a, "limited", json!({"customerId": "c2"})).await;

    let mut most = 0;
    let mut samples = 0;
    loop {
        let now = running(&a, "limited").await;
        let c1 = now
            .iter()
            .filter(|r| r["input"]["customerId"] == "c1")
            .count();
        assert!(c1 <= 3, "{c1} runs of one key RUNNING at once");
        most = most.max(c1);
        samples += 1;
        let last = a.engine.run(DEFAULT_WORKSPACE, &ids[49]).await.unwrap();
        if last.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert!(
        samples > 5 && most >= 1,
        "{samples} samples, at most {most}"
    );

    for id in &ids {
        assert_eq!(finished(&a, id).await.status, RunStatus::Completed);
    }
    // Creation order is start order within a key: the engine's clock is a manual one, so
    // the order the server saw the calls in tells. Runs admitted in the same turn may reach
    // it in any order among themselves, hence the slack of the limit.
    let seen: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.body["run"].as_str().unwrap_or_default().to_string())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let at = seen.iter().position(|s| s == id).unwrap();
        assert!(
            at.abs_diff(i) <= 3,
            "run #{i} was the call #{at} the server saw"
        );
    }
    let other_at = seen.iter().position(|s| *s == other).unwrap();
    assert!(
        other_at <= before + 3,
        "the other key started at once (call #{other_at}, {before} calls before it was created), not after the queued runs"
    );
    // The server saw at most three calls of c1 at once: 50 calls in all.
    let calls = server
        .seen()
        .iter()
        .filter(|s| s.body["customer"] == "c1")
        .count();
    assert_eq!(calls, 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_opens_with_the_clock() {
    let a = api(&[r#"
id: rated
rate: {limit: 2, per: 1m}
steps:
  - id: noop
    type: action
    uses: transform
    with: {value: 1}
"#])
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create(&a, "rated", json!({})).await);
    }
    let status = |r: &RunRecord| r.status;
    for id in &ids[..2] {
        assert_eq!(status(&finished(&a, id).await), RunStatus::Completed);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &ids[2..] {
        let r = a.engine.run(DEFAULT_WORKSPACE, id).await.unwrap();
        assert_eq!(r.status, RunStatus::Pending, "the window is full");
    }
    a.clock.advance(Duration::from_secs(61));
    for id in &ids[2..4] {
        assert_eq!(status(&finished(&a, id).await), RunStatus::Completed);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = a.engine.run(DEFAULT_WORKSPACE, &ids[4]).await.unwrap();
    assert_eq!(last.status, RunStatus::Pending);
    a.clock.advance(Duration::from_secs(61));
    assert_eq!(status(&finished(&a, &ids[4]).await), RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_limit_is_shared_by_every_run() {
    let server = crate::server::TestServer::start().await;
    let def = format!(
        r#"
id: fragile
steps:
  - id: prepare
    type: action
    uses: transform
    with: {{value: 1}}
  - id: call
    type: action
    uses: http
    concurrency: 2
    with: {{url: "{}", method: GET}}
"#,
        server.url("/slow/80")
    );
    let a = api(&[&def]).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(create(&a, "fragile", json!({})).await);
    }
    loop {
        let mut calling = 0;
        for id in &ids {
            let steps = a.engine.store().steps(id).unwrap();
            calling += steps
                .iter()
                .filter(|s| s.step_id == "call" && s.status == StepStatus::Running)
                .count();
        }
        assert!(calling <= 2, "{calling} attempts of `call` at once");
        let done = a.engine.run(DEFAULT_WORKSPACE, &ids[7]).await.unwrap();
        if done.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in &ids {
        assert_eq!(finished(&a, id).await.status, RunStatus::Completed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_runs_survive_a_restart_in_order() {
    use stepwise::engine::CreateRun;
    let server = crate::server::TestServer::start().await;
    let def = limited(&server.url("/slow/150")).replace("limit: 3", "limit: 1");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let clock = stepwise::clock::ManualClock::new("2026-11-23T08:30:00Z".parse().unwrap());
    let engine = crate::triggers::start_engine(&db, &clock, crate::engine::config(&server));
    engine
        .apply_definition(DEFAULT_WORKSPACE, "limited.yaml", &def)
        .await
        .unwrap()
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..6 {
        let (r, _) = engine
            .create_run(CreateRun {
                workspace_id: DEFAULT_WORKSPACE.into(),
                definition: "limited".into(),
                input: json!({"customerId": "c1"}),
                idempotency_key: None,
                trigger: json!({"kind": "api"}),
            })
            .await
            .unwrap();
        ids.push(r.id);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    engine.shutdown().await;
    let pending = ids
        .iter()
        .filter(|id| engine.store().run(id).unwrap().unwrap().status == RunStatus::Pending)
        .count();
    assert!(pending >= 4, "{pending} runs were still queued at the stop");

    let engine = crate::triggers::start_engine(&db, &clock, crate::engine::config(&server));
    for id in &ids {
        let r = engine
            .wait_for(DEFAULT_WORKSPACE, id, Duration::from_secs(30), |s| {
                s.is_terminal()
            })
            .await
            .unwrap();
        assert_eq!(r.status, RunStatus::Completed);
    }
    // One at a time, in creation order (a call cut off by the stop is made again first).
    let mut seen: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.body["run"].as_str().unwrap_or_default().to_string())
        .collect();
    seen.dedup();
    assert_eq!(seen, ids);
    engine.shutdown().await;
}
