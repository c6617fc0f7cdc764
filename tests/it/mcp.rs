//! MCP with a real MCP client (rmcp's own, built independently of our handler) over both
//! transports: Streamable HTTP at `/mcp` of a server on a loopback port, and stdio of the
//! real `stepwise mcp` binary.

use std::collections::HashMap;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ServiceError, ServiceExt};
use serde_json::{Map, Value, json};

use crate::api::{Api, add_key};

type Client = RunningService<RoleClient, ClientConfig>;

const HELLO: &str = r#"
id: hello
description: Greet someone.
input:
  type: object
  required: [name]
  properties:
    name: {type: string}
output:
  type: object
  required: [greeting]
  properties:
    greeting: {type: string}
steps:
  - id: greet
    type: action
    uses: transform
    with: {value: {greeting: "Hello {{ input.name }}"}}
"#;

const REVIEW: &str = r#"
id: review
description: Ask a person before shipping.
input:
  type: object
  properties:
    item: {type: string}
steps:
  - id: approval
    type: approval
    message: "Ship {{ input.item }}?"
    options: [approve, reject]
  - id: done
    type: action
    uses: transform
    with: {value: {decision: "{{ steps.approval.output }}"}}
"#;

const OTHER: &str = r#"
id: other-only
steps:
  - id: a
    type: action
    uses: transform
    with: {value: {ok: true}}
"#;

fn info(name: &str) -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new(name, "1.0"),
    )
}

fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

async fn call(client: &Client, name: &str, a: Value) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(args(a)))
        .await
        .unwrap_or_else(|e| panic!("tools/call {name}: {e}"))
}

fn structured(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "an error result: {r:?}");
    r.structured_content.clone().unwrap_or(Value::Null)
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn http_client(api: &Api, key: &str, name: &str) -> Result<Client, String> {
    let config = StreamableHttpClientTransportConfig::with_uri(api.url("/mcp")).auth_header(key);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    info(name).serve(transport).await.map_err(|e| e.to_string())
}

/// `stepwise mcp` on a database in `dir`, loading the workflows in `defs`.
fn stdio(dir: &std::path::Path, defs: &std::path::Path) -> TokioChildProcess {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_stepwise"));
    cmd.arg("mcp")
        .arg("--db")
        .arg(dir.join("mcp.db"))
        .arg("--definitions")
        .arg(defs)
        .args(["--wait", "10s"])
        .env("NO_COLOR", "1");
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    transport
}

/// Apply a definition in the workspace of `key`.
async fn apply_as(api: &Api, key: &str, yaml: &str) {
    let resp = api
        .http
        .post(api.url("/v1/workflow-definitions"))
        .header("x-api-key", key)
        .header("content-type", "application/yaml")
        .body(yaml.replace("{server}", &format!("http://{}", api.env.server.addr)))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
}

