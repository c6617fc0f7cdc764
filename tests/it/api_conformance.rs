//! The OpenAPI document against real answers: real calls to a test server, each answer's body
//! validated against the schema `/openapi.json` declares for that route and status, so a
//! handler that drifts from its documented shape fails here.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};
use stepwise::diagnostics::SourceFile;
use stepwise::store::DEFAULT_WORKSPACE;
use stepwise::triggers::Triggers;

use crate::api::{Api, SIMPLE};
use crate::engine::Env;

/// An agent step (usage per model), then an approval (PAUSED, a hook).
const AGENT: &str = r#"
id: agent-approval
steps:
  - id: classify
    type: agent
    prompt: "Classify"
    output:
      type: object
      required: [category]
      properties:
        category: {type: string}
  - id: review
    type: approval
    message: "Route to {{ steps.classify.output.category }}?"
    options: [approve, reject]
"#;

const SLEEPY: &str = "id: sleepy\nsteps:\n  - {id: nap, type: wait, duration: 1h}\n";

const FAILING: &str = "id: failing\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/status/500\"}\n";

const TRIGGER: &str = r#"
trigger: signup
workflow: simple
webhook:
  endpoint: signup
  idempotency: {header: X-Delivery-Id}
"#;

const EXPENSE: &str = include_str!("../../examples/expense-approval.yaml");

/// Real HTTP to a router with a key, triggers on; every answer checked against the document.
struct Checked {
    /// The server: `tests/it/api.rs`'s, with the test trigger.
    srv: Api,
    doc: Value,
    validators: HashMap<String, jsonschema::Validator>,
    /// (method, documented path, status) of every answer validated.
    seen: BTreeSet<(String, String, u16)>,
}

impl Checked {
    async fn start() -> Checked {
        let env = Env::new().await;
        let triggers = Triggers::new(env.engine.clone(), DEFAULT_WORKSPACE);
        let lint = stepwise::validate::lint(&SourceFile::new("t.yaml", TRIGGER));
        let trigger = lint.trigger.expect("the test trigger lints");
        triggers.set(trigger).unwrap();
        let api = Api::serve(env, |s| s.with_triggers(triggers)).await;
        let doc: Value = api
            .http
            .get(api.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        every_ref_resolves(&doc, &doc);
        Checked {
            srv: api,
            doc: strict(doc),
            validators: HashMap::new(),
            seen: BTreeSet::new(),
        }
    }

    /// The documented path a concrete path matches (`/v1/workflow-runs/wfrun_…` →
    /// `/v1/workflow-runs/{id}`).
    fn template(&self, method: &str, path: &str) -> String {
        let path = path.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.split('/').collect();
        let m = method.to_ascii_lowercase();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, item)| item.get(&m).is_some())
            .map(|(t, _)| t)
            .find(|t| {
                let tp: Vec<&str> = t.split('/').collect();
                tp.len() == parts.len()
                    && tp
                        .iter()
                        .zip(&parts)
                        .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')))
            })
            .unwrap_or_else(|| panic!("{method} {path} is not in the document"))
            .clone()
    }

    /// Validate `body` against the schema documented for this route and status.
    fn check(&mut self, method: &str, path: &str, status: u16, content_type: &str, body: &Value) {
        let t = self.template(method, path);
        let op = &self.doc["paths"][&t][method.to_ascii_lowercase()];
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {t} answered {status}, which the document does not list: {body}"
        );
        let mt = content_type.split(';').next().unwrap_or_default().trim();
        let Some(schema) = response["content"].get(mt).map(|c| c["schema"].clone()) else {
            panic!("{method} {t} {status}: the document has no {mt} answer: {response}");
        };
        let key = format!("{method} {t} {status} {mt}");
        if !self.validators.contains_key(&key) {
            let mut root = schema.as_object().cloned().unwrap_or_default();
            root.insert("components".into(), self.doc["components"].clone());
            let v = jsonschema::validator_for(&Value::Object(root))
                .unwrap_or_else(|e| panic!("{key}: the schema does not compile: {e}"));
            self.validators.insert(key.clone(), v);
        }
        let errors: Vec<String> = self.validators[&key]
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{key}: the answer does not match the document:\n{}\n{body:#}",
            errors.join("\n")
        );
        self.seen.insert((method.to_string(), t, status));
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<String>,
        key: bool,
    ) -> (u16, Value) {
        let mut req = self
            .srv
            .http
            .request(method.parse().unwrap(), self.srv.url(path));
        if key {
            req = req.header("x-api-key", &self.srv.key);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().await.unwrap();
        let body = if ct.starts_with("application/json") {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
        } else {
            Value::String(text)
        };
        self.check(method, path, status, &ct, &body);
        (status, body)
    }

    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let ct = body.as_ref().map(|_| "application/json");
        self.send(method, path, ct, body.map(|b| b.to_string()), true)
            .await
    }

    /// The status of a call with the key and no body.
    async fn status(&mut self, method: &str, path: &str) -> u16 {
        self.call(method, path, None).await.0
    }

    async fn apply(&mut self, yaml: &str) -> (u16, Value) {
        let yaml = yaml.replace("{server}", &format!("http://{}", self.srv.env.server.addr));
        self.send(
            "POST",
            "/v1/workflow-definitions",
            Some("application/yaml"),
            Some(yaml),
            true,
        )
        .await
    }
}

