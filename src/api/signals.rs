//! `POST /v1/signals`: deliver a signal by type and correlation value to every run waiting
//! for it, without knowing their ids.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::envelope::ok;
use super::error::ApiError;
use super::extract::{Json, field};
use super::schemas::{Envelope, ErrorBody};
use super::state::AppState;
use super::views::RunView;
use crate::engine::{MAX_DELIVERY_ID, SendSignal, SignalOutcome};

/// Fields are read as JSON values so that a wrong type is answered with the field's name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = SendSignal, example = json!({"signalType": "payment.confirmed", "correlate": "order-42", "payload": {"amount": 120}, "idempotencyKey": "evt_1042"}))]
pub struct SignalBody {
    #[schema(value_type = String, min_length = 1, max_length = 128, required = true, nullable = false)]
    signal_type: Option<Value>,
    /// Compared with the rendered `correlate` of waiting external_event steps (a string or a number).
    #[schema(value_type = String, required = true, nullable = false)]
    correlate: Option<Value>,
    /// Validated against each reached step's schema (defaults to {}).
    #[schema(value_type = Object, required = false)]
    payload: Option<Value>,
    /// Deliver this signal once: the same key again (within 7 days) delivers nothing and
    /// answers what the first did, with `duplicate: true`.
    #[schema(value_type = String, min_length = 1, max_length = 251, required = false)]
    idempotency_key: Option<Value>,
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
    /// A delivery handled before (the same `Idempotency-Key`, or a webhook's redelivery):
    /// nothing was delivered again; `reached` lists the runs the first delivery reached.
    pub duplicate: bool,
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
    let signal_type = field("signalType", body.signal_type).required_text()?;
    let correlate = field("correlate", body.correlate)
        .text_or_number()?
        .ok_or_else(|| ApiError::field("correlate", "correlate is required"))?;
    let payload = field("payload", body.payload).object()?;
    let delivery = field("idempotencyKey", body.idempotency_key)
        .text()?
        .map(|k| {
            if k.chars().count() > MAX_DELIVERY_ID - 4 {
                return Err(ApiError::field(
                    "idempotencyKey",
                    format!(
                        "idempotencyKey must be at most {} characters",
                        MAX_DELIVERY_ID - 4
                    ),
                ));
            }
            Ok(format!("api:{k}"))
        })
        .transpose()?;
    let out = state
        .engine
        .signal(SendSignal {
            workspace_id: caller.workspace_id.clone(),
            signal_type: signal_type.clone(),
            correlate: correlate.clone(),
            payload,
            via: caller.actor.clone(),
            start: None,
            delivery,
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
        duplicate: out.duplicate,
    }
}
