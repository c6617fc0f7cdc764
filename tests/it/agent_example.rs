//! The support agent example (examples/support-agent.yaml) end to end: a scripted model
//! calls both tools, then answers; both calls are child runs in history and in the UI's
//! trace, and the refund reached the shop once.

use serde_json::{Value, json};
use stepwise::api::{AppState, router};
use stepwise::model::RunStatus;
use stepwise::store::DEFAULT_WORKSPACE;

use crate::engine::Env;
use crate::scripted_model::{ScriptedModel, answer, calls};
use crate::server::TestServer;
use crate::util::{json_of, repo};

#[tokio::test(flavor = "multi_thread")]
async fn the_support_agent_calls_both_tools_as_child_runs() {
    let model = ScriptedModel::start(vec![
        calls(&[("lookup-order", json!({"orderId": "A1001"}))]),
        calls(&[(
            "refund-order",
            json!({"orderId": "A1001", "amount": 40, "reason": "arrived broken"}),
        )]),
        answer(r#"{"reply": "I refunded the 40 USD of order A1001.", "refunded": true}"#),
    ])
    .await;
    let server = TestServer::start().await;
    let mut cfg = crate::engine::config(&server);
    cfg.llm.base_url = Some(model.base_url());
    cfg.secrets
        .insert("SHOP_API_TOKEN".into(), "shop-token-123".into());
    let env = Env::with(server, cfg).await;
    let shop = format!("http://{}", model.addr);
    let files: Vec<std::path::PathBuf> = ["support-agent", "lookup-order", "refund-order"]
        .iter()
        .map(|n| repo().join(format!("examples/{n}.yaml")))
        .collect();
    // Applied as `stepwise definitions apply` would: the tools first.
    for f in stepwise::cli::lint::tools_first(files) {
        let source = std::fs::read_to_string(&f)
            .unwrap()
            .replace("https://shop.example.com", &shop);
        env.engine
            .apply_definition(DEFAULT_WORKSPACE, &f.display().to_string(), &source)
            .await
            .unwrap()
            .unwrap_or_else(|r| panic!("{}: {:#?}", f.display(), r.diagnostics));
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(AppState::new(env.engine.clone(), true, None));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let http = stepwise::http_client::build(&Default::default()).unwrap();
    let created = json_of(http.post(format!("{base}/v1/workflow-runs")).json(
        &json!({"definitionId": "support-agent", "input": {
            "customerEmail": "ada@example.com",
            "message": "Order A1001 arrived broken, please refund it."
        }}),
    ))
    .await;
    let id = created["data"]["id"].as_str().unwrap().to_string();
    let run = env.finish(&id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(
        run.output,
        Some(json!({"reply": "I refunded the 40 USD of order A1001.", "refunded": true}))
    );

    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    let names: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lookup-order", "refund-order"]);
    let last = requests[2]["messages"].as_array().unwrap();
    let results: Vec<&Value> = last
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| &m["content"])
        .collect();
    assert_eq!(
        results,
        [
            &json!("{\"orderId\":\"A1001\",\"status\":\"delivered\",\"total\":40}"),
            &json!("{\"refundId\":\"re_1\",\"amount\":40}")
        ]
    );
    let refunds = model.refunds();
    assert_eq!(refunds.len(), 1, "the shop saw one refund");
    assert!(
        refunds[0].0.is_some(),
        "the refund carries an Idempotency-Key"
    );
    assert_eq!(
        refunds[0].1,
        json!({"order_id": "A1001", "amount": 40, "reason": "arrived broken"})
    );

    // History: the agent's run and both tool runs, each a child of the agent's run.
    let history = json_of(http.get(format!("{base}/v1/history?pageSize=10"))).await;
    let mut tools: Vec<(String, String, String)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"]["kind"] == "tool")
        .map(|r| {
            (
                r["definitionSlug"].as_str().unwrap().to_string(),
                r["trigger"]["label"].as_str().unwrap().to_string(),
                r["trigger"]["parentRunId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    tools.sort();
    assert_eq!(
        tools,
        [
            ("lookup-order".into(), "Workflow tool".into(), id.clone()),
            ("refund-order".into(), "Workflow tool".into(), id.clone())
        ],
        "{history}"
    );
    // The UI's trace lists them as child runs.
    let page = http
        .get(format!("{base}/ui/runs/{id}?tab=trace"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Child runs"), "{page}");
    for child in env.engine.store().child_runs(&id).unwrap() {
        assert!(page.contains(&child.id), "{} is not on the trace", child.id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stepwise_run_stores_the_tools_beside_an_agent_workflow() {
    // The model answers at once: no tool runs (they would call the shop's real address).
    let model = ScriptedModel::start(vec![answer(
        r#"{"reply": "Which order do you mean?", "refunded": false}"#,
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.db");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args(["run", "examples/support-agent.yaml", "--db"])
        .arg(&db)
        .args([
            "--input",
            r#"{"customerEmail": "ada@example.com", "message": "Refund please"}"#,
        ])
        .current_dir(repo())
        .env("STEPWISE_LLM_BASE_URL", model.base_url())
        .env("STEPWISE_LLM_MODEL", "scripted")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("stored examples/lookup-order.yaml"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stored examples/refund-order.yaml"),
        "{stderr}"
    );
    let tools = model.requests()[0]["tools"].as_array().unwrap().len();
    assert_eq!(tools, 2);
}
