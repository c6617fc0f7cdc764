//! The HTTP API over real HTTP on a free loopback port: every route and error code.

use std::time::Duration;

use serde_json::{Value, json};
use stepwise::api::{AppState, hash_key, new_key, router};
use stepwise::store::{ApiKeyRecord, Store};

use crate::engine::Env;

pub struct Api {
    pub env: Env,
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn start() -> Api {
        Api::serve(Env::new().await, |s| s).await
    }

    /// The router over `env`'s engine, API keys on (one key of the default workspace), on
    /// a free loopback port; `state` adds to its state (triggers, …).
    pub async fn serve(env: Env, state: impl FnOnce(AppState) -> AppState) -> Api {
        let key = add_key(env.engine.store().as_ref(), "ws_default");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(state(AppState::new(env.engine.clone(), false, None)));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Api {
            env,
            base,
            key,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.key, method, path, body).await
    }

    pub async fn call_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .header("x-api-key", key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn apply(&self, yaml: &str) -> (u16, Value) {
        let yaml = yaml.replace("{server}", &format!("http://{}", self.env.server.addr));
        let resp = self
            .http
            .post(self.url("/v1/workflow-definitions"))
            .header("x-api-key", &self.key)
            .header("content-type", "application/yaml")
            .body(yaml)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

pub fn add_key(store: &dyn Store, workspace: &str) -> String {
    let key = new_key();
    store
        .put_api_key(&ApiKeyRecord {
            hash: hash_key(&key),
            workspace_id: workspace.into(),
            prefix: key[..10].into(),
            created_at: jiff::Timestamp::now(),
        })
        .unwrap();
    key
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

const LEAD_ROUTER: &str = include_str!("../../examples/lead-router.yaml");
const PAYMENT: &str = include_str!("../../examples/payment-onboarding.yaml");

pub const SIMPLE: &str = r#"
id: simple
input:
  type: object
  required: [name]
  properties:
    name: {type: string}
steps:
  - id: hello
    type: action
    uses: transform
    with: {value: {greeting: "Hello {{ input.name }}"}}
"#;

const SIGNAL: &str = r#"
id: approve-link
steps:
  - id: answer
    type: external_event
    signal: answer.given
    schema:
      type: object
      required: [approved]
      properties:
        approved: {type: boolean}
        count: {type: integer}
  - id: after
    type: action
    uses: transform
    with: {value: "{{ steps.answer.output.approved }}"}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn auth_is_required_and_workspaces_are_isolated() {
    let api = Api::start().await;
    api.apply(SIMPLE).await;
    let resp = api
        .http
        .get(api.url("/v1/workflow-runs"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "AUTH_ERROR");
    assert_eq!(body["success"], false);
    let (s, b) = api
        .call_as("stw_wrong", "GET", "/v1/workflow-runs", None)
        .await;
    assert_eq!((s, code(&b)), (401, "AUTH_ERROR"));
    // Bearer works like x-api-key.
    let resp = api
        .http
        .get(api.url("/v1/workflow-runs"))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    let (s, run) = api
        .call(
            "POST",
            "/v1/workflow-runs",
            Some(json!({"definitionId": "simple", "input": {"name": "Ada"}})),
        )
        .await;
    assert_eq!(s, 201, "{run}");
    let id = run["data"]["id"].as_str().unwrap().to_string();
    let other = add_key(api.env.engine.store().as_ref(), "ws_other");
    for (method, path) in [
        ("GET", format!("/v1/workflow-runs/{id}")),
        ("POST", format!("/v1/workflow-runs/{id}/cancel")),
        ("POST", format!("/v1/workflow-runs/{id}/retry")),
        ("GET", format!("/v1/workflow-runs/{id}/hooks")),
        ("DELETE", format!("/v1/workflow-runs/{id}")),
        ("GET", "/v1/workflow-definitions/simple".to_string()),
    ] {
        let (s, b) = api.call_as(&other, method, &path, None).await;
        assert_eq!((s, code(&b)), (404, "NOT_FOUND"), "{method} {path}: {b}");
    }
    let (s, b) = api
        .call_as(
            &other,
            "POST",
            "/v1/workflow-runs",
            Some(json!({"definitionId": "simple", "input": {"name": "x"}})),
        )
        .await;
    assert_eq!((s, code(&b)), (404, "NOT_FOUND"));
    let (s, b) = api.call_as(&other, "GET", "/v1/workflow-runs", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["meta"]["total"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_validates_and_is_idempotent() {
    let api = Api::start().await;
    let (s, d) = api.apply(SIMPLE).await;
    assert_eq!(s, 201, "{d}");
    assert!(d["data"]["id"].as_str().unwrap().starts_with("wfdef_"));
    let body = json!({"definitionId": "simple", "input": {"name": "Ada"}, "idempotencyKey": "k-1"});
    let (s, first) = api
        .call("POST", "/v1/workflow-runs", Some(body.clone()))
        .await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["success"], true);
    assert_eq!(first["data"]["status"], "PENDING");
    assert_eq!(first["data"]["idempotencyKey"], "k-1");
    assert!(first["data"]["createdAt"].as_str().unwrap().ends_with('Z'));
    let (s, second) = api.call("POST", "/v1/workflow-runs", Some(body)).await;
    assert_eq!(s, 200);
    assert_eq!(second["data"]["id"], first["data"]["id"]);

    for (body, field) in [
        (json!({"input": {}}), "definitionId"),
        (json!({"definitionId": 5}), "definitionId"),
        (
            json!({"definitionId": "simple", "input": {"name": 5}}),
            "input",
        ),
        (json!({"definitionId": "simple", "input": []}), "input"),
        (
            json!({"definitionId": "simple", "input": {"name": "x"}, "idempotencyKey": "k".repeat(256)}),
            "idempotencyKey",
        ),
        (
            json!({"definitionId": "simple", "input": {"name": "x"}, "extra": true}),
            "extra",
        ),
    ] {
        let (s, b) = api
            .call("POST", "/v1/workflow-runs", Some(body.clone()))
            .await;
        assert_eq!((s, code(&b)), (400, "VALIDATION_ERROR"), "{body}: {b}");
        assert_eq!(b["error"]["details"]["field"], field, "{b}");
    }
    let (s, b) = api
        .call(
            "POST",
            "/v1/workflow-runs",
            Some(json!({"definitionId": "nope"})),
        )
        .await;
    assert_eq!((s, code(&b)), (404, "NOT_FOUND"));

    let bad = api
        .http
        .post(api.url("/v1/workflow-runs"))
        .header("x-api-key", &api.key)
        .header("content-type", "application/json")
        .body("{\"definitionId\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let b: Value = bad.json().await.unwrap();
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{b}"
    );

    let huge = json!({"definitionId": "simple", "input": {"name": "x".repeat(stepwise::api::MAX_BODY + 1000)}});
    let (s, b) = api.call("POST", "/v1/workflow-runs", Some(huge)).await;
    assert_eq!((s, code(&b)), (413, "PAYLOAD_TOO_LARGE"));
    let text = api
        .http
        .post(api.url("/v1/workflow-runs"))
        .header("x-api-key", &api.key)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status().as_u16(), 415);

    let (_, list) = api.call("GET", "/v1/workflow-runs", None).await;
    assert_eq!(
        list["meta"]["total"], 1,
        "nothing is created by refused requests"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_paginates_and_filters() {
    let api = Api::start().await;
    api.apply(SIMPLE).await;
    api.apply(SIGNAL).await;
    for i in 0..5 {
        api.call(
            "POST",
            "/v1/workflow-runs",
            Some(json!({"definitionId": "simple", "input": {"name": format!("n{i}")}})),
        )
        .await;
    }
    let (_, w) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "approve-link"})),
        )
        .await;
    assert_eq!(w["data"]["status"], "WAITING", "{w}");
    let (s, page) = api
        .call("GET", "/v1/workflow-runs?page=2&pageSize=2", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["meta"],
        json!({"page": 2, "pageSize": 2, "total": 6, "totalPages": 3})
    );
    let (_, waiting) = api
        .call("GET", "/v1/workflow-runs?status=WAITING", None)
        .await;
    assert_eq!(waiting["meta"]["total"], 1);
    let (_, by_def) = api
        .call("GET", "/v1/workflow-runs?definitionId=simple", None)
        .await;
    assert_eq!(by_def["meta"]["total"], 5);
    assert_eq!(by_def["meta"]["pageSize"], 20);
    for q in [
        "page=0",
        "pageSize=101",
        "pageSize=abc",
        "status=DONE",
        "page=-1",
        "from=yesterday",
    ] {
        let (s, b) = api
            .call("GET", &format!("/v1/workflow-runs?{q}"), None)
            .await;
        assert_eq!((s, code(&b)), (400, "VALIDATION_ERROR"), "{q}: {b}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_cancel_retry_and_their_refusals() {
    let api = Api::start().await;
    api.apply(SIMPLE).await;
    api.apply(SIGNAL).await;
    api.apply("id: failing\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/status/500\"}\n").await;
    let (_, run) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "simple", "input": {"name": "Ada"}})),
        )
        .await;
    let id = run["data"]["id"].as_str().unwrap();
    assert_eq!(run["data"]["status"], "COMPLETED");
    let (s, got) = api
        .call("GET", &format!("/v1/workflow-runs/{id}"), None)
        .await;
    assert_eq!(s, 200);
    let d = &got["data"];
    assert_eq!(d["output"], json!({"greeting": "Hello Ada"}));
    assert_eq!(d["currentStepIndex"], 1);
    assert_eq!(d["steps"][0]["name"], "hello");
    assert_eq!(d["steps"][0]["status"], "COMPLETED");
    assert!(d["steps"][0]["durationMs"].is_number());
    assert_eq!(d["trigger"]["kind"], "api");
    assert!(d.get("trace").is_none());
    let (_, traced) = api
        .call(
            "GET",
            &format!("/v1/workflow-runs/{id}?include=trace"),
            None,
        )
        .await;
    assert!(!traced["data"]["trace"].as_array().unwrap().is_empty());
    let (s, b) = api
        .call(
            "GET",
            &format!("/v1/workflow-runs/{id}?include=bogus"),
            None,
        )
        .await;
    assert_eq!((s, code(&b)), (400, "VALIDATION_ERROR"));
    let (s, b) = api
        .call("POST", &format!("/v1/workflow-runs/{id}/cancel"), None)
        .await;
    assert_eq!((s, code(&b)), (409, "CONFLICT"));
    let (s, b) = api
        .call("POST", &format!("/v1/workflow-runs/{id}/retry"), None)
        .await;
    assert_eq!((s, code(&b)), (409, "CONFLICT"));
    for path in [
        "/v1/workflow-runs/wfrun_nothing",
        "/v1/workflow-runs/wfrun_00000000000000000000000000000000",
        "/v1/workflow-runs/%20",
    ] {
        let (s, b) = api.call("GET", path, None).await;
        assert_eq!((s, code(&b)), (404, "NOT_FOUND"), "{path}");
    }

    let (_, w) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "approve-link"})),
        )
        .await;
    let wid = w["data"]["id"].as_str().unwrap();
    let (s, c) = api
        .call("DELETE", &format!("/v1/workflow-runs/{wid}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(c["data"]["status"], "CANCELLED");
    let (s, b) = api
        .call("POST", &format!("/v1/workflow-runs/{wid}/cancel"), None)
        .await;
    assert_eq!((s, code(&b)), (409, "CONFLICT"));

    let (_, f) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "failing"})),
        )
        .await;
    assert_eq!(f["data"]["status"], "FAILED", "{f}");
    let fid = f["data"]["id"].as_str().unwrap();
    let (s, r) = api
        .call("POST", &format!("/v1/workflow-runs/{fid}/retry"), None)
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["status"], "RUNNING");
    let (_, again) = api
        .call("GET", &format!("/v1/workflow-runs/{fid}?wait=5s"), None)
        .await;
    assert_eq!(again["data"]["status"], "FAILED");
    assert_eq!(again["data"]["attempt"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_003_lead_router_over_http() {
    let api = Api::start().await;
    api.env.server.answer_llm(&[
        "{\"category\": \"enterprise\", \"confidence\": 0.9, \"rationale\": \"500 seats\"}",
    ]);
    let yaml = LEAD_ROUTER.replace("https://", "{server}/echo?u=");
    let (s, d) = api.apply(&yaml).await;
    assert_eq!(s, 201, "{d}");
    let input = lead_input();
    let (s, run) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=10s",
            Some(json!({"definitionId": "lead-router", "input": input})),
        )
        .await;
    assert_eq!(s, 201, "{run}");
    let data = &run["data"];
    assert_eq!(data["status"], "PAUSED", "{run}");
    let pending = &data["pendingAction"];
    assert_eq!(pending["type"], "approval");
    assert_eq!(pending["options"], json!(["approve", "reject", "escalate"]));
    let step = pending["step"].as_str().unwrap();
    let id = data["id"].as_str().unwrap();

    let (s, b) = api
        .call(
            "POST",
            &format!("/v1/workflow-runs/{id}/resume"),
            Some(json!({"input": {"resume": {"step": step, "input": "maybe"}}})),
        )
        .await;
    assert_eq!((s, code(&b)), (400, "VALIDATION_ERROR"), "{b}");
    let (s, b) = api
        .call(
            "POST",
            &format!("/v1/workflow-runs/{id}/resume"),
            Some(json!({"signalType": "payment.confirmed"})),
        )
        .await;
    assert_eq!((s, code(&b)), (409, "CONFLICT"), "{b}");
    let (_, still) = api
        .call("GET", &format!("/v1/workflow-runs/{id}"), None)
        .await;
    assert_eq!(still["data"]["status"], "PAUSED");

    let (s, r) = api
        .call(
            "POST",
            &format!("/v1/workflow-runs/{id}/resume"),
            Some(json!({"input": {"resume": {"step": step, "input": "approve"}}})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (_, done) = api
        .call("GET", &format!("/v1/workflow-runs/{id}?wait=10s"), None)
        .await;
    assert_eq!(done["data"]["status"], "COMPLETED", "{done}");
    let (s, b) = api
        .call(
            "POST",
            &format!("/v1/workflow-runs/{id}/resume"),
            Some(json!({"step": step, "input": "approve"})),
        )
        .await;
    assert_eq!((s, code(&b)), (409, "CONFLICT"));
}

pub fn lead_input() -> Value {
    // Whatever the example's input schema requires, from its own properties.
    let schema: Value = {
        let l = stepwise::validate::lint(&stepwise::diagnostics::SourceFile::new("x", LEAD_ROUTER));
        l.definition.unwrap().input.unwrap()
    };
    let mut input = serde_json::Map::new();
    for (k, v) in schema["properties"].as_object().unwrap() {
        let value = match v["type"].as_str() {
            Some("integer") | Some("number") => json!(10),
            Some("boolean") => json!(true),
            Some("object") => json!({}),
            Some("array") => json!([]),
            _ => match v.get("enum") {
                Some(e) => e[0].clone(),
                None if v.get("format") == Some(&json!("email")) => json!("jane@acme.com"),
                None => json!("Acme lead-123"),
            },
        };
        input.insert(k.clone(), value);
    }
    Value::Object(input)
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_004_payment_flow_over_http() {
    let api = Api::start().await;
    // The local server stands in for every API the example calls; any 2xx will do.
    let yaml: String = PAYMENT
        .replace("https://", "{server}/echo?u=")
        .lines()
        .filter(|l| !l.contains("expect_status"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (s, d) = api.apply(&yaml).await;
    assert_eq!(s, 201, "{d}");
    let (s, run) = api
        .call("POST", "/v1/workflow-runs?wait=10s", Some(json!({"definitionId": "payment-onboarding", "input": {"companyName": "Acme Corp", "contactEmail": "jane@acme.com"}, "idempotencyKey": "onboard-acme-2026-04-02"})))
        .await;
    assert_eq!(s, 201, "{run}");
    assert_eq!(run["data"]["status"], "WAITING", "{run}");
    let id = run["data"]["id"].as_str().unwrap();
    let (s, b) = api
        .call(
            "POST",
            &format!("/v1/workflow-runs/{id}/resume"),
            Some(json!({"payload": {}})),
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (400, "VALIDATION_ERROR"),
        "missing signalType: {b}"
    );
    let (s, b) = api
        .call(
            "POST",
            &format!("/v1/workflow-runs/{id}/resume"),
            Some(json!({"signalType": "payment.confirmed", "payload": {"transactionId": 98765}})),
        )
        .await;
    assert_eq!((s, code(&b)), (400, "VALIDATION_ERROR"), "{b}");
    let (s, b) = api
        .call(
            "POST",
            &format!("/v1/workflow-runs/{id}/resume"),
            Some(json!({"signalType": "payment.failed", "payload": {}})),
        )
        .await;
    assert_eq!((s, code(&b)), (409, "CONFLICT"), "{b}");
    let (s, r) = api
        .call("POST", &format!("/v1/workflow-runs/{id}/resume"), Some(json!({"signalType": "payment.confirmed", "payload": {"transactionId": "txn_98765", "amount": 499.00}})))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["id"], id);
    // The flow sleeps a day after the welcome mail: it is WAITING on its timer now.
    let (_, after) = api
        .call("GET", &format!("/v1/workflow-runs/{id}?wait=10s"), None)
        .await;
    assert_eq!(after["data"]["status"], "WAITING", "{after}");
    assert_eq!(after["data"]["pendingAction"]["type"], "wait");
    let paid = after["data"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "external_event")
        .unwrap();
    assert_eq!(paid["output"]["transactionId"], "txn_98765");
    assert_eq!(paid["status"], "COMPLETED");
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_resume_by_token_without_a_key() {
    let api = Api::start().await;
    api.apply(SIGNAL).await;
    let (_, run) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "approve-link"})),
        )
        .await;
    let id = run["data"]["id"].as_str().unwrap();
    let (s, hooks) = api
        .call("GET", &format!("/v1/workflow-runs/{id}/hooks"), None)
        .await;
    assert_eq!(s, 200);
    let hook = &hooks["data"][0];
    assert_eq!(hook["status"], "pending");
    let url = hook["resumeUrl"].as_str().unwrap().to_string();
    assert!(url.starts_with(&api.base), "{url}");

    let bad = api
        .http
        .get(format!("{url}?approved=banana"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().await.unwrap().contains("<html>"));
    let (_, still) = api
        .call("GET", &format!("/v1/workflow-runs/{id}"), None)
        .await;
    assert_eq!(still["data"]["status"], "WAITING");
    let bad = api
        .http
        .post(&url)
        .json(&json!({"approved": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    let ok = api
        .http
        .get(format!("{url}?approved=true&count=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let (_, done) = api
        .call("GET", &format!("/v1/workflow-runs/{id}?wait=5s"), None)
        .await;
    assert_eq!(done["data"]["status"], "COMPLETED");
    assert_eq!(done["data"]["output"], json!(true));
    let again = api
        .http
        .post(&url)
        .json(&json!({"approved": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let none = api
        .http
        .post(api.url("/v1/hooks/hk_nothing/resume"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status().as_u16(), 404);

    // POST answers 202 with the run id.
    let (_, run) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "approve-link"})),
        )
        .await;
    let id = run["data"]["id"].as_str().unwrap();
    let (_, hooks) = api
        .call("GET", &format!("/v1/workflow-runs/{id}/hooks"), None)
        .await;
    let url = hooks["data"][0]["resumeUrl"].as_str().unwrap();
    let resp = api
        .http
        .post(url)
        .json(&json!({"approved": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["data"]["runId"], id);
}

#[tokio::test(flavor = "multi_thread")]
async fn definitions_are_linted_versioned_and_listed() {
    let api = Api::start().await;
    let (s, b) = api
        .apply("id: broken\nsteps:\n  - id: a\n    type: wiat\n")
        .await;
    assert_eq!((s, code(&b)), (400, "VALIDATION_ERROR"), "{b}");
    let d = &b["error"]["details"]["diagnostics"][0];
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(4), Some(11)),
        "{b}"
    );
    assert_eq!(d["code"], "stepwise::schema::invalid_value");
    let (s, v1) = api.apply(SIMPLE).await;
    assert_eq!(s, 201);
    let (s, same) = api.apply(SIMPLE).await;
    assert_eq!(s, 200);
    assert_eq!(same["data"]["id"], v1["data"]["id"]);
    // JSON is accepted too.
    let json_def = json!({"id": "simple", "steps": [{"id": "x", "type": "action", "uses": "log", "with": {"message": "hi"}}]});
    let (s, v2) = api
        .call("POST", "/v1/workflow-definitions", Some(json_def))
        .await;
    assert_eq!(s, 201, "{v2}");
    assert_eq!(v2["data"]["version"], 2);
    let (_, list) = api.call("GET", "/v1/workflow-definitions", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (_, got) = api
        .call("GET", "/v1/workflow-definitions/simple", None)
        .await;
    assert_eq!(got["data"]["versions"].as_array().unwrap().len(), 2);
    let v1_id = v1["data"]["id"].as_str().unwrap();
    let (s, pinned) = api
        .call("GET", &format!("/v1/workflow-definitions/{v1_id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(pinned["data"]["version"], 1);
    // A run can pin the exact old version.
    let (s, run) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": v1_id, "input": {"name": "Old"}})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(run["data"]["output"], json!({"greeting": "Hello Old"}));
    let (s, b) = api
        .call("GET", "/v1/workflow-definitions/nothing", None)
        .await;
    assert_eq!((s, code(&b)), (404, "NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_documents_every_route_and_unknown_routes_are_enveloped() {
    let api = Api::start().await;
    let resp = api.http.get(api.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for d in stepwise::api::docs() {
        assert!(
            doc["paths"][&d.path][d.method.to_ascii_lowercase()].is_object(),
            "{} {}",
            d.method,
            d.path
        );
    }
    let (s, b) = api.call("GET", "/v1/nothing", None).await;
    assert_eq!((s, code(&b)), (404, "NOT_FOUND"));
    let (s, b) = api.call("PUT", "/v1/workflow-runs", None).await;
    assert_eq!((s, code(&b)), (405, "METHOD_NOT_ALLOWED"));
    let resp = api.http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(1)).await;
}
