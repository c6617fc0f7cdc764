//! Webhook deliveries from outside senders, and the list of triggers the server runs.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::auth::Caller;
use super::envelope::ok;
use super::error::ApiError;
use super::extract::{Body, Path};
use super::state::AppState;

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
    let mut data = serde_json::Map::new();
    let mut accepted = false;
    if let Some((run, created)) = &out.run {
        data.insert("runId".into(), json!(run.id));
        data.insert("status".into(), json!(run.status));
        data.insert("created".into(), json!(created));
        accepted |= *created;
    }
    if let Some((signal_type, correlate, o)) = &out.signal {
        data.insert(
            "signal".into(),
            super::signals::outcome(signal_type, correlate, o),
        );
        accepted |= !o.reached.is_empty() || o.buffered;
    }
    let status = if accepted {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(ok(status, Value::Object(data)))
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    let Some(triggers) = state
        .triggers
        .as_ref()
        .filter(|t| t.workspace_id() == caller.workspace_id)
    else {
        return Ok(ok(StatusCode::OK, Value::Array(out)));
    };
    for t in triggers.list() {
        let store = state.engine.store().clone();
        let (ws, name) = (triggers.workspace_id().to_string(), t.name.clone());
        let st = tokio::task::spawn_blocking(move || store.trigger_state(&ws, &name))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        let inactive = triggers.inactive_reason(&t.name);
        out.push(json!({"name": t.name, "kind": t.source.kind(), "workflow": (!t.workflow.is_empty()).then_some(&t.workflow), "signal": t.signal.as_ref().map(|s| json!({"type": s.signal_type, "startIfNone": s.start_if_none})), "enabled": t.enabled, "inactive": inactive, "label": t.label(), "state": st}));
    }
    Ok(ok(StatusCode::OK, Value::Array(out)))
}