/// The same session checks over either transport: list, call to completion, a call that
/// pauses answered through `runs_approve`, a failure, and the management tools.
async fn exercise(client: &Client) {
    let tools = client.list_all_tools().await.unwrap();
    let by_name: HashMap<&str, _> = tools.iter().map(|t| (t.name.as_ref(), t)).collect();
    for name in [
        "hello",
        "review",
        "runs_list",
        "runs_get",
        "runs_cancel",
        "runs_retry",
        "runs_approve",
        "runs_reject",
        "runs_signal",
    ] {
        assert!(
            by_name.contains_key(name),
            "{name} missing from {:?}",
            by_name.keys()
        );
    }
    let hello = by_name["hello"];
    assert_eq!(hello.description.as_deref(), Some("Greet someone."));
    assert_eq!(hello.input_schema["required"], json!(["name"]));
    let out = hello
        .output_schema
        .as_ref()
        .expect("hello has an output schema");
    assert_eq!(out["properties"]["greeting"], json!({"type": "string"}));
    // A workflow that may pause answers with its pending action, so it promises no schema.
    assert!(by_name["review"].output_schema.is_none());
    let ann = |n: &str| by_name[n].annotations.clone().expect("annotated");
    assert_eq!(ann("runs_list").read_only_hint, Some(true));
    assert_eq!(ann("runs_get").read_only_hint, Some(true));
    assert_eq!(ann("runs_cancel").destructive_hint, Some(true));
    assert_eq!(ann("runs_cancel").read_only_hint, Some(false));
    assert_eq!(ann("runs_approve").destructive_hint, Some(false));

    // A call that completes: the output is the structured content.
    let r = call(client, "hello", json!({"name": "Ann"})).await;
    assert_eq!(structured(&r), json!({"greeting": "Hello Ann"}));
    let meta = r.meta.clone().expect("_meta");
    assert_eq!(meta.0["stepwise/status"], "COMPLETED");
    let hello_run = meta.0["stepwise/runId"].as_str().unwrap().to_string();

    // Input that does not fit the schema: an error result the model can read.
    let r = call(client, "hello", json!({"nom": 1})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("input schema"), "{}", text(&r));

    // A call that pauses: the run id, status and pending action; then approve it.
    let r = call(client, "review", json!({"item": "the order"})).await;
    let paused = structured(&r);
    assert_eq!(paused["status"], "PAUSED", "{paused}");
    assert_eq!(paused["pendingAction"]["type"], "approval");
    assert_eq!(paused["pendingAction"]["message"], "Ship the order?");
    assert_eq!(
        paused["pendingAction"]["options"],
        json!(["approve", "reject"])
    );
    let run_id = paused["runId"].as_str().unwrap().to_string();
    let r = call(client, "runs_approve", json!({"runId": run_id})).await;
    let done = structured(&r);
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["output"], json!({"decision": "approve"}));

    // A management tool's arguments are its own: a stray one is said.
    let r = call(client, "runs_get", json!({"runId": run_id, "option": "x"})).await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(
        text(&r).contains("`option` is not an argument"),
        "{}",
        text(&r)
    );

    // runs_get shows the steps; the decision was made by this client.
    let r = call(client, "runs_get", json!({"runId": run_id})).await;
    let got = structured(&r);
    assert_eq!(got["steps"][0]["name"], "approval");
    assert_eq!(got["steps"][0]["status"], "COMPLETED");
    assert_eq!(got["steps"][0]["output"], "approve");

    // A second paused run: rejecting with an option it does not offer is refused, a
    // cancel ends it, and a second cancel is a readable conflict.
    let r = call(client, "review", json!({"item": "x"})).await;
    let second = structured(&r)["runId"].as_str().unwrap().to_string();
    let r = call(
        client,
        "runs_reject",
        json!({"runId": second, "option": "maybe"}),
    )
    .await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    let r = call(client, "runs_cancel", json!({"runId": second})).await;
    assert_eq!(structured(&r)["status"], "CANCELLED");
    let r = call(client, "runs_cancel", json!({"runId": second})).await;
    assert_eq!(r.is_error, Some(true));

    // A run that fails is an error result naming the run.
    let r = call(client, "failing", json!({})).await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r).contains("FAILED"), "{}", text(&r));

    // runs_list lists them, newest first; by status too.
    let r = call(client, "runs_list", json!({"definitionId": "hello"})).await;
    let list = structured(&r);
    assert!(
        list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["runId"] == hello_run.as_str()),
        "{list}"
    );
    let r = call(client, "runs_list", json!({"status": "CANCELLED"})).await;
    assert_eq!(structured(&r)["runs"][0]["runId"], second.as_str());
    let r = call(client, "runs_list", json!({"status": "SOMETIMES"})).await;
    assert_eq!(r.is_error, Some(true));

    // An unknown tool is a protocol error.
    let e = client
        .call_tool(CallToolRequestParams::new("no-such-workflow"))
        .await
        .expect_err("unknown tool");
    assert!(matches!(e, ServiceError::McpError(_)), "{e:?}");
}

const SIGNAL: &str = r#"
id: paid
steps:
  - id: payment
    type: external_event
    signal: payment.confirmed
    schema:
      type: object
      required: [amount]
      properties:
        amount: {type: number}
  - id: receipt
    type: action
    uses: transform
    with: {value: {paid: "{{ steps.payment.output.amount }}"}}
"#;

