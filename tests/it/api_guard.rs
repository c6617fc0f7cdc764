//! What the API refuses before a handler runs: foreign origins, wrong media types, paths
//! that are not UTF-8, bodies of the wrong shape, reserved idempotency keys, revoked keys.

use serde_json::{Value, json};
use stepwise::api::{AppState, docs, router};
use stepwise::diagnostics::SourceFile;
use stepwise::store::{DEFAULT_WORKSPACE, RunQuery};
use stepwise::triggers::Triggers;

use crate::api::{Api, add_key};
use crate::engine::Env;
use crate::util::{show, stepwise};

const SIMPLE: &str = r#"
id: simple
steps:
  - id: hello
    type: action
    uses: transform
    with: {value: "hi"}
"#;

const TRIGGER: &str = r#"
trigger: signup
workflow: simple
webhook:
  endpoint: signup
  idempotency: {header: X-Delivery-Id}
"#;

/// The prefixes the triggers' own keys start with (`src/triggers/runner.rs`).
const RESERVED_KEY_PREFIXES: [&str; 3] = ["webhook:", "schedule:", "poll:"];

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

/// Serve `state` on a free loopback port; the base URL.
async fn serve(state: AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn total_runs(env: &Env) -> u64 {
    env.engine
        .store()
        .list_runs(&RunQuery {
            workspace_id: DEFAULT_WORKSPACE.into(),
            page: 1,
            page_size: 100,
            ..Default::default()
        })
        .unwrap()
        .1
}

/// Every documented mutating route, with its path parameters filled in.
fn mutating_routes(run_id: &str) -> Vec<(&'static str, String)> {
    docs()
        .into_iter()
        .filter(|d| matches!(d.method, "POST" | "PUT" | "PATCH" | "DELETE"))
        .map(|d| {
            let path = d
                .path
                .replace("{id}", run_id)
                .replace("{token}", "hk_nothing")
                .replace("{endpoint}", "signup");
            (d.method, path)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_origin_is_refused_on_every_mutating_route_in_every_auth_mode() {
    let env = Env::new().await;
    env.apply(SIMPLE).await;
    let (run, _) = env.create("simple", json!({}), None).await.unwrap();
    let key = add_key(env.engine.store().as_ref(), DEFAULT_WORKSPACE);
    let http = reqwest::Client::new();
    for no_auth in [true, false] {
        let base = serve(AppState::new(env.engine.clone(), no_auth, None)).await;
        for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
            for (method, path) in mutating_routes(&run.id) {
                let resp = http
                    .request(method.parse().unwrap(), format!("{base}{path}"))
                    .header("origin", origin)
                    .header("x-api-key", &key)
                    .header("content-type", "application/json")
                    .body(r#"{"definitionId": "simple"}"#)
                    .send()
                    .await
                    .unwrap();
                let (s, b) = json_of(resp).await;
                assert_eq!(
                    (s, code(&b)),
                    (403, "FORBIDDEN"),
                    "no_auth={no_auth} {origin} {method} {path}: {b}"
                );
                assert!(message(&b).contains("--allow-origin"), "{b}");
            }
        }
        // A plain text form post from a page is refused too, before its body is read.
        let resp = http
            .post(format!("{base}/v1/workflow-definitions"))
            .header("origin", "http://evil.example")
            .header("content-type", "text/plain")
            .body(SIMPLE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403);
        // Reads are not refused: without CORS headers the page cannot read the answer.
        let resp = http
            .get(format!("{base}/v1/workflow-runs"))
            .header("origin", "http://evil.example")
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        // The server's own origin (a page it served) may post.
        let resp = http
            .post(format!("{base}/v1/workflow-runs"))
            .header("origin", &base)
            .header("x-api-key", &key)
            .json(&json!({"definitionId": "simple"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{base}");
    }
    assert_eq!(total_runs(&env), 3, "refused requests started nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auth_only_a_loopback_host_is_the_servers_own_origin() {
    // DNS rebinding: evil.example resolves to 127.0.0.1, so the browser's Origin and Host
    // agree, but the server was never reachable under that name.
    let env = Env::new().await;
    env.apply(SIMPLE).await;
    let base = serve(AppState::new(env.engine.clone(), true, None)).await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let http = reqwest::Client::new();
    let post = |origin: String, host: String| {
        http.post(format!("{base}/v1/workflow-runs"))
            .header("origin", origin)
            .header("host", host)
            .json(&json!({"definitionId": "simple"}))
            .send()
    };
    let r = post(
        format!("http://evil.example:{port}"),
        format!("evil.example:{port}"),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = post(
        format!("http://localhost:{port}"),
        format!("localhost:{port}"),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_origins_and_the_public_url_may_post() {
    let env = Env::new().await;
    env.apply(SIMPLE).await;
    let allowed = stepwise::api::parse_origins(&[
        "http://app.example:3000".to_string(),
        "HTTPS://Ops.Example/".to_string(),
    ])
    .unwrap();
    let state = AppState::new(
        env.engine.clone(),
        true,
        Some("https://stepwise.example.com".into()),
    )
    .with_allowed_origins(allowed);
    let base = serve(state).await;
    let http = reqwest::Client::new();
    for (origin, status) in [
        ("http://app.example:3000", 201),
        ("https://ops.example", 201),
        ("https://ops.example:443", 201),
        ("https://stepwise.example.com", 201),
        ("http://app.example:3001", 403),
        ("https://app.example:3000", 403),
        ("http://stepwise.example.com", 403),
    ] {
        let r = http
            .post(format!("{base}/v1/workflow-runs"))
            .header("origin", origin)
            .json(&json!({"definitionId": "simple"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{origin}");
    }
    for bad in [
        "app.example",
        "ftp://x.example",
        "http://x.example/path",
        "",
    ] {
        assert!(
            stepwise::api::parse_origins(&[bad.to_string()]).is_err(),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_endpoints_require_a_json_media_type() {
    let api = Api::start().await;
    api.apply(SIMPLE).await;
    let post = |ct: Option<&'static str>, path: &str, body: &'static str| {
        let mut r = api
            .http
            .post(api.url(path))
            .header("x-api-key", &api.key)
            .body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let create = r#"{"definitionId": "simple"}"#;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (s, b) = json_of(post(ct, "/v1/workflow-runs", create).await.unwrap()).await;
        assert_eq!(
            (s, code(&b)),
            (415, "UNSUPPORTED_MEDIA_TYPE"),
            "{ct:?}: {b}"
        );
        assert!(message(&b).contains("application/json"), "{b}");
    }
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.example+json",
    ] {
        let (s, b) = json_of(post(Some(ct), "/v1/workflow-runs", create).await.unwrap()).await;
        assert_eq!(s, 201, "{ct}: {b}");
    }
    let (s, b) = json_of(
        post(None, "/v1/hooks/hk_nothing/resume", r#"{"a": 1}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, code(&b)), (415, "UNSUPPORTED_MEDIA_TYPE"), "{b}");
    assert_eq!(total_runs(&api.env), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn definition_uploads_take_yaml_or_json_media_types_only() {
    let api = Api::start().await;
    let post = |ct: Option<&str>, body: String| {
        let mut r = api
            .http
            .post(api.url("/v1/workflow-definitions"))
            .header("x-api-key", &api.key)
            .body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    for ct in [None, Some("text/plain"), Some("multipart/form-data")] {
        let (s, b) = json_of(post(ct, SIMPLE.into()).await.unwrap()).await;
        assert_eq!(
            (s, code(&b)),
            (415, "UNSUPPORTED_MEDIA_TYPE"),
            "{ct:?}: {b}"
        );
        assert!(message(&b).contains("application/yaml"), "{b}");
    }
    for ct in [
        "application/yaml",
        "application/x-yaml",
        "text/yaml; charset=utf-8",
        "text/x-yaml",
    ] {
        let (s, b) = json_of(post(Some(ct), SIMPLE.into()).await.unwrap()).await;
        assert!(s == 200 || s == 201, "{ct}: {b}");
    }
    let wrapped = json!({"source": SIMPLE.replace("hi", "wrapped")}).to_string();
    let (s, b) = json_of(post(Some("application/json"), wrapped).await.unwrap()).await;
    assert_eq!(s, 201, "{b}");
    let plain = json!({"id": "as-json", "steps": [{"id": "a", "type": "action", "uses": "transform", "with": {"value": 1}}]});
    let (s, b) = json_of(
        post(Some("application/json"), plain.to_string())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_that_is_not_utf8_answers_the_envelope() {
    let api = Api::start().await;
    for (method, path) in [
        ("GET", "/v1/workflow-runs/%FF"),
        ("POST", "/v1/workflow-runs/%FF%FE/cancel"),
        ("GET", "/v1/workflow-definitions/%C3%28"),
        ("POST", "/v1/hooks/%FF/resume"),
        ("GET", "/v1/hooks/%FF/resume"),
        ("POST", "/v1/webhooks/%FF"),
    ] {
        let resp = api
            .http
            .request(method.parse().unwrap(), api.url(path))
            .header("x-api-key", &api.key)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let (s, b) = json_of(resp).await;
        assert_eq!(s, 400, "{method} {path}: {b}");
        if path == "/v1/hooks/%FF/resume" && method == "GET" {
            // The link form answers a page for people, as its other errors do.
            assert!(ct.starts_with("text/html"), "{ct}");
            continue;
        }
        assert!(ct.starts_with("application/json"), "{method} {path}: {ct}");
        assert_eq!(code(&b), "VALIDATION_ERROR", "{method} {path}: {b}");
        assert!(message(&b).contains("UTF-8"), "{b}");
        assert!(b["error"]["details"]["field"].is_string(), "{b}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_file_posted_as_a_definition_says_where_triggers_go() {
    let api = Api::start().await;
    api.apply(SIMPLE).await;
    let (s, b) = api.apply(TRIGGER).await;
    assert_eq!((s, code(&b)), (400, "VALIDATION_ERROR"), "{b}");
    let m = message(&b);
    assert!(!m.contains("0 error"), "{m}");
    assert!(m.contains("trigger"), "{m}");
    assert!(m.contains("--definitions"), "{m}");
    assert!(m.contains("docs/triggers.md"), "{m}");
    // A broken trigger file says the same, and its diagnostics come along.
    let (s, b) = api.apply("trigger: x\nworkflow: simple\n").await;
    assert_eq!(s, 400, "{b}");
    assert!(message(&b).contains("--definitions"), "{b}");
    assert!(
        !b["error"]["details"]["diagnostics"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_an_object_is_named_without_rust_types() {
    let api = Api::start().await;
    api.apply(SIMPLE).await;
    let (_, run) = api
        .call(
            "POST",
            "/v1/workflow-runs",
            Some(json!({"definitionId": "simple"})),
        )
        .await;
    let id = run["data"]["id"].as_str().unwrap().to_string();
    for path in [
        "/v1/workflow-runs".to_string(),
        format!("/v1/workflow-runs/{id}/resume"),
    ] {
        for body in [
            json!("simple"),
            json!(42),
            json!([1]),
            json!(null),
            json!(true),
        ] {
            let (s, b) = api.call("POST", &path, Some(body.clone())).await;
            assert_eq!(
                (s, code(&b)),
                (400, "VALIDATION_ERROR"),
                "{path} {body}: {b}"
            );
            let m = message(&b);
            assert!(m.contains("the request body must be a JSON object"), "{m}");
            assert!(!m.contains("struct") && !m.contains("Body"), "{m}");
            assert_eq!(b["error"]["details"]["field"], "body", "{b}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_key_prefixes_are_reserved_for_triggers() {
    let api = Api::start().await;
    api.apply(SIMPLE).await;
    for prefix in RESERVED_KEY_PREFIXES {
        let key = format!("{prefix}signup:d1");
        let (s, b) = api
            .call(
                "POST",
                "/v1/workflow-runs",
                Some(json!({"definitionId": "simple", "idempotencyKey": key})),
            )
            .await;
        assert_eq!((s, code(&b)), (400, "VALIDATION_ERROR"), "{key}: {b}");
        assert_eq!(b["error"]["details"]["field"], "idempotencyKey", "{b}");
        assert!(message(&b).contains(prefix), "{b}");
    }
    let (s, b) = api
        .call(
            "POST",
            "/v1/workflow-runs",
            Some(json!({"definitionId": "simple", "idempotencyKey": "my-webhook:1"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    // The keys triggers make do carry a reserved prefix, so no client key can take theirs.
    let triggers = Triggers::new(api.env.engine.clone(), DEFAULT_WORKSPACE);
    let lint = stepwise::validate::lint(&SourceFile::new("t.yaml", TRIGGER));
    triggers.set(lint.trigger.unwrap()).unwrap();
    let base =
        serve(AppState::new(api.env.engine.clone(), false, None).with_triggers(triggers)).await;
    let resp = api
        .http
        .post(format!("{base}/v1/webhooks/signup"))
        .header("content-type", "application/json")
        .header("x-delivery-id", "d1")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (s, b) = json_of(resp).await;
    assert_eq!(s, 202, "{b}");
    let run_id = b["data"]["runId"].as_str().unwrap();
    let run = api.env.engine.store().run(run_id).unwrap().unwrap();
    let key = run.idempotency_key.unwrap();
    assert!(
        RESERVED_KEY_PREFIXES.iter().any(|p| key.starts_with(p)),
        "{key}"
    );
}

fn cli(args: &[&str]) -> std::process::Output {
    stepwise(&std::env::temp_dir(), args)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_is_refused_at_once_by_a_running_server() {
    let env = Env::new().await;
    let db = env.db().display().to_string();
    let o = tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            cli(&[
                "keys",
                "create",
                "--workspace",
                "default",
                "--name",
                "ci",
                "--db",
                &db,
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let key = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let other = add_key(env.engine.store().as_ref(), DEFAULT_WORKSPACE);
    let base = serve(AppState::new(env.engine.clone(), false, None)).await;
    let http = reqwest::Client::new();
    let get = |k: String| {
        http.get(format!("{base}/v1/workflow-runs"))
            .header("x-api-key", k)
            .send()
    };
    assert_eq!(get(key.clone()).await.unwrap().status().as_u16(), 200);

    let list = |json: bool| {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["keys", "list", "--db", &db];
            if json {
                args.push("--json");
            }
            cli(&args)
        })
    };
    let o = list(false).await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    let prefix = &key[..10];
    assert!(table.contains(prefix), "{table}");
    assert!(
        table.contains("ci") && table.contains("ws_default"),
        "{table}"
    );

    let o = tokio::task::spawn_blocking({
        let (db, prefix) = (db.clone(), prefix.to_string());
        move || cli(&["keys", "revoke", &prefix, "--db", &db])
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    let (s, b) = json_of(get(key.clone()).await.unwrap()).await;
    assert_eq!((s, code(&b)), (401, "AUTH_ERROR"), "{b}");
    assert!(message(&b).contains("revoked"), "{b}");
    assert_eq!(
        get(other).await.unwrap().status().as_u16(),
        200,
        "other keys keep working"
    );

    let o = list(true).await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let keys: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mine = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == prefix)
        .unwrap_or_else(|| panic!("{keys}"));
    assert_eq!(mine["name"], "ci");
    assert_eq!(mine["workspace"], "ws_default");
    assert!(mine["revokedAt"].is_string(), "{mine}");

    let o = tokio::task::spawn_blocking({
        let db = db.clone();
        move || cli(&["keys", "revoke", "stw_nope", "--db", &db])
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stw_nope"),
        "{}",
        show(&o)
    );
}

#[test]
fn serve_refuses_an_allow_origin_that_is_not_an_origin() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db").display().to_string();
    let o = stepwise(
        dir.path(),
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--db",
            &db,
            "--allow-origin",
            "http://localhost:3000,localhost:3001",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--allow-origin") && err.contains("`localhost:3001` is not an origin"),
        "{}",
        show(&o)
    );
}
