//! `POST /v1/signals`: deliver a signal by type and correlation value to every run waiting
//! for it, without knowing their ids.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::envelope::ok;
use super::error::ApiError;
use super::extract::Json;
use super::state::AppState;
use super::views;
use crate::engine::{SendSignal, SignalOutcome};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignalBody {
    signal_type: Option<Value>,
    correlate: Option<Value>,
    payload: Option<Value>,
}

pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<SignalBody>,
) -> Result<Response, ApiError> {
    let signal_type = match body.signal_type {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(_) => {
            return Err(ApiError::field(
                "signalType",
                "signalType must be a non-empty string",
            ));
        }
        None => return Err(ApiError::field("signalType", "signalType is required")),
    };
    let correlate = match body.correlate {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(ApiError::field(
                "correlate",
                "correlate must be a non-empty string (or a number)",
            ));
        }
        None => return Err(ApiError::field("correlate", "correlate is required")),
    };
    let payload = match body.payload {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p,
        Some(_) => return Err(ApiError::field("payload", "payload must be an object")),
    };
    let out = state
        .engine
        .signal(SendSignal {
            workspace_id: caller.workspace_id.clone(),
            signal_type: signal_type.clone(),
            correlate: correlate.clone(),
            payload,
            via: caller.actor.clone(),
            start: None,
        })
        .await?;
    Ok(ok(StatusCode::OK, outcome(&signal_type, &correlate, &out)))
}

/// The answer's shape, shared with webhook triggers that deliver signals.
pub fn outcome(signal_type: &str, correlate: &str, out: &SignalOutcome) -> Value {
    json!({
        "signalType": signal_type,
        "correlate": correlate,
        "reached": out.reached.iter().map(|r| Value::Object(views::run(r))).collect::<Vec<_>>(),
        "buffered": out.buffered,
    })
}
