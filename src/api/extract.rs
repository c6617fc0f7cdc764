//! Extractors that keep every malformed request in the API's own envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ApiError;

/// The raw body, with a size-limit failure as 413 in the envelope.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(format!(
                        "the request body is larger than {} bytes",
                        super::MAX_BODY
                    ))
                } else {
                    ApiError::validation(format!("cannot read the request body: {e}"), json!({}))
                }
            })
    }
}

/// A JSON body decoded into `T`; syntax errors, wrong types and unknown fields become 400
/// with the line, column or field in the message.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| {
                let ct = ct
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase();
                ct == "application/json" || ct.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as application/json".into(),
            ));
        }
        let Body(bytes) = Body::from_request(req, state).await?;
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"{}")
        } else {
            bytes
        };
        decode(&bytes).map(Json)
    }
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    match result {
        Ok(v) => {
            de.end().map_err(|e| {
                ApiError::validation(
                    format!("invalid JSON: {e}"),
                    json!({"line": e.line(), "column": e.column()}),
                )
            })?;
            Ok(v)
        }
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::validation(
                    format!("invalid JSON: {inner}"),
                    json!({"line": inner.line(), "column": inner.column()}),
                ))
            } else {
                let field = if path == "." { String::new() } else { path };
                let message = if field.is_empty() {
                    inner.to_string()
                } else {
                    format!("{field}: {inner}")
                };
                Err(ApiError::validation(message, json!({"field": field})))
            }
        }
    }
}

/// Query parameters decoded into `T`, errors in the envelope.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(q)
            .map(Query)
            .map_err(|e| ApiError::validation(format!("invalid query parameters: {e}"), json!({})))
    }
}
