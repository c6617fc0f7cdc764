//! The HTTP API. `router(state)` builds it (tests call it without a socket); every route
//! is listed once in `routes()`, where the handler's `#[utoipa::path]` documents it, so
//! `/openapi.json` cannot drift. `/docs` renders that document (`openapi::viewer`).

mod agents;
mod auth;
mod bulk;
pub(crate) mod definitions;
mod envelope;
mod error;
mod extract;
mod guard;
mod history;
mod hooks;
mod mcp;
mod openapi;
mod ops;
mod origin;
pub(crate) mod runs;
pub mod schemas;
mod signals;
mod state;
pub(crate) mod triggers;
pub mod views;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;

pub use auth::{hash_key, new_key};
pub use error::ApiError;
pub use extract::MAX_BODY;
pub use openapi::Doc;
pub use origin::{Origin, parse_origins};
pub use state::AppState;

/// Every route, mounted and documented in one step: `routes!` takes handlers that carry a
/// `#[utoipa::path]` (one path per call), so a route cannot exist undocumented and its
/// documented shapes are the types the handler serializes.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(definitions::apply, definitions::list))
        .routes(utoipa_axum::routes!(definitions::get))
        .routes(utoipa_axum::routes!(runs::create, runs::list))
        .routes(utoipa_axum::routes!(runs::get, runs::delete))
        .routes(utoipa_axum::routes!(runs::cancel))
        .routes(utoipa_axum::routes!(runs::resume))
        .routes(utoipa_axum::routes!(runs::retry))
        .routes(utoipa_axum::routes!(bulk::start))
        .routes(utoipa_axum::routes!(bulk::get))
        .routes(utoipa_axum::routes!(signals::send))
        .routes(utoipa_axum::routes!(agents::workflow))
        .routes(utoipa_axum::routes!(runs::hooks))
        .routes(utoipa_axum::routes!(hooks::resume_post, hooks::resume_get))
        .routes(utoipa_axum::routes!(history::list))
        .routes(utoipa_axum::routes!(triggers::webhook))
        .routes(utoipa_axum::routes!(triggers::list))
        .routes(utoipa_axum::routes!(openapi_json))
        .routes(utoipa_axum::routes!(ops::healthz))
        .routes(utoipa_axum::routes!(ops::readyz))
        .routes(utoipa_axum::routes!(ops::metrics))
}

/// Every documented operation (method and path).
pub fn docs() -> Vec<Doc> {
    openapi::operations(openapi())
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi() -> &'static serde_json::Value {
    openapi::cached(|| openapi::document(routes().into_openapi()))
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    summary = "This document",
    tag = "meta",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object))
)]
async fn openapi_json() -> Response {
    axum::Json(openapi()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub fn router(state: AppState) -> Router {
    let (api, _) = routes().split_for_parts();
    // MCP over Streamable HTTP: a protocol endpoint of its own (docs/mcp.md), not a REST
    // route, so it is not in the OpenAPI document.
    let service = mcp::service(&state);
    let api = api.route(
        "/mcp",
        axum::routing::any(
            move |st: axum::extract::State<AppState>, req: axum::extract::Request| {
                mcp::handle(st, service.clone(), req)
            },
        ),
    );
    // The web UI (`/` and `/ui/…`): HTML pages, not part of the documented API.
    api.merge(crate::ui::routes())
        .merge(openapi::viewer())
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
