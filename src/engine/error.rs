//! Errors of engine calls.

use serde_json::Value;

use crate::store::StoreError;

/// Errors of engine calls; the API maps them to status codes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// 404: unknown (or another workspace's) run, definition or hook.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request is wrong; `details` says where.
    #[error("{message}")]
    Validation { message: String, details: Value },
    /// 409: the run is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// 410: a hook whose step no longer waits for it (the run ended, or the wait timed out).
    #[error("{0}")]
    Gone(String),
    /// 401: a webhook signature or credential does not match.
    #[error("{0}")]
    Unauthorized(String),
    /// 503: the store refuses commits; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// 503 if it reaches a caller: the run is executed by another process right now (a
    /// shared store). The scheduler forwards the command through the inbox instead.
    #[error(
        "run `{0}` is being executed by another stepwise process; nothing was changed, try again"
    )]
    HeldElsewhere(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn validation(message: impl Into<String>, details: Value) -> Self {
        EngineError::Validation {
            message: message.into(),
            details,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
