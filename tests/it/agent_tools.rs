//! Agent steps with tools: applying checks the tools against the workspace's workflows;
//! tool calls run as child runs whose results reach the model; limits; resumed loops.

use serde_json::{Value, json};
use stepwise::engine::EngineConfig;
use stepwise::exec::agent::Prices;
use stepwise::model::{RunStatus, StepStatus};
use stepwise::store::{DEFAULT_WORKSPACE, StepRecord};

use crate::engine::Env;
use crate::scripted_model::{ScriptedModel, answer, calls, turn_of};
use crate::server::TestServer;

pub const LOOKUP: &str = r#"
id: lookup-order
description: Look an order up by its id.
input:
  type: object
  required: [orderId]
  properties:
    orderId: {type: string}
steps:
  - id: find
    type: action
    uses: transform
    with: {value: {orderId: "{{ input.orderId }}", status: delivered}}
"#;

const WAITING: &str = r#"
id: refund-order
steps:
  - id: pay
    type: action
    uses: workflow
    with: {definition: confirm-refund}
"#;

const CONFIRM: &str = r#"
id: confirm-refund
steps:
  - id: ok
    type: approval
    message: Refund?
    options: [yes, no]
"#;

const AGENT: &str = r#"
id: support
steps:
  - id: help
    type: agent
    prompt: Help.
    tools: [lookup-order, refund-order]
"#;

/// The diagnostics an applied definition is refused with, as `code: message`.
async fn refused(env: &Env, yaml: &str) -> Vec<String> {
    match env
        .engine
        .apply_definition(DEFAULT_WORKSPACE, "support.yaml", yaml)
        .await
        .unwrap()
    {
        Ok((rec, _)) => panic!("{} was applied", rec.slug),
        Err(r) => r
            .diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.code.as_str(), d.message))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn applying_an_agent_checks_its_tools_against_the_workspace() {
    let env = Env::new().await;
    assert_eq!(
        refused(&env, AGENT).await,
        [
            "stepwise::agent::unknown_tool: no workflow `lookup-order` in this workspace to use as a tool",
            "stepwise::agent::unknown_tool: no workflow `refund-order` in this workspace to use as a tool",
        ]
    );
    env.apply(LOOKUP).await;
    env.apply(CONFIRM).await;
    env.apply(WAITING).await;
    assert_eq!(
        refused(&env, AGENT).await,
        [
            "stepwise::agent::tool_can_suspend: `refund-order` cannot be a tool: its step `pay` starts `confirm-refund`, and its step `ok` is an approval, which suspends the run"
        ]
    );
    let pinned = AGENT.replace(
        "lookup-order, refund-order",
        "{workflow: lookup-order, version: 2}",
    );
    assert_eq!(
        refused(&env, &pinned).await,
        ["stepwise::agent::unknown_tool: workflow `lookup-order` has no version 2"]
    );
    let typo = AGENT.replace("lookup-order, refund-order", "lookup-ordr");
    let d = match env
        .engine
        .apply_definition(DEFAULT_WORKSPACE, "support.yaml", &typo)
        .await
        .unwrap()
    {
        Err(r) => r.diagnostics,
        Ok(_) => panic!("applied"),
    };
    assert_eq!(d[0].help.as_deref(), Some("did you mean `lookup-order`?"));
    env.apply(&AGENT.replace("lookup-order, refund-order", "lookup-order"))
        .await;
}

const REFUND: &str = r#"
id: refund-order
description: Refund an order.
input:
  type: object
  required: [orderId, amount]
  additionalProperties: false
  properties:
    orderId: {type: string}
    amount: {type: number, exclusiveMinimum: 0}
steps:
  - id: pay
    type: action
    uses: transform
    with: {value: {refunded: "{{ input.amount }}", orderId: "{{ input.orderId }}"}}
"#;

const SUPPORT: &str = r#"
id: support
input:
  type: object
  properties:
    message: {type: string}
