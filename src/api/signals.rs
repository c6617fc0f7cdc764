//! `POST /v1/signals`: deliver a signal by type and correlation value to every run waiting
//! for it, without knowing their ids.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::auth::Caller;
use super::envelope::ok;
use super::error::ApiError;
use super::extract::Json;
use super::schemas::{Envelope, ErrorBody};
use super::state::AppState;
use super::views::RunView;
use crate::engine::{SendSignal, SignalOutcome};

/// Fields are read as JSON values so that a wrong type is answered with the field's name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = SendSignal, example = json!({"signalType": "payment.confirmed", "correlate": "order-42", "payload": {"amount": 120}}))]
pub struct SignalBody {
    #[schema(value_type = String, min_length = 1, max_length = 128, required = true, nullable = false)]
    signal_type: Option<Value>,
    /// Compared with the rendered `correlate` of waiting external_event steps (a string or a number).
    #[schema(value_type = String, required = true, nullable = false)]
    correlate: Option<Value>,
    /// Validated against each reached step's schema (defaults to {}).
    #[schema(value_type = Object, required = false)]
    payload: Option<Value>,
}

/// The runs a signal reached.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SignalResult)]
pub struct SignalResult {
    pub signal_type: String,
    pub correlate: String,
    pub reached: Vec<RunView>,
    /// No step waited; the signal is kept for a step with `buffer` that starts later.
    pub buffered: bool,
}

#[utoipa::path(
    post,
    path = "/v1/signals",
    operation_id = "sendSignal",
    summary = "Deliver a signal to every run whose external_event step waits for this signalType and correlate value; with none waiting it is kept for steps with `buffer`",
    tag = "runs",
    request_body = SignalBody,
    responses(
        (status = 200, description = "The runs it reached", body = Envelope<SignalResult>),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
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
pub fn outcome(signal_type: &str, correlate: &str, out: &SignalOutcome) -> SignalResult {
    SignalResult {
        signal_type: signal_type.to_string(),
        correlate: correlate.to_string(),
        reached: out.reached.iter().map(RunView::new).collect(),
        buffered: out.buffered,
    }
}
