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

/// A webhook delivery's answer: the run it started (or started before, for a redelivery),
/// and for a trigger that delivers a signal, the runs the signal reached.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAccepted {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// false for a redelivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<super::signals::SignalResult>,
}

/// The signal a webhook trigger delivers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSignal {
    #[serde(rename = "type")]
    pub signal_type: String,
    pub start_if_none: bool,
}

/// A trigger the server runs, with its stored state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Trigger)]
pub struct TriggerView {
    pub name: String,
    /// `webhook`, `schedule` or `poll`.
    #[schema(example = "schedule")]
    pub kind: &'static str,
    /// The workflow it starts (null for a trigger that only delivers a signal).
    #[schema(required = true)]
    pub workflow: Option<String>,
    /// The signal it delivers by correlation value, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<TriggerSignal>,
    pub enabled: bool,
    /// Why it does not fire, when it does not.
    #[schema(required = true)]
    pub inactive: Option<String>,
    pub label: String,
    /// When it fires next: a schedule's next due time, a poll's next poll (null for webhooks).
    #[schema(format = DateTime, required = true)]
    pub next_firing: Option<String>,
    /// When it fired last: a schedule's last due time, a poll's last poll, a webhook's last
    /// accepted delivery.
    #[schema(format = DateTime, required = true)]
    pub last_firing: Option<String>,
    /// Why its last firing failed (a webhook: its last refused delivery).
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub last_error_at: Option<String>,
    /// Its stored state (next due time, cursor, last error), null before its first firing.
    #[schema(value_type = Value, required = true)]
    pub state: Option<Value>,
}

/// The triggers the server runs for this workspace, with their state: `GET /v1/triggers`
/// answers it and the web UI's Triggers page renders it.
pub async fn views(state: &AppState, workspace_id: &str) -> Result<Vec<TriggerView>, ApiError> {
    let mut out = Vec::new();
    let Some(triggers) = state
        .triggers
        .as_ref()
        .filter(|t| t.workspace_id() == workspace_id)
    else {
        return Ok(out);
    };
    for t in triggers.list() {
        let store = state.engine.store().clone();
        let (ws, name) = (triggers.workspace_id().to_string(), t.name.clone());
        let st = tokio::task::spawn_blocking(move || store.trigger_state(&ws, &name))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        let status = crate::triggers::Status::of(&t.source, st.as_ref());
        out.push(TriggerView {
            name: t.name.clone(),
            kind: t.source.kind(),
            workflow: (!t.workflow.is_empty()).then(|| t.workflow.clone()),
            signal: t.signal.as_ref().map(|s| TriggerSignal {
                signal_type: s.signal_type.clone(),
                start_if_none: s.start_if_none,
            }),
            enabled: t.enabled,
            inactive: triggers.inactive_reason(&t.name),
            label: t.label(),
            next_firing: status.next_firing,
            last_firing: status.last_firing,
            last_error: status.last_error,
            last_error_at: status.last_error_at,
            state: st,
        });
    }
    Ok(out)
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{endpoint}",
    operation_id = "webhook",
    summary = "A webhook trigger: the body (validated against its schema, signature checked) starts a run; a redelivery with the same id starts none. A trigger with `signal` delivers it by correlation value (`data.signal`, as POST /v1/signals answers), starting a run only with `start_if_none` when none waits; a redelivery (same delivery id, or the same body when the trigger names none) delivers nothing again",
    tag = "triggers",
    security(()),
    params(("endpoint" = String, Path, description = "The trigger's webhook endpoint")),
    request_body(content = Option<Value>, content_type = "application/json", description = "Any body; the trigger's schema and signature decide"),
    responses(
        (status = 202, description = "A run was started, or the signal reached a run or was buffered", body = Envelope<WebhookAccepted>),
        (status = 200, description = "A redelivery: the run it started before, or what its signal did the first time (`signal.duplicate`); or a signal that reached nothing", body = Envelope<WebhookAccepted>),
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
    let out = triggers.webhook(&endpoint, &headers, &body).await?;
    let mut answer = WebhookAccepted {
        run_id: None,
        status: None,
        created: None,
        signal: None,
    };
    let mut accepted = false;
    if let Some((run, created)) = out.run {
        answer.run_id = Some(run.id);
        answer.status = Some(run.status);
        answer.created = Some(created);
        accepted |= created;
    }
    if let Some((signal_type, correlate, o)) = &out.signal {
        accepted |= !o.duplicate && (!o.reached.is_empty() || o.buffered);
        answer.signal = Some(super::signals::outcome(signal_type, correlate, o));
    }
    let status = if accepted {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(ok(status, answer))
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
    Ok(ok(
        StatusCode::OK,
        views(&state, &caller.workspace_id).await?,
    ))
}
