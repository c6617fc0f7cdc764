//! Operations: `/healthz` (the process is alive), `/readyz` (it can serve: store readable,
//! schema current, commits accepted) and `/metrics` (Prometheus text format).

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::ApiError;
use super::schemas::ErrorBody;
use super::state::AppState;
use crate::store::DEFAULT_WORKSPACE;

/// How long the scheduler may take to answer before the process counts as stuck.
const SCHEDULER_ANSWER: Duration = Duration::from_secs(5);

/// `/healthz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
    /// `ok`, or why the store refuses commits (reads still work).
    store: String,
}

/// `/readyz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health",
    summary = "Liveness: the process and its scheduler answer (a store outage is reported in `store`, not failed: see /readyz)",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "Alive", body = Health),
        (status = 503, description = "The scheduler does not answer", body = ErrorBody),
    )
)]
/// Liveness: the scheduler answers. A store outage is reported but does not fail it, since
/// restarting the process would not bring the store back (`/readyz` fails instead).
pub async fn healthz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(SCHEDULER_ANSWER, state.engine.stats()).await {
        Ok(Ok(_)) => {
            let store = state
                .engine
                .store_error()
                .map_or_else(|| "ok".to_string(), |e| format!("{e}; reads still work"));
            axum::Json(Health {
                status: "ok",
                store,
            })
            .into_response()
        }
        Ok(Err(_)) => ApiError::Unavailable("the scheduler stopped".into()).into_response(),
        Err(_) => ApiError::Unavailable(format!(
            "the scheduler did not answer within {}s",
            SCHEDULER_ANSWER.as_secs()
        ))
        .into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "ready",
    summary = "Readiness: the store is readable, its migrations are done, and it accepts commits",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "The store cannot be read, its schema is not current, or it refuses commits (changes answer 503 until it recovers)", body = ErrorBody),
    )
)]
/// Readiness: the store is readable with the expected schema, and takes commits.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.engine.store().clone();
    match tokio::task::spawn_blocking(move || store.ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return ApiError::Unavailable(format!("the store is not ready: {e}")).into_response();
        }
        Err(_) => return ApiError::Unavailable("the store check failed".into()).into_response(),
    }
    if let Some(e) = state.engine.store_error() {
        return ApiError::Unavailable(format!("{e}; reads still work")).into_response();
    }
    match tokio::time::timeout(SCHEDULER_ANSWER, state.engine.stats()).await {
        Ok(Ok(_)) => axum::Json(Ready { status: "ready" }).into_response(),
        _ => ApiError::Unavailable("the scheduler does not answer".into()).into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics (text format 0.0.4) of every workspace: an API key of the default workspace, or none with --metrics-public",
    tag = "meta",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "A key of another workspace than the default", body = ErrorBody),
    )
)]
/// The metrics of every workspace: open with `--metrics-public` (or without auth);
/// otherwise an API key of the default (operator's) workspace, since the labels name the
/// workflows of all workspaces.
pub async fn metrics(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<Response, ApiError> {
    if !state.metrics_public && !state.insecure_no_auth {
        let caller = caller?;
        if caller.workspace_id != DEFAULT_WORKSPACE {
            return Err(ApiError::Forbidden(
                "/metrics covers every workspace: use a key of the default workspace, or start the server with --metrics-public".into(),
            ));
        }
    }
    let engine = state.engine.clone();
    let store = engine.store().clone();
    let now = engine.now_for_history();
    let gauges = match tokio::task::spawn_blocking(move || store.gauges(now)).await {
        Ok(Ok(g)) => g,
        // The counters are still worth scraping; `stepwise_store_up` says what is wrong.
        _ => crate::metrics::StoredGauges::default(),
    };
    let active = match tokio::time::timeout(SCHEDULER_ANSWER, engine.stats()).await {
        Ok(Ok(s)) => s.active_runs,
        _ => 0,
    };
    let text = engine
        .metrics()
        .render(&gauges, active, engine.store_error().is_none());
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}
