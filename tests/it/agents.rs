//! Seed 003's `POST /v1/agents/{name}/workflow` over real HTTP: its shape, its statuses,
//! its errors, and the seed 004 routes that get, resume and cancel the run it starts.

use serde_json::{Value, json};

use crate::api::Api;

const ROUTER: &str = r#"
id: route-lead
input:
  type: object
  required: [leadId]
  properties:
    leadId: {type: string}
steps:
  - id: classify
    type: action
    uses: transform
    with: {value: {category: enterprise}}
  - id: approval
    type: approval
    message: "Route {{ input.leadId }} to {{ steps.classify.output.category }} sales?"
    options: [approve, reject, escalate]
  - id: assign
    type: action
    uses: transform
    with: {value: {team: "{{ steps.classify.output.category }}"}}
result:
  leadId: "{{ input.leadId }}"
  decision: "{{ steps.approval.output }}"
"#;

const QUICK: &str = r#"
id: quick
steps:
  - id: only
    type: action
    uses: transform
    with: {value: {seen: "{{ input.x }}"}}
"#;

const CONSTANT: &str = r#"
id: constant
steps:
  - id: only
    type: action
    uses: transform
    with: {value: 42}
"#;

const SLOW: &str = "id: slow\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/slow/2000\"}\n";

const FAILING: &str = "id: failing\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/status/500\"}\n";

