//! The OpenAPI 3.1 document. Its paths come from the `#[utoipa::path]` on each handler and
//! its schemas from the types handlers serialize (`views`, `schemas`), both collected by the
//! route table (`super::routes`), which mounts a handler and documents it in one step. This
//! module adds what every route shares (security, the guard's and extractors' answers) and
//! serves the vendored viewer at `/docs`.

use std::sync::OnceLock;

use axum::Router;
use serde_json::{Map, Value, json};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::state::AppState;

/// One documented operation.
pub struct Doc {
    pub method: &'static str,
    pub path: String,
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Operations whose body may be anything (webhooks from outside senders): no 415.
const ANY_BODY: [&str; 1] = ["webhook"];

/// The document: utoipa's output plus what every route shares.
pub fn document(generated: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(generated).unwrap_or_else(|_| json!({}));
    let paths = doc
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let mut out = Map::new();
    for (path, mut item) in paths {
        for method in METHODS {
            if let Some(op) = item.get_mut(method) {
                shared_responses(method, op);
            }
        }
        out.insert(path, item);
    }
    let schemas = doc
        .pointer_mut("/components/schemas")
        .map(Value::take)
        .unwrap_or_else(|| json!({}));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "stepwise",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A durable workflow engine: definitions, runs, hooks. Rendered at /docs."
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}, {"bearer": []}],
        "paths": out,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer"}
            }
        },
    })
}

/// Answers the guard and the body extractors give on every route of a kind, and the
/// security of routes that need no key (`security(())` means "none").
fn shared_responses(method: &str, op: &mut Value) {
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    let mutating = matches!(method, "post" | "put" | "patch" | "delete");
    let takes_body = op.get("requestBody").is_some()
        && !op["operationId"]
            .as_str()
            .is_some_and(|id| ANY_BODY.contains(&id));
    if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
        if mutating {
            responses.insert(
                "403".into(),
                json!({"description": "Sent by a browser page from an origin that is not the server's own nor allowed with --allow-origin", "content": error}),
            );
        }
        if takes_body {
            responses.insert(
                "415".into(),
                json!({"description": "The body's Content-Type is missing or not one this route takes", "content": error}),
            );
        }
    }
    if op["security"] == json!([{}]) {
        op["security"] = json!([]);
    }
}

/// Every operation of a document, for tests that walk the routes.
pub fn operations(doc: &Value) -> Vec<Doc> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS {
            if item.get(method).is_some() {
                out.push(Doc {
                    method: match method {
                        "get" => "GET",
                        "put" => "PUT",
                        "post" => "POST",
                        "delete" => "DELETE",
                        "options" => "OPTIONS",
                        "head" => "HEAD",
                        "patch" => "PATCH",
                        _ => "TRACE",
                    },
                    path: path.clone(),
                });
            }
        }
    }
    out
}

/// The document, built once.
pub fn cached(build: impl FnOnce() -> Value) -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

/// `/docs`: Swagger UI, vendored into the binary at build time (no network at build or run
/// time), reading `/openapi.json`.
pub fn viewer() -> Router<AppState> {
    // The base layout has no bar for loading other documents; no validator badge (it would
    // call an outside service).
    let config = Config::new(["/openapi.json"])
        .use_base_layout()
        .filter(true)
        .validator_url("none")
        .try_it_out_enabled(true)
        .persist_authorization(true)
        .display_operation_id(true);
    Router::from(SwaggerUi::new("/docs").config(config))
}