const FAILING: &str = "id: failing\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/status/500\"}\n";

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_client_over_http_lists_calls_and_approves_in_its_workspace_only() {
    let api = Api::start().await;
    for yaml in [HELLO, REVIEW, FAILING, SIGNAL] {
        api.apply(yaml).await;
    }
    let other_key = add_key(api.env.engine.store().as_ref(), "ws_other");
    apply_as(&api, &other_key, OTHER).await;

    let client = http_client(&api, &api.key, "test-agent").await.unwrap();
    exercise(&client).await;
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(!names.contains(&"other-only".to_string()), "{names:?}");

    // The run is labelled MCP, with the client's name as actor.
    let r = call(&client, "hello", json!({"name": "Bo"})).await;
    let id = r.meta.unwrap().0["stepwise/runId"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, run) = api
        .call("GET", &format!("/v1/workflow-runs/{id}"), None)
        .await;
    assert_eq!(run["data"]["trigger"]["label"], "MCP");
    assert_eq!(run["data"]["trigger"]["kind"], "mcp");
    assert_eq!(run["data"]["actor"], "test-agent");
    // A run waiting for a signal: its pending action names the signal; runs_signal
    // delivers it (a payload that does not fit the step's schema is refused first).
    let r = call(&client, "paid", json!({})).await;
    let waiting = structured(&r);
    assert_eq!(waiting["status"], "WAITING", "{waiting}");
    assert_eq!(waiting["pendingAction"]["signalType"], "payment.confirmed");
    let id = waiting["runId"].as_str().unwrap().to_string();
    let r = call(
        &client,
        "runs_signal",
        json!({"runId": id, "signalType": "payment.confirmed", "payload": {"amount": "lots"}}),
    )
    .await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    let r = call(
        &client,
        "runs_signal",
        json!({"runId": id, "signalType": "payment.confirmed", "payload": {"amount": 5}}),
    )
    .await;
    assert_eq!(structured(&r)["status"], "COMPLETED", "{r:?}");

    // A revoked key fails on its next request, inside its session too.
    let store = api.env.engine.store().clone();
    assert!(
        store
            .revoke_api_key(&stepwise::api::hash_key(&api.key), jiff::Timestamp::now())
            .unwrap()
    );
    let e = client
        .call_tool(CallToolRequestParams::new("runs_list"))
        .await;
    assert!(e.is_err(), "{e:?}");
    client.cancel().await.ok();

    // Another workspace's key sees only its own workflows, and cannot call ours.
    let other = http_client(&api, &other_key, "other-agent").await.unwrap();
    let names: Vec<String> = other
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(names.contains(&"other-only".to_string()), "{names:?}");
    assert!(!names.contains(&"hello".to_string()), "{names:?}");
    let e = other
        .call_tool(CallToolRequestParams::new("hello").with_arguments(args(json!({"name": "x"}))))
        .await;
    assert!(e.is_err(), "{e:?}");
    let r = call(&other, "runs_get", json!({"runId": id})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("not found"), "{}", text(&r));
    other.cancel().await.unwrap();

    // Without a key, or with a wrong one, there is no session.
    assert!(http_client(&api, "stw_wrong", "x").await.is_err());
    let resp = api
        .http
        .post(api.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // A browser page from another origin is refused, even with a key, and even for GET.
    for method in [reqwest::Method::POST, reqwest::Method::GET] {
        let resp = api
            .http
            .request(method, api.url("/mcp"))
            .header("x-api-key", &api.key)
            .header("origin", "http://evil.example")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_client_over_stdio_lists_calls_and_approves() {
    let env = crate::engine::Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    let server = format!("http://{}", env.server.addr);
    for (name, yaml) in [("hello", HELLO), ("review", REVIEW), ("failing", FAILING)] {
        std::fs::write(
            defs.join(format!("{name}.yaml")),
            yaml.replace("{server}", &server),
        )
        .unwrap();
    }
    let client = tokio::time::timeout(
        Duration::from_secs(20),
        info("stdio-agent").serve(stdio(dir.path(), &defs)),
    )
    .await
    .expect("handshake in time")
    .unwrap();
    exercise(&client).await;
    client.cancel().await.unwrap();

    // A run still going when the wait ends: a tool with an output schema cannot answer
    // with anything else, so it is an error result naming the run, which goes on.
    std::fs::write(
        defs.join("slow.yaml"),
        format!(
            "id: slow\noutput: {{type: object}}\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {{url: \"{server}/slow/2000\"}}\n"
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_stepwise"));
    cmd.arg("mcp")
        .arg("--db")
        .arg(dir.path().join("short.db"))
        .arg("--definitions")
        .arg(&defs)
        .args(["--wait", "200ms"]);
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = info("stdio-agent").serve(transport).await.unwrap();
    let r = call(&client, "slow", json!({})).await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r).contains("still RUNNING"), "{}", text(&r));
    let id = r.meta.unwrap().0["stepwise/runId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = call(&client, "runs_get", json!({"runId": id})).await;
    assert_eq!(structured(&r)["steps"][0]["status"], "RUNNING");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_session_belongs_to_the_workspace_that_opened_it() {
    let api = Api::start().await;
    api.apply(HELLO).await;
    let other_key = add_key(api.env.engine.store().as_ref(), "ws_other");
    let post = |key: &str, session: Option<&str>, body: &str| {
        let mut req = api
            .http
            .post(api.url("/mcp"))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .body(body.to_string());
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req.send()
    };
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let resp = post(&api.key, None, init).await.unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let resp = post(&other_key, Some(&session), list).await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = post(&api.key, Some(&session), list).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Another workspace cannot end it; its owner can (204, as clients expect), once.
    let delete = |key: &str| {
        api.http
            .delete(api.url("/mcp"))
            .header("x-api-key", key)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .send()
    };
    assert_eq!(delete(&other_key).await.unwrap().status(), 404);
    assert_eq!(delete(&api.key).await.unwrap().status(), 204);
    let resp = post(&api.key, Some(&session), list).await.unwrap();
    assert_eq!(resp.status(), 404);
}

/// A client that counts `notifications/tools/list_changed` on its session.
#[derive(Clone)]
struct Watcher(tokio::sync::mpsc::UnboundedSender<()>);

impl rmcp::ClientHandler for Watcher {
    async fn on_tool_list_changed(&self, _: rmcp::service::NotificationContext<RoleClient>) {
        let _ = self.0.send(());
    }

    fn get_info(&self) -> ClientConfig {
        info("watcher")
    }
}

/// Whether a notification arrives within `wait`.
async fn heard(rx: &mut tokio::sync::mpsc::UnboundedReceiver<()>, wait: Duration) -> bool {
    tokio::time::timeout(wait, rx.recv()).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_hear_when_their_workspaces_tools_change() {
    let api = Api::start().await;
    let other = add_key(api.env.engine.store().as_ref(), "ws_other");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config =
        StreamableHttpClientTransportConfig::with_uri(api.url("/mcp")).auth_header(&api.key);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let client = Watcher(tx).serve(transport).await.unwrap();
    apply_as(&api, &other, OTHER).await;
    assert!(
        !heard(&mut rx, Duration::from_millis(500)).await,
        "another workspace's definitions are not this session's tools"
    );
    apply_as(&api, &api.key, HELLO).await;
    assert!(
        heard(&mut rx, Duration::from_secs(10)).await,
        "no list_changed"
    );
    // The same source again stores nothing: no news.
    apply_as(&api, &api.key, HELLO).await;
    assert!(!heard(&mut rx, Duration::from_millis(500)).await);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_hear_when_the_tools_change() {
    use rmcp::model::{ProtocolVersion, ServerNotification, SubscriptionFilter};
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
    let api = Api::start().await;
    let config =
        StreamableHttpClientTransportConfig::with_uri(api.url("/mcp")).auth_header(&api.key);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let client = info("listener")
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .unwrap();
    let mut sub = client
        .peer()
        .listen(SubscriptionFilter::builder().tools_list_changed().build())
        .await
        .unwrap();
    assert_eq!(sub.acknowledged().tools_list_changed, Some(true));
    apply_as(&api, &api.key, REVIEW).await;
    let n = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a notification in time")
        .unwrap();
    assert!(
        matches!(n, Some(ServerNotification::ToolListChangedNotification(_))),
        "{n:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stdio_client_hears_when_a_watched_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(defs.join("hello.yaml"), HELLO).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = tokio::time::timeout(
        Duration::from_secs(20),
        Watcher(tx).serve(stdio(dir.path(), &defs)),
    )
    .await
    .expect("handshake in time")
    .unwrap();
    std::fs::write(defs.join("other.yaml"), OTHER).unwrap();
    assert!(
        heard(&mut rx, Duration::from_secs(10)).await,
        "no list_changed"
    );
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "other-only"));
    client.cancel().await.unwrap();
}
