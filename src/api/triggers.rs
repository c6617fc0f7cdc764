//! Webhook deliveries from outside senders, and the list of triggers the server runs.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::envelope::ok;
use super::error::ApiError;
use super::extract::{Body, Path};
use super::schemas::{Envelope, ErrorBody};
use super::state::AppState;
use crate::model::RunStatus;

/// A webhook delivery's answer: the run it started (or started before, for a redelivery).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAccepted {
    pub run_id: String,
    pub status: RunStatus,
    /// false for a redelivery.
    pub created: bool,
}

/// A trigger the server runs, with its stored state.
#[derive(Serialize, ToSchema)]
#[schema(as = Trigger)]
pub struct TriggerView {
    pub name: String,
    /// `webhook`, `schedule` or `poll`.
    #[schema(example = "schedule")]
    pub kind: &'static str,
    /// The workflow it starts.
    pub workflow: String,
    pub enabled: bool,
    /// Why it does not fire, when it does not.
    #[schema(required = true)]
    pub inactive: Option<String>,
    pub label: String,
    /// Its stored state (next due time, cursor, last error), null before its first firing.
    #[schema(value_type = Value, required = true)]
    pub state: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{endpoint}",
    operation_id = "webhook",
    summary = "A webhook trigger: the body (validated against its schema, signature checked) starts a run; a redelivery with the same id starts none",
    tag = "triggers",
    security(()),
    params(("endpoint" = String, Path, description = "The trigger's webhook endpoint")),
    request_body(content = Option<Value>, content_type = "application/json", description = "Any body; the trigger's schema and signature decide"),
    responses(
        (status = 202, description = "A run was started", body = Envelope<WebhookAccepted>),
        (status = 200, description = "A redelivery: the run it started before", body = Envelope<WebhookAccepted>),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "The signature does not verify", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    )
)]
pub async fn webhook(
    State(state): State<AppState>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let Some(triggers) = &state.triggers else {
        return Err(ApiError::NotFound(format!("no webhook `{endpoint}`")));
    };
    let headers: HashMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let (run, created) = triggers.webhook(&endpoint, &headers, &body).await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(ok(
        status,
        WebhookAccepted {
            run_id: run.id,
            status: run.status,
            created,
        },
    ))
}

#[utoipa::path(
    get,
    path = "/v1/triggers",
    operation_id = "listTriggers",
    summary = "Triggers the server runs, with their state (next due time, cursor)",
    tag = "triggers",
    responses(
        (status = 200, description = "Triggers", body = Envelope<Vec<TriggerView>>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    let Some(triggers) = state
        .triggers
        .as_ref()
        .filter(|t| t.workspace_id() == caller.workspace_id)
    else {
        return Ok(ok(StatusCode::OK, out));
    };
    for t in triggers.list() {
        let store = state.engine.store().clone();
        let (ws, name) = (triggers.workspace_id().to_string(), t.name.clone());
        let st = tokio::task::spawn_blocking(move || store.trigger_state(&ws, &name))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        let inactive = triggers.inactive_reason(&t.name);
        out.push(TriggerView {
            name: t.name.clone(),
            kind: t.source.kind(),
            workflow: t.workflow.clone(),
            enabled: t.enabled,
            inactive,
            label: t.label(),
            state: st,
        });
    }
    Ok(ok(StatusCode::OK, out))
}