steps:
  - id: help
    type: agent
    system: You help customers with their orders.
    prompt: "{{ input.message }}"
    tools:
      - lookup-order
      - workflow: refund-order
        description: Refund (part of) an order; the amount is in USD.
    output:
      type: object
      required: [refunded, reply]
      properties:
        refunded: {type: boolean}
        reply: {type: string}
"#;

async fn env_with(model: &ScriptedModel, tweak: impl FnOnce(&mut EngineConfig)) -> Env {
    let server = TestServer::start().await;
    let mut cfg = crate::engine::config(&server);
    cfg.llm.base_url = Some(model.base_url());
    tweak(&mut cfg);
    let env = Env::with(server, cfg).await;
    env.apply(LOOKUP).await;
    env.apply(REFUND).await;
    env.apply(SUPPORT).await;
    env
}

fn tool_messages(request: &Value) -> Vec<Value> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .cloned()
        .collect()
}

fn transcript(step: &StepRecord) -> Value {
    step.meta.as_ref().unwrap()["agent"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_run_as_child_runs_and_their_results_reach_the_model() {
    let model = ScriptedModel::start(vec![
        calls(&[("lookup-order", json!({"orderId": "A1"}))]),
        calls(&[("refund-order", json!({"orderId": "A1", "amount": 20}))]),
        answer(r#"{"refunded": true, "reply": "Refunded $20."}"#),
    ])
    .await;
    let env = env_with(&model, |_| {}).await;
    let run = env.start("support", json!({"message": "Refund A1"})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(
        run.output,
        Some(json!({"refunded": true, "reply": "Refunded $20."}))
    );

    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    let tools = requests[0]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["function"]["name"], "lookup-order");
    assert_eq!(
        tools[0]["function"]["description"],
        "Look an order up by its id."
    );
    assert_eq!(
        tools[0]["function"]["parameters"]["required"],
        json!(["orderId"])
    );
    assert_eq!(
        tools[1]["function"]["description"],
        "Refund (part of) an order; the amount is in USD."
    );
    assert_eq!(
        tool_messages(&requests[1]),
        [
            json!({"role": "tool", "tool_call_id": "call_lookup-order_0", "content": "{\"orderId\":\"A1\",\"status\":\"delivered\"}"})
        ]
    );
    assert_eq!(tool_messages(&requests[2]).len(), 2);

    let store = env.engine.store();
    let mut children = store.child_runs(&run.id).unwrap();
    children.sort_by_key(|c| c.created_at);
    let summary: Vec<(&str, RunStatus, &Value)> = children
        .iter()
        .map(|c| (c.definition_slug.as_str(), c.status, &c.trigger["label"]))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "lookup-order",
                RunStatus::Completed,
                &json!("Workflow tool")
            ),
            (
                "refund-order",
                RunStatus::Completed,
                &json!("Workflow tool")
            )
        ]
    );
    assert_eq!(children[1].trigger["parentStepId"], "help");
    assert_eq!(children[1].parent_run_id.as_deref(), Some(run.id.as_str()));
    assert_eq!(children[1].input, json!({"orderId": "A1", "amount": 20}));

    let steps = env.steps(&run.id);
    assert_eq!(steps.len(), 1);
    let usage = steps[0].usage.clone().unwrap();
    assert_eq!(usage["calls"], 3);
    assert_eq!(usage["promptTokens"], 300);
    let t = transcript(&steps[0]);
    assert_eq!(t["turns"].as_array().unwrap().len(), 3);
    assert_eq!(
        t["turns"][1]["calls"][0]["childRunId"],
        json!(children[1].id)
    );
    assert_eq!(t["turns"][1]["calls"][0]["result"]["status"], "completed");
    let kinds: Vec<String> = store
        .events(&run.id)
        .unwrap()
        .iter()
        .map(|e| e.kind.as_str().to_string())
        .filter(|k| k.starts_with("agent.") || k == "child.started")
        .collect();
    assert_eq!(
        kinds,
        [
            "agent.turn",
            "child.started",
            "agent.tool",
            "agent.turn",
            "child.started",
            "agent.tool",
            "agent.turn"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_tools_answer_the_model_with_their_error() {
    let model = ScriptedModel::start(vec![
        // Arguments that do not satisfy the input schema, a tool that does not exist, and
        // arguments that are not JSON: each is an error result at once, no run starts.
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "refund-order", "arguments": "{\"orderId\": \"A1\", \"amount\": -5}"}},
            {"id": "b", "type": "function", "function": {"name": "cancel-order", "arguments": "{}"}},
            {"id": "c", "type": "function", "function": {"name": "lookup-order", "arguments": "{\"orderId\": "}}
        ]}),
        answer(r#"{"refunded": false, "reply": "I could not refund that."}"#),
    ])
    .await;
    let env = env_with(&model, |_| {}).await;
    let run = env.start("support", json!({"message": "Refund -5"})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let results = tool_messages(&model.requests()[1]);
    let text: Vec<String> = results
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    assert!(
        text[0].contains("does not match the input schema of `refund-order`"),
        "{text:?}"
    );
    assert!(
        text[1]
            .contains("there is no tool `cancel-order`; the tools are: lookup-order, refund-order"),
        "{text:?}"
    );
    assert!(text[2].contains("the arguments are not JSON"), "{text:?}");
    assert!(env.engine.store().child_runs(&run.id).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_that_suspends_fails_and_the_model_hears_it() {
    let model = ScriptedModel::start(vec![
        calls(&[("refund-order", json!({"orderId": "A1", "amount": 5}))]),
        answer(r#"{"refunded": false, "reply": "A person must approve this."}"#),
    ])
    .await;
    let env = env_with(&model, |_| {}).await;
    // A new version of the tool asks a person: lint checked the agent against the old one.
    env.apply(&format!(
        "{REFUND}  - id: confirm\n    type: approval\n    message: ok?\n    options: [yes]\n"
    ))
    .await;
    let run = env.start("support", json!({"message": "Refund"})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let child = &env.engine.store().child_runs(&run.id).unwrap()[0];
    assert_eq!(child.status, RunStatus::Failed);
    assert_eq!(child.error.as_ref().unwrap()["kind"], "inline_suspend");
    let result = &tool_messages(&model.requests()[1])[0]["content"];
    assert!(
        result.as_str().unwrap().contains(
            "a workflow run as an agent's tool cannot suspend (step `confirm` is approval)"
        ),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_fail_the_attempt_with_a_clear_error() {
    let looping = calls(&[("lookup-order", json!({"orderId": "A1"}))]);
    let model = ScriptedModel::start(vec![looping.clone(), looping.clone(), looping]).await;
    let env = env_with(&model, |c| {
        c.prices = Prices::parse(r#"{"test-model": {"input": 100, "output": 100}}"#).unwrap();
    })
    .await;
    env.apply(&SUPPORT.replace("id: support", "id: short").replace(
        "    tools:\n",
        "    max_turns: 2\n    retry: 3\n    tools:\n",
    ))
    .await;
    let run = env.start("short", json!({"message": "hi"})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap();
    assert_eq!(error["kind"], "agent_limit");
    assert_eq!(
        error["message"],
        "the agent made 2 model calls without a final answer, its limit (`max_turns: 2`)"
    );
    assert_eq!(env.steps(&run.id).len(), 1, "a limit is not retried");
    assert_eq!(model.requests().len(), 2);

    // 110 tokens at $100 per million: $0.011 a call.
    env.apply(
        &SUPPORT
            .replace("id: support", "id: cheap")
            .replace("    tools:\n", "    budget: 0.015\n    tools:\n"),
    )
    .await;
    let run = env.start("cheap", json!({"message": "hi"})).await;
    let run = env.finish(&run.id).await;
    let error = run.error.unwrap();
    assert_eq!(
        error["message"],
        "the agent's model calls cost $0.022000, over its limit (`budget: 0.015`)",
    );
    assert_eq!(model.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_attempt_resumes_the_loop_without_repeating_calls_or_tools() {
    let model = ScriptedModel::start(vec![
        calls(&[("lookup-order", json!({"orderId": "A1"}))]),
        answer(r#"{"refunded": false, "reply": "It was delivered."}"#),
    ])
    .await;
    model.fail_once_at(1);
    let env = env_with(&model, |_| {}).await;
    env.apply(&SUPPORT.replace(
        "    tools:\n",
        "    retry: {max_attempts: 2, initial_delay: 10ms}\n    tools:\n",
    ))
    .await;
    let run = env
        .start("support", json!({"message": "Where is A1?"}))
        .await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let turns: Vec<usize> = model.requests().iter().map(turn_of).collect();
    assert_eq!(turns, [0, 1, 1], "the first call is not sent again");
    assert_eq!(env.engine.store().child_runs(&run.id).unwrap().len(), 1);
    let steps = env.steps(&run.id);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].status, StepStatus::Failed);
    assert_eq!(steps[0].usage.as_ref().unwrap()["calls"], 1);
    assert_eq!(steps[1].usage.as_ref().unwrap()["calls"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_commits_neither_resend_model_calls_nor_rerun_tools() {
    use std::sync::Arc;

    use stepwise::clock::SystemClock;
    use stepwise::engine::{CreateRun, Engine, EngineError};
    use stepwise::store::{SqliteStore, Synchronous};

    use crate::faults::store::FaultStore;

    let model = ScriptedModel::start(vec![
        calls(&[("lookup-order", json!({"orderId": "A1"}))]),
        answer(r#"{"refunded": false, "reply": "Delivered."}"#),
    ])
    .await;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("s.db"), Synchronous::Normal).unwrap();
    let fault = Arc::new(FaultStore::new(Arc::new(inner)));
    let mut cfg = crate::engine::config(&server);
    cfg.llm.base_url = Some(model.base_url());
    cfg.commit_retry_first = std::time::Duration::from_millis(10);
    cfg.commit_retry_max = std::time::Duration::from_millis(50);
    let engine = Engine::start(fault.clone(), Arc::new(SystemClock), cfg).unwrap();
    for yaml in [LOOKUP, REFUND, SUPPORT] {
        engine
            .apply_definition(DEFAULT_WORKSPACE, "wf.yaml", yaml)
            .await
            .unwrap()
            .unwrap();
    }
    let mut runs = Vec::new();
    for seed in 0..6u64 {
        fault.fail_randomly(0.4, 30, seed);
        let message = format!("case {seed}");
        let run = loop {
            let req = CreateRun {
                workspace_id: DEFAULT_WORKSPACE.into(),
                definition: "support".into(),
                input: json!({"message": message}),
                idempotency_key: Some(format!("case-{seed}")),
                trigger: json!({"kind": "api"}),
            };
            match engine.create_run(req).await {
                Ok((run, _)) => break run,
                Err(EngineError::Unavailable(_)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        let done = engine
            .wait_for(
                DEFAULT_WORKSPACE,
                &run.id,
                std::time::Duration::from_secs(20),
                RunStatus::is_terminal,
            )
            .await
            .unwrap();
        assert_eq!(done.status, RunStatus::Completed, "{done:?}");
        runs.push((message, run.id));
    }
    assert!(fault.failed_commits() > 0, "no commit failed");
    let requests = model.requests();
    for (message, id) in runs {
        let turns: Vec<usize> = requests
            .iter()
            .filter(|r| r["messages"].to_string().contains(&message))
            .map(turn_of)
            .collect();
        assert_eq!(turns, [0, 1], "{message}: each call is sent once");
        assert_eq!(engine.store().child_runs(&id).unwrap().len(), 1);
    }
}
