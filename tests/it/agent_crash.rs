//! kill -9 the real server in the middle of an agent loop: after a restart the loop goes on
//! from its last recorded turn. The scripted model does not see a completed call again, and
//! no tool run starts twice.

use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::model::RunStatus;
use stepwise::store::{SqliteStore, Store, Synchronous};

use crate::agent_tools::LOOKUP;
use crate::scripted_model::{ScriptedModel, answer, calls, turn_of};
use crate::serve::{Server, serve_env};
use crate::util::json_of;

/// The refund calls a payment API that the test holds open until it has killed the server.
const REFUND: &str = r#"id: refund-order
description: Refund an order.
input:
  type: object
  required: [orderId, amount]
  properties:
    orderId: {type: string}
    amount: {type: number}
steps:
  - id: pay
    type: action
    uses: http
    retry: {max_attempts: 3, initial_delay: 10ms}
    with:
      method: POST
      url: "{gate}"
      json: {orderId: "{{ input.orderId }}", amount: "{{ input.amount }}"}
"#;

const SUPPORT: &str = r#"id: support
steps:
  - id: help
    type: agent
    prompt: Refund order A1 if it was delivered.
    tools: [lookup-order, refund-order]
"#;

/// The real server on the test's database, its model the scripted one.
fn serve(dir: &std::path::Path, model: &ScriptedModel) -> Server {
    let defs = dir.join("defs");
    let base = model.base_url();
    serve_env(
        dir,
        &[
            "--insecure-no-auth",
            "--definitions",
            defs.to_str().unwrap(),
        ],
        &[
            ("STEPWISE_LLM_BASE_URL", base.as_str()),
            ("STEPWISE_LLM_MODEL", "scripted"),
        ],
    )
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_loop_resumes_after_kill_9_without_resending_completed_calls() {
    let model = ScriptedModel::start(vec![
        calls(&[("lookup-order", json!({"orderId": "A1"}))]),
        calls(&[("refund-order", json!({"orderId": "A1", "amount": 40}))]),
        answer("Refunded $40 for order A1."),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(defs.join("lookup-order.yaml"), LOOKUP).unwrap();
    std::fs::write(
        defs.join("refund-order.yaml"),
        REFUND.replace("{gate}", &model.gate_url()),
    )
    .unwrap();
    // Named to load first: the folder is applied tools first all the same.
    std::fs::write(defs.join("a-support.yaml"), SUPPORT).unwrap();
    let mut server = serve(dir.path(), &model);
    let http =
        stepwise::http_client::build(&stepwise::http_client::ClientOptions::default()).unwrap();
    let created = json_of(
        http.post(format!("{}/v1/workflow-runs", server.url))
            .json(&json!({"definitionId": "support", "input": {}})),
    )
    .await;
    let run_id = created["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();

    // The refund's payment call is in flight: two turns are recorded, a tool run is open.
    until("the refund's payment call", || model.gate_hits() == 1).await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let before: Vec<usize> = model.requests().iter().map(turn_of).collect();
    assert_eq!(before, [0, 1]);

    let mut server = serve(dir.path(), &model);
    model.open_gate();
    let url = format!("{}/v1/workflow-runs/{run_id}", server.url);
    let mut status = String::new();
    let started = Instant::now();
    while status != "COMPLETED" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run did not finish: {status}"
        );
        let r = json_of(http.get(&url)).await;
        status = r["data"]["status"].as_str().unwrap_or_default().to_string();
        assert_ne!(status, "FAILED", "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let turns: Vec<usize> = model.requests().iter().map(turn_of).collect();
    assert_eq!(turns, [0, 1, 2], "no completed model call is sent again");
    // The payment call that was in flight ran again (same Idempotency-Key); nothing else.
    assert_eq!(model.gate_hits(), 2);
    let store = SqliteStore::open(&dir.path().join("server.db"), Synchronous::Full).unwrap();
    let run = store.run(&run_id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.output, Some(json!("Refunded $40 for order A1.")));
    let children = store.child_runs(&run_id).unwrap();
    let mut slugs: Vec<&str> = children
        .iter()
        .map(|c| c.definition_slug.as_str())
        .collect();
    slugs.sort();
    assert_eq!(
        slugs,
        ["lookup-order", "refund-order"],
        "each tool ran once"
    );
    assert!(children.iter().all(|c| c.status == RunStatus::Completed));
    let steps = store.steps(&run_id).unwrap();
    assert_eq!(steps.len(), 1, "the same attempt resumed");
    let usage = steps[0].usage.clone().unwrap();
    assert_eq!(usage["calls"], 3, "usage sums every turn: {usage}");
    assert_eq!(usage["totalTokens"], 330);
    let recovered = store
        .events(&run_id)
        .unwrap()
        .into_iter()
        .find(|e| e.kind.as_str() == "step.recovered")
        .expect("the recovery is in the trace");
    assert_eq!(
        recovered.data["reason"],
        "the process stopped while this attempt ran; it resumes from its last recorded turn"
    );
}