/// A `$ref` to a schema the document does not hold would make every tool reject it.
fn every_ref_resolves(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                let name = r.trim_start_matches("#/components/schemas/");
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{r} is not in the document"
                );
            }
            m.values().for_each(|x| every_ref_resolves(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| every_ref_resolves(doc, x)),
        _ => {}
    }
}

/// The document with every object schema closed (`additionalProperties: false`), so an
/// answer carrying a field the document does not name fails too. A composite (`allOf` of a
/// flattened part and its own fields) is merged into one object first.
fn strict(mut doc: Value) -> Value {
    fn close(v: &mut Value, schemas: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(parts) = m.remove("allOf").and_then(|a| a.as_array().cloned()) {
                    let mut properties = serde_json::Map::new();
                    let mut required = Vec::new();
                    for part in parts {
                        let part = match part["$ref"].as_str() {
                            Some(r) => {
                                schemas[r.trim_start_matches("#/components/schemas/")].clone()
                            }
                            None => part,
                        };
                        properties
                            .extend(part["properties"].as_object().cloned().unwrap_or_default());
                        required.extend(part["required"].as_array().cloned().unwrap_or_default());
                    }
                    m.insert("type".into(), json!("object"));
                    m.insert("properties".into(), Value::Object(properties));
                    m.insert("required".into(), Value::Array(required));
                }
                if m.get("properties").is_some_and(Value::is_object) {
                    m.insert("additionalProperties".into(), json!(false));
                }
                m.values_mut().for_each(|x| close(x, schemas));
            }
            Value::Array(a) => a.iter_mut().for_each(|x| close(x, schemas)),
            _ => {}
        }
    }
    let schemas = doc["components"]["schemas"].clone();
    close(&mut doc["components"], &schemas);
    close(&mut doc["paths"], &schemas);
    doc
}

