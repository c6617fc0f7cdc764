//! The API's error type: every failure leaves in the seeds' envelope
//! `{"success": false, "error": {"code", "message", "details"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::schemas::{ErrorBody, ErrorDetail, False};
use crate::engine::EngineError;

#[derive(Debug)]
pub enum ApiError {
    Validation {
        message: String,
        details: Value,
    },
    Auth(String),
    /// A browser request from an origin this server does not trust.
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    /// A hook whose step no longer waits for it.
    Gone(String),
    TooLarge(String),
    UnsupportedMediaType(String),
    MethodNotAllowed,
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    /// Every code `code` answers: the error envelope's schema lists them.
    pub const CODES: [&'static str; 11] = [
        "VALIDATION_ERROR",
        "AUTH_ERROR",
        "FORBIDDEN",
        "NOT_FOUND",
        "CONFLICT",
        "GONE",
        "PAYLOAD_TOO_LARGE",
        "UNSUPPORTED_MEDIA_TYPE",
        "METHOD_NOT_ALLOWED",
        "UNAVAILABLE",
        "INTERNAL_ERROR",
    ];

    pub fn validation(message: impl Into<String>, details: Value) -> Self {
        ApiError::Validation {
            message: message.into(),
            details,
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::validation(message, json!({"field": field}))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } => StatusCode::BAD_REQUEST,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "VALIDATION_ERROR",
            ApiError::Auth(_) => "AUTH_ERROR",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::Gone(_) => "GONE",
            ApiError::TooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Validation { message, .. } => message.clone(),
            ApiError::Auth(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Gone(m)
            | ApiError::TooLarge(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::Unavailable(m) => m.clone(),
            ApiError::MethodNotAllowed => "this method is not allowed on this path".into(),
            // The cause is logged; clients get a generic message.
            ApiError::Internal(_) => "internal error".into(),
        }
    }

    /// The envelope as a typed value (its schema is the document's `Error`).
    pub fn envelope(&self) -> ErrorBody {
        let details = match self {
            ApiError::Validation { details, .. } => details.clone(),
            _ => Value::Null,
        };
        ErrorBody {
            success: False,
            error: ErrorDetail {
                code: self.code(),
                message: self.message(),
                details,
            },
        }
    }

    pub fn body(&self) -> Value {
        serde_json::to_value(self.envelope()).unwrap_or(Value::Null)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!("internal error: {cause}");
        }
        (self.status(), axum::Json(self.envelope())).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(m) => ApiError::NotFound(m),
            EngineError::Validation { message, details } => {
                ApiError::Validation { message, details }
            }
            EngineError::Conflict(m) => ApiError::Conflict(m),
            EngineError::Gone(m) => ApiError::Gone(m),
            EngineError::Unauthorized(m) => ApiError::Auth(m),
            EngineError::Unavailable(m) => ApiError::Unavailable(m),
            e @ EngineError::HeldElsewhere(_) => ApiError::Unavailable(e.to_string()),
            EngineError::ShuttingDown => {
                ApiError::Unavailable("the server is shutting down".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed() {
        let all = [
            ApiError::validation("", Value::Null),
            ApiError::Auth(String::new()),
            ApiError::Forbidden(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::Conflict(String::new()),
            ApiError::Gone(String::new()),
            ApiError::TooLarge(String::new()),
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::Unavailable(String::new()),
            ApiError::Internal(String::new()),
        ];
        let codes: Vec<&str> = all.iter().map(ApiError::code).collect();
        assert_eq!(codes, ApiError::CODES);
    }
}