async fn start() -> Api {
    let api = Api::start().await;
    for yaml in [ROUTER, QUICK, CONSTANT, SLOW, FAILING] {
        let (s, b) = api.apply(yaml).await;
        assert!(s == 200 || s == 201, "{b}");
    }
    api
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_workflow_pauses_in_seed_003_shape_and_resumes_through_seed_004_routes() {
    let api = start().await;
    let (s, b) = api
        .call(
            "POST",
            "/v1/agents/route-lead/workflow",
            Some(json!({"input": {"task": "Route this lead to the right team", "state": {"leadId": "lead-123"}}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let keys: Vec<&String> = b.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["output", "run_id"], "{b}");
    let run_id = b["run_id"].as_str().unwrap().to_string();
    assert!(run_id.starts_with("wfrun_"));
    let out = &b["output"];
    assert_eq!(out["status"], "paused");
    assert_eq!(
        out["steps"],
        json!([{"name": "classify", "status": "completed", "output": {"category": "enterprise"}}])
    );
    assert_eq!(out["result"], Value::Null);
    assert_eq!(out["pendingAction"]["step"], "approval");
    assert_eq!(
        out["pendingAction"]["message"],
        "Route lead-123 to enterprise sales?"
    );
    assert_eq!(
        out["pendingAction"]["options"],
        json!(["approve", "reject", "escalate"])
    );

    // The task is recorded with the run; the state is its input.
    let (s, run) = api
        .call("GET", &format!("/v1/workflow-runs/{run_id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(run["data"]["status"], "PAUSED");
    assert_eq!(run["data"]["input"], json!({"leadId": "lead-123"}));
    assert_eq!(
        run["data"]["trigger"]["task"],
        "Route this lead to the right team"
    );
    assert_eq!(run["data"]["trigger"]["kind"], "agent");

    // Seed 003's resume body on the seed 004 route; an option not offered is refused.
    let (s, b) = api
        .call(
            "POST",
            &format!("/v1/workflow-runs/{run_id}/resume"),
            Some(json!({"input": {"resume": {"step": "approval", "input": "maybe"}}})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = api
        .call(
            "POST",
            &format!("/v1/workflow-runs/{run_id}/resume"),
            Some(json!({"input": {"resume": {"step": "approval", "input": "approve"}}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, run) = api
        .call("GET", &format!("/v1/workflow-runs/{run_id}?wait=5s"), None)
        .await;
    assert_eq!(run["data"]["status"], "COMPLETED");
    assert_eq!(
        run["data"]["output"],
        json!({"leadId": "lead-123", "decision": "approve"})
    );

    // Another paused run is cancelled with seed 003's DELETE.
    let (_, b) = api
        .call(
            "POST",
            "/v1/agents/route-lead/workflow",
            Some(json!({"input": {"task": "t", "state": {"leadId": "lead-9"}}})),
        )
        .await;
    let second = b["run_id"].as_str().unwrap();
    let (s, b) = api
        .call("DELETE", &format!("/v1/workflow-runs/{second}"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["status"], "CANCELLED");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_workflow_answers_completed_and_failed_runs() {
    let api = start().await;
    let (s, b) = api
        .call(
            "POST",
            "/v1/agents/quick/workflow",
            Some(json!({"input": {"task": "just do it", "state": {"x": "y"}}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["output"]["status"], "completed");
    assert_eq!(b["output"]["result"], json!({"seen": "y"}));
    assert_eq!(b["output"]["pendingAction"], Value::Null);
    assert_eq!(b["output"]["steps"][0]["status"], "completed");

    // No state: the workflow gets {}.
    let (s, b) = api
        .call(
            "POST",
            "/v1/agents/constant/workflow",
            Some(json!({"input": {"task": "no state"}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["output"]["status"], "completed");
    assert_eq!(b["output"]["result"], 42);
    let (_, run) = api
        .call(
            "GET",
            &format!("/v1/workflow-runs/{}", b["run_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(run["data"]["input"], json!({}));

    // The request is held at most `wait`: then the run is still running, and goes on.
    let (s, b) = api
        .call(
            "POST",
            "/v1/agents/slow/workflow?wait=200ms",
            Some(json!({"input": {"task": "take your time"}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["output"]["status"], "running");
    assert_eq!(
        b["output"]["steps"],
        json!([{"name": "call", "status": "running", "output": null}])
    );
    assert_eq!(b["output"]["result"], Value::Null);

    let (s, b) = api
        .call(
            "POST",
            "/v1/agents/failing/workflow?wait=20s",
            Some(json!({"input": {"task": "fail"}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["output"]["status"], "failed");
    assert_eq!(b["output"]["result"], Value::Null);
    assert_eq!(b["output"]["steps"][0]["status"], "failed");
    assert!(b["output"]["error"].is_object(), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_workflow_refuses_bad_requests_with_seed_codes() {
    let api = start().await;
    let cases = [
        (json!({}), "input"),
        (json!({"input": {"state": {}}}), "input.task"),
        (json!({"input": {"task": ""}}), "input.task"),
        (json!({"input": {"task": "t", "state": [1]}}), "input.state"),
        (json!({"input": {"task": "t", "extra": 1}}), "input.extra"),
        // The state must fit the workflow's input schema.
        (
            json!({"input": {"task": "t", "state": {"leadId": 5}}}),
            "input.state",
        ),
    ];
    for (body, field) in cases {
        let (s, b) = api
            .call("POST", "/v1/agents/route-lead/workflow", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(code(&b), "VALIDATION_ERROR");
        assert_eq!(b["error"]["details"]["field"], field, "{body}: {b}");
    }
    let (s, b) = api
        .call(
            "POST",
            "/v1/agents/route-lead/workflow?wait=forever",
            Some(json!({"input": {"task": "t"}})),
        )
        .await;
    assert_eq!((s, code(&b)), (400, "VALIDATION_ERROR"), "{b}");
    let (s, b) = api
        .call(
            "POST",
            "/v1/agents/nobody/workflow",
            Some(json!({"input": {"task": "t"}})),
        )
        .await;
    assert_eq!((s, code(&b)), (404, "NOT_FOUND"), "{b}");
    let (s, b) = api
        .call_as(
            "stw_wrong",
            "POST",
            "/v1/agents/quick/workflow",
            Some(json!({"input": {"task": "t"}})),
        )
        .await;
    assert_eq!((s, code(&b)), (401, "AUTH_ERROR"), "{b}");
}

/// Seed 003's endpoint reports a run waiting at an external event as `paused`, with that step
/// in `pendingAction`; seed 003's resume (`{"input": {"resume": {"step", "input"}}}`) naming
/// it delivers the input as the event's payload.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_external_event_resumes_with_seed_003s_body() {
    let api = start().await;
    let (s, b) = api
        .apply("id: paid\nsteps:\n  - id: payment\n    type: external_event\n    signal: payment.confirmed\n    schema: {type: object, required: [amount], properties: {amount: {type: number}}}\n")
        .await;
    assert!(s == 200 || s == 201, "{b}");
    let (s, b) = api
        .call(
            "POST",
            "/v1/agents/paid/workflow",
            Some(json!({"input": {"task": "Wait for the payment"}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["output"]["status"], "paused", "{b}");
    assert_eq!(b["output"]["pendingAction"]["step"], "payment", "{b}");
    let run_id = b["run_id"].as_str().unwrap().to_string();
    let resume = |input: Value| {
        let (api, path) = (&api, format!("/v1/workflow-runs/{run_id}/resume"));
        async move {
            api.call(
                "POST",
                &path,
                Some(json!({"input": {"resume": {"step": "payment", "input": input}}})),
            )
            .await
        }
    };
    // The step's schema still applies; the run keeps waiting.
    let (s, b) = resume(json!({"amount": "lots"})).await;
    assert_eq!((s, code(&b)), (400, "VALIDATION_ERROR"), "{b}");
    let (s, b) = resume(json!({"amount": 12})).await;
    assert_eq!(s, 200, "{b}");
    let (_, run) = api
        .call("GET", &format!("/v1/workflow-runs/{run_id}?wait=5s"), None)
        .await;
    assert_eq!(run["data"]["status"], "COMPLETED", "{run}");
    assert_eq!(run["data"]["output"], json!({"amount": 12}), "{run}");
}
