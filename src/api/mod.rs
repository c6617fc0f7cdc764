//! The HTTP API. `router(state)` builds it (tests call it without a socket); every route
//! is listed once in `routes()`, with its documentation, so `/openapi.json` cannot drift.

mod auth;
mod definitions;
mod envelope;
mod error;
mod extract;
mod guard;
mod history;
mod hooks;
mod openapi;
mod origin;
mod runs;
mod signals;
mod state;
mod triggers;
mod views;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::json;

pub use auth::{hash_key, new_key};
pub use error::ApiError;
pub use extract::MAX_BODY;
pub use openapi::Doc;
pub use origin::{Origin, parse_origins};
pub use state::AppState;

const WAIT: (&str, &str, &str) = (
    "wait",
    "Hold the request until the run is COMPLETED, FAILED, CANCELLED, PAUSED or WAITING, or this long passes (e.g. 30s, at most 5m).",
    r#"{"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d)?)+$"}"#,
);
const E400: (u16, &str, &str) = (400, "Invalid request", "");
const E401: (u16, &str, &str) = (401, "Missing or invalid API key", "");
const E404: (u16, &str, &str) = (404, "Not found", "");
const E409: (u16, &str, &str) = (409, "The run is not in a state that allows this", "");

fn routes() -> Vec<(Doc, MethodRouter<AppState>)> {
    vec![
        (
            Doc {
                method: "POST",
                path: "/v1/workflow-definitions",
                operation_id: "applyDefinition",
                summary: "Lint and store a workflow definition (YAML or JSON); the same text again returns the stored version",
                tag: "definitions",
                auth: true,
                query: &[],
                body: Some("yaml"),
                responses: &[
                    (201, "A new version", "Definition"),
                    (200, "This exact version exists", "Definition"),
                    E400,
                    E401,
                    (413, "Body too large", ""),
                ],
            },
            post(definitions::apply),
        ),
        (
            Doc {
                method: "GET",
                path: "/v1/workflow-definitions",
                operation_id: "listDefinitions",
                summary: "The latest version of every definition",
                tag: "definitions",
                auth: true,
                query: &[],
                body: None,
                responses: &[(200, "Definitions", "Definition[]"), E401],
            },
            get(definitions::list),
        ),
        (
            Doc {
                method: "GET",
                path: "/v1/workflow-definitions/{id}",
                operation_id: "getDefinition",
                summary: "A definition (by slug: its latest version; or an exact wfdef_ id) with all its versions",
                tag: "definitions",
                auth: true,
                query: &[],
                body: None,
                responses: &[(200, "The definition", "Definition"), E401, E404],
            },
            get(definitions::get),
        ),
        (
            Doc {
                method: "POST",
                path: "/v1/workflow-runs",
                operation_id: "createRun",
                summary: "Start a run; an idempotencyKey already used returns the existing run",
                tag: "runs",
                auth: true,
                query: &[WAIT],
                body: Some("CreateRun"),
                responses: &[
                    (201, "Created", "Run"),
                    (200, "The run with this idempotency key", "Run"),
                    E400,
                    E401,
                    E404,
                    (413, "Body too large", ""),
                ],
            },
            post(runs::create),
        ),
        (
            Doc {
                method: "GET",
                path: "/v1/workflow-runs",
                operation_id: "listRuns",
                summary: "Runs of the workspace, newest first",
                tag: "runs",
                auth: true,
                query: &[
                    (
                        "page",
                        "Page number (min 1)",
                        r#"{"type": "integer", "minimum": 1, "default": 1}"#,
                    ),
                    (
                        "pageSize",
                        "Results per page (1-100)",
                        r#"{"type": "integer", "minimum": 1, "maximum": 100, "default": 20}"#,
                    ),
                    (
                        "status",
                        "Filter by status",
                        r#"{"type": "string", "enum": ["PENDING", "RUNNING", "WAITING", "PAUSED", "COMPLETED", "FAILED", "CANCELLED"]}"#,
                    ),
                    (
                        "definitionId",
                        "Filter by definition (slug or wfdef_ id)",
                        r#"{"type": "string"}"#,
                    ),
                    (
                        "from",
                        "Created at or after (RFC 3339)",
                        r#"{"type": "string", "format": "date-time"}"#,
                    ),
                    (
                        "to",
                        "Created before (RFC 3339)",
                        r#"{"type": "string", "format": "date-time"}"#,
                    ),
                ],
                body: None,
                responses: &[(200, "A page of runs", "Run[]"), E400, E401],
            },
            get(runs::list),
        ),
        (
            Doc {
                method: "GET",
                path: "/v1/workflow-runs/{id}",
                operation_id: "getRun",
                summary: "A run with its steps, pending action and trigger",
                tag: "runs",
                auth: true,
                query: &[
                    WAIT,
                    (
                        "include",
                        "Comma-separated: trigger, steps, trace, usage",
                        r#"{"type": "string"}"#,
                    ),
                ],
                body: None,
                responses: &[(200, "The run", "Run"), E400, E401, E404],
            },
            get(runs::get),
        ),
        (
            Doc {
                method: "DELETE",
                path: "/v1/workflow-runs/{id}",
                operation_id: "deleteRun",
                summary: "Cancel a run (seed 003's DELETE)",
                tag: "runs",
                auth: true,
                query: &[],
                body: None,
                responses: &[(200, "Cancelled", "Run"), E401, E404, E409],
            },
            delete(runs::cancel),
        ),
        (
            Doc {
                method: "POST",
                path: "/v1/workflow-runs/{id}/cancel",
                operation_id: "cancelRun",
                summary: "Cancel a PENDING, RUNNING, WAITING or PAUSED run",
                tag: "runs",
                auth: true,
                query: &[],
                body: None,
                responses: &[(200, "Cancelled", "Run"), E401, E404, E409],
            },
            post(runs::cancel),
        ),
        (
            Doc {
                method: "POST",
                path: "/v1/workflow-runs/{id}/resume",
                operation_id: "resumeRun",
                summary: "Deliver a signal to a WAITING run, or a decision to a PAUSED approval",
                tag: "runs",
                auth: true,
                query: &[],
                body: Some("Resume"),
                responses: &[(200, "Resumed", "Run"), E400, E401, E404, E409],
            },
            post(runs::resume),
        ),
        (
            Doc {
                method: "POST",
                path: "/v1/workflow-runs/{id}/retry",
                operation_id: "retryRun",
                summary: "Retry a FAILED run from the failed step, keeping earlier outputs",
                tag: "runs",
                auth: true,
                query: &[],
                body: None,
                responses: &[(200, "Running again", "Run"), E401, E404, E409],
            },
            post(runs::retry),
        ),
        (
            Doc {
                method: "GET",
                path: "/v1/workflow-runs/{id}/hooks",
                operation_id: "listRunHooks",
                summary: "Pending hooks of a run, with their tokens and resume URLs",
                tag: "hooks",
                auth: true,
                query: &[(
                    "all",
                    "Also list resumed and closed hooks",
                    r#"{"type": "boolean"}"#,
                )],
                body: None,
                responses: &[(200, "Hooks", "Hook[]"), E401, E404],
            },
            get(runs::hooks),
        ),
        (
            Doc {
                method: "POST",
                path: "/v1/signals",
                operation_id: "sendSignal",
                summary: "Deliver a signal to every run whose external_event step waits for this signalType and correlate value; with none waiting it is kept for steps with `buffer`",
                tag: "runs",
                auth: true,
                query: &[],
                body: Some("SendSignal"),
                responses: &[(200, "The runs it reached", "SignalResult"), E400, E401],
            },
            post(signals::send),
        ),
        (
            Doc {
                method: "POST",
                path: "/v1/hooks/{token}/resume",
                operation_id: "resumeHook",
                summary: "Resume a suspended run with its hook token (no API key): the JSON body is the step's value",
                tag: "hooks",
                auth: false,
                query: &[],
                body: Some("json"),
                responses: &[
                    (202, "Accepted", "HookAccepted"),
                    E400,
                    E404,
                    (409, "The hook was already used", ""),
                    (410, "The hook expired: its step no longer waits", ""),
                ],
            },
            post(hooks::resume_post),
        ),
        (
            Doc {
                method: "GET",
                path: "/v1/hooks/{token}/resume",
                operation_id: "resumeHookLink",
                summary: "Resume with query parameters (a shallow payload, coerced to the schema's types); answers an HTML page",
                tag: "hooks",
                auth: false,
                query: &[],
                body: None,
                responses: &[
                    (200, "Recorded", "html"),
                    (
                        400,
                        "A value does not fit the schema; the run stays suspended",
                        "html",
                    ),
                    (404, "Unknown token", "html"),
                    (409, "Already used", "html"),
                    (410, "Expired", "html"),
                ],
            },
            get(hooks::resume_get),
        ),
        (
            Doc {
                method: "GET",
                path: "/v1/history",
                operation_id: "history",
                summary: "Run history across workflows (seed 002): filter by kind, status, definition and time",
                tag: "history",
                auth: true,
                query: &[
                    (
                        "kind",
                        "Only `workflow` is recorded",
                        r#"{"type": "string", "enum": ["workflow"]}"#,
                    ),
                    (
                        "status",
                        "Filter by status (any case)",
                        r#"{"type": "string"}"#,
                    ),
                    (
                        "definitionId",
                        "Filter by definition (slug or wfdef_ id)",
                        r#"{"type": "string"}"#,
                    ),
                    (
                        "from",
                        "Created at or after (RFC 3339)",
                        r#"{"type": "string", "format": "date-time"}"#,
                    ),
                    (
                        "to",
                        "Created before (RFC 3339)",
                        r#"{"type": "string", "format": "date-time"}"#,
                    ),
                    (
                        "page",
                        "Page number (min 1)",
                        r#"{"type": "integer", "minimum": 1}"#,
                    ),
                    (
                        "pageSize",
                        "Results per page (1-100)",
                        r#"{"type": "integer", "minimum": 1, "maximum": 100}"#,
                    ),
                ],
                body: None,
                responses: &[(200, "A page of runs", "Run[]"), E400, E401],
            },
            get(history::list),
        ),
        (
            Doc {
                method: "POST",
                path: "/v1/webhooks/{endpoint}",
                operation_id: "webhook",
                summary: "A webhook trigger: the body (validated against its schema, signature checked) starts a run; a redelivery with the same id starts none. A trigger with `signal` delivers it by correlation value (`data.signal`, as POST /v1/signals answers), starting a run only with `start_if_none` when none waits",
                tag: "triggers",
                auth: false,
                query: &[],
                body: Some("any"),
                responses: &[
                    (
                        202,
                        "A run was started, or the signal reached a run or was buffered",
                        "HookAccepted",
                    ),
                    (
                        200,
                        "A redelivery: the run it started before",
                        "HookAccepted",
                    ),
                    E400,
                    E401,
                    E404,
                ],
            },
            post(triggers::webhook),
        ),
        (
            Doc {
                method: "GET",
                path: "/v1/triggers",
                operation_id: "listTriggers",
                summary: "Triggers the server runs, with their state (next due time, cursor)",
                tag: "triggers",
                auth: true,
                query: &[],
                body: None,
                responses: &[(200, "Triggers", ""), E401],
            },
            get(triggers::list),
        ),
        (
            Doc {
                method: "GET",
                path: "/openapi.json",
                operation_id: "openapi",
                summary: "This document",
                tag: "meta",
                auth: false,
                query: &[],
                body: None,
                responses: &[(200, "OpenAPI 3.1", "openapi")],
            },
            get(openapi_json),
        ),
        (
            Doc {
                method: "GET",
                path: "/healthz",
                operation_id: "health",
                summary: "Liveness and store check",
                tag: "meta",
                auth: false,
                query: &[],
                body: None,
                responses: &[
                    (200, "Healthy", "health"),
                    (
                        503,
                        "The store cannot be read, or refuses commits (changes answer 503 until it recovers)",
                        "",
                    ),
                ],
            },
            get(healthz),
        ),
    ]
}

/// The documentation of every route.
pub fn docs() -> Vec<Doc> {
    routes().into_iter().map(|(d, _)| d).collect()
}

pub fn openapi() -> serde_json::Value {
    openapi::document(&docs())
}

async fn openapi_json() -> Response {
    axum::Json(openapi()).into_response()
}

async fn healthz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let store = state.engine.store().clone();
    match tokio::task::spawn_blocking(move || store.run("wfrun_00000000000000000000000000000000"))
        .await
    {
        Ok(Ok(_)) => match state.engine.store_error() {
            None => axum::Json(json!({"status": "ok"})).into_response(),
            Some(e) => ApiError::Unavailable(format!("{e}; reads still work")).into_response(),
        },
        _ => ApiError::Unavailable("the store cannot be read".into()).into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub fn router(state: AppState) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for (doc, handler) in routes() {
        match by_path.iter_mut().find(|(p, _)| *p == doc.path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(handler),
            None => by_path.push((doc.path, handler)),
        }
    }
    let mut router = Router::new();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check_origin,
        ))
        .with_state(state)
}

/// Is this a loopback address (where `--insecure-no-auth` may listen)?
pub fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}

pub fn status_of(e: &ApiError) -> StatusCode {
    e.status()
}