fn id(v: &Value) -> String {
    v["data"]["id"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_matches_the_schema_the_document_declares() {
    let mut api = Checked::start().await;
    api.srv
        .env
        .server
        .answer_llm(&["{\"category\": \"enterprise\"}"]);

    // Definitions: apply (new, same again, refused, wrong media type, no key), list, get.
    assert_eq!(api.apply(SIMPLE).await.0, 201);
    assert_eq!(api.apply(SIMPLE).await.0, 200);
    for yaml in [AGENT, SLEEPY, FAILING, EXPENSE] {
        assert_eq!(api.apply(yaml).await.0, 201);
    }
    let (s, b) = api.apply("id: broken\nsteps: 3\n").await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = api
        .send(
            "POST",
            "/v1/workflow-definitions",
            Some("text/plain"),
            Some(SIMPLE.into()),
            true,
        )
        .await;
    assert_eq!(s, 415);
    let (s, _) = api
        .send("GET", "/v1/workflow-definitions", None, None, false)
        .await;
    assert_eq!(s, 401);
    assert_eq!(api.status("GET", "/v1/workflow-definitions").await, 200);
    assert_eq!(
        api.status("GET", "/v1/workflow-definitions/simple").await,
        200
    );
    assert_eq!(
        api.status("GET", "/v1/workflow-definitions/nothing").await,
        404
    );

    // Runs: create (new, idempotent, refused, unknown definition), list, get with everything.
    let body = json!({"definitionId": "simple", "input": {"name": "Ada"}, "idempotencyKey": "k1"});
    let (s, done) = api
        .call("POST", "/v1/workflow-runs?wait=5s", Some(body.clone()))
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        api.call("POST", "/v1/workflow-runs", Some(body)).await.0,
        200
    );
    let (s, _) = api
        .call(
            "POST",
            "/v1/workflow-runs",
            Some(json!({"definitionId": 3})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .call(
            "POST",
            "/v1/workflow-runs",
            Some(json!({"definitionId": "nothing"})),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(api.status("GET", "/v1/workflow-runs").await, 200);
    assert_eq!(api.status("GET", "/v1/workflow-runs?status=BAD").await, 400);
    let done = id(&done);
    let full = format!("/v1/workflow-runs/{done}?include=trigger,steps,trace,usage");
    assert_eq!(api.call("GET", &full, None).await.0, 200);
    assert_eq!(
        api.status("GET", &format!("/v1/workflow-runs/{done}"))
            .await,
        200
    );
    assert_eq!(
        api.status("GET", "/v1/workflow-runs/wfrun_nothing").await,
        404
    );

    // An agent step's usage, then a PAUSED approval: its hook, answered through the token.
    let (_, paused) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "agent-approval"})),
        )
        .await;
    assert_eq!(paused["data"]["status"], "PAUSED", "{paused}");
    let paused = id(&paused);
    let (_, detail) = api
        .call(
            "GET",
            &format!("/v1/workflow-runs/{paused}?include=usage,trace"),
            None,
        )
        .await;
    assert!(
        detail["data"]["usage"]["models"]
            .as_object()
            .is_some_and(|m| !m.is_empty()),
        "{detail}"
    );
    let (s, hooks) = api
        .call("GET", &format!("/v1/workflow-runs/{paused}/hooks"), None)
        .await;
    assert_eq!(s, 200);
    let token = hooks["data"][0]["token"].as_str().unwrap().to_string();
    let hook = format!("/v1/hooks/{token}/resume");
    let (s, _) = api
        .send(
            "POST",
            &hook,
            Some("application/json"),
            Some("\"approve\"".into()),
            false,
        )
        .await;
    assert_eq!(s, 202);
    let (s, _) = api
        .send(
            "POST",
            &hook,
            Some("application/json"),
            Some("\"approve\"".into()),
            false,
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = api
        .send("GET", &format!("{hook}?x=1"), None, None, false)
        .await;
    assert_eq!(s, 409);
    let (s, _) = api
        .send(
            "POST",
            "/v1/hooks/hk_nothing/resume",
            Some("application/json"),
            Some("{}".into()),
            false,
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        api.status("GET", &format!("/v1/workflow-runs/{paused}/hooks?all=true"))
            .await,
        200
    );

    // The example: approve through the API (PAUSED), then a signal (WAITING), refusals.
    let (_, exp) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "expense-approval", "input": {"employee": "Ada", "amount": 12}})),
        )
        .await;
    let exp = id(&exp);
    let resume = format!("/v1/workflow-runs/{exp}/resume");
    let (s, _) = api
        .call(
            "POST",
            &resume,
            Some(json!({"step": "review", "input": "maybe"})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .call(
            "POST",
            &resume,
            Some(json!({"step": "review", "input": "approve"})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, waiting) = api
        .call("GET", &format!("/v1/workflow-runs/{exp}?wait=5s"), None)
        .await;
    assert_eq!(waiting["data"]["status"], "WAITING", "{waiting}");
    assert_eq!(waiting["data"]["waitingOn"]["label"], "Waiting on hook");
    let (s, _) = api
        .call(
            "POST",
            &resume,
            Some(json!({"signalType": "payout.sent", "payload": {"reference": "p-1"}})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = api
        .call(
            "POST",
            &resume,
            Some(json!({"signalType": "payout.sent", "payload": {}})),
        )
        .await;
    assert_eq!(s, 409);

    // A sleeping run, cancelled twice (the DELETE form too); a failed run, retried.
    let (_, sleepy) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "sleepy"})),
        )
        .await;
    assert_eq!(sleepy["data"]["waitingOn"]["label"], "Sleeping", "{sleepy}");
    let sleepy = id(&sleepy);
    assert_eq!(
        api.status("POST", &format!("/v1/workflow-runs/{sleepy}/cancel"))
            .await,
        200
    );
    assert_eq!(
        api.status("POST", &format!("/v1/workflow-runs/{sleepy}/cancel"))
            .await,
        409
    );
    assert_eq!(
        api.status("DELETE", &format!("/v1/workflow-runs/{sleepy}"))
            .await,
        409
    );
    assert_eq!(
        api.status("POST", &format!("/v1/workflow-runs/{done}/retry"))
            .await,
        409
    );
    let (_, failed) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "failing"})),
        )
        .await;
    assert_eq!(failed["data"]["status"], "FAILED", "{failed}");
    let failed = id(&failed);
    assert_eq!(
        api.status("POST", &format!("/v1/workflow-runs/{failed}/retry"))
            .await,
        200
    );
    assert_eq!(
        api.status("DELETE", "/v1/workflow-runs/wfrun_nothing")
            .await,
        404
    );

    // History, triggers and a webhook delivery (new, redelivered, unknown endpoint).
    assert_eq!(api.status("GET", "/v1/history?status=completed").await, 200);
    assert_eq!(api.status("GET", "/v1/history?kind=agent").await, 400);
    let (s, b) = api.call("GET", "/v1/triggers", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"][0]["name"], "signup");
    for expected in [202, 200] {
        let resp = api
            .srv
            .http
            .post(api.srv.url("/v1/webhooks/signup"))
            .header("content-type", "application/json")
            .header("x-delivery-id", "d1")
            .body(r#"{"name": "Grace"}"#)
            .send()
            .await
            .unwrap();
        let s = resp.status().as_u16();
        let b: Value = resp.json().await.unwrap();
        assert_eq!(s, expected, "{b}");
        api.check("POST", "/v1/webhooks/signup", s, "application/json", &b);
    }
    let (s, _) = api
        .send(
            "POST",
            "/v1/webhooks/nothing",
            Some("application/json"),
            Some("{}".into()),
            false,
        )
        .await;
    assert_eq!(s, 404);

    // A foreign origin, the health check.
    let resp = api
        .srv
        .http
        .post(api.srv.url("/v1/workflow-runs"))
        .header("origin", "http://evil.example")
        .header("x-api-key", &api.srv.key)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let b: Value = resp.json().await.unwrap();
    api.check("POST", "/v1/workflow-runs", 403, "application/json", &b);
    assert_eq!(api.send("GET", "/healthz", None, None, false).await.0, 200);

    // The main routes were each seen with a success and an error answer.
    for (method, path, status) in [
        ("POST", "/v1/workflow-runs", 201),
        ("POST", "/v1/workflow-runs", 400),
        ("GET", "/v1/workflow-runs", 200),
        ("GET", "/v1/workflow-runs/{id}", 200),
        ("GET", "/v1/workflow-runs/{id}", 404),
        ("POST", "/v1/workflow-runs/{id}/resume", 200),
        ("POST", "/v1/workflow-runs/{id}/resume", 409),
        ("POST", "/v1/workflow-runs/{id}/cancel", 200),
        ("POST", "/v1/workflow-runs/{id}/cancel", 409),
        ("POST", "/v1/workflow-runs/{id}/retry", 200),
        ("POST", "/v1/workflow-runs/{id}/retry", 409),
        ("POST", "/v1/workflow-definitions", 201),
        ("POST", "/v1/workflow-definitions", 400),
        ("GET", "/v1/workflow-definitions/{id}", 200),
        ("GET", "/v1/workflow-runs/{id}/hooks", 200),
        ("POST", "/v1/hooks/{token}/resume", 202),
        ("GET", "/v1/history", 200),
        ("GET", "/v1/triggers", 200),
        ("POST", "/v1/webhooks/{endpoint}", 202),
    ] {
        assert!(
            api.seen
                .contains(&(method.to_string(), path.to_string(), status)),
            "{method} {path} {status} was not checked"
        );
    }
}

/// Query parameters are documented apart from the code that reads them: every one that
/// does not take any string or any boolean must be read, so a wrong value is refused naming
/// it.
#[tokio::test(flavor = "multi_thread")]
async fn every_documented_query_parameter_is_read() {
    let mut api = Checked::start().await;
    assert_eq!(api.apply(SIMPLE).await.0, 201);
    let (_, run) = api
        .call(
            "POST",
            "/v1/workflow-runs",
            Some(json!({"definitionId": "simple", "input": {"name": "Ada"}})),
        )
        .await;
    let run = id(&run);
    let mut checked = 0;
    for (path, item) in api.doc["paths"].clone().as_object().unwrap() {
        let Some(op) = item.get("get") else { continue };
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            let any_value = name == "definitionId" || p["schema"]["type"] == "boolean";
            if p["in"] != "query" || any_value {
                continue;
            }
            let url = format!("{}?{name}=%21bad", path.replace("{id}", &run));
            let (status, body) = api.call("GET", &url, None).await;
            assert_eq!(status, 400, "{url}: {body}");
            assert_eq!(body["error"]["details"]["field"], name, "{url}: {body}");
            checked += 1;
        }
    }
    assert!(checked >= 13, "only {checked} parameters were checked");
}

#[tokio::test(flavor = "multi_thread")]
async fn docs_serves_the_vendored_viewer_of_the_document() {
    let api = Checked::start().await.srv;
    let resp = api.http.get(api.url("/docs/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("swagger-ui-bundle.js"), "{page}");
    // Every script and stylesheet comes from this server, and the viewer reads our document.
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let resp = api
            .http
            .get(api.url(&format!("/docs/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{asset}");
        let text = resp.text().await.unwrap();
        if asset == "swagger-initializer.js" {
            assert!(text.contains("\"/openapi.json\""), "{text}");
        }
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    // `/docs` leads to the page.
    let resp = api.http.get(api.url("/docs")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}
