//! Extractors that keep every malformed request in the API's own envelope: a body of the
//! wrong media type is 415, a body, path or query that does not decode is 400, and no
//! message names a Rust type.

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::ApiError;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 1024 * 1024;

/// The media types a workflow definition is uploaded as (JSON is YAML too).
pub const YAML_TYPES: [&str; 4] = [
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
];

/// The request's media type, lower-cased and without parameters (`; charset=…`).
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

/// `application/json` and its structured-syntax relatives (`application/problem+json`).
pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json"
        || media_type
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

pub fn is_yaml(media_type: &str) -> bool {
    YAML_TYPES.contains(&media_type)
        || media_type
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+yaml"))
}

/// A browser page may send `text/plain`, form types, or nothing without asking the server
/// first (a CORS "simple request"); insisting on JSON makes it ask, and we never say yes.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match media_type(headers) {
        Some(mt) if is_json(&mt) => Ok(()),
        Some(mt) => Err(ApiError::UnsupportedMediaType(format!(
            "the body is `{mt}`: send it as application/json"
        ))),
        None => Err(ApiError::UnsupportedMediaType(
            "the request has no Content-Type: send the body as application/json".into(),
        )),
    }
}

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
                        MAX_BODY
                    ))
                } else {
                    ApiError::validation(format!("cannot read the request body: {e}"), json!({}))
                }
            })
    }
}

/// The JSON body as a value; empty counts as `{}`. Syntax errors carry line and column.
async fn json_value<S: Send + Sync>(req: Request, state: &S) -> Result<Value, ApiError> {
    require_json(req.headers())?;
    let Body(bytes) = Body::from_request(req, state).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::validation(
            format!("invalid JSON: {e}"),
            json!({"line": e.line(), "column": e.column()}),
        )
    })
}

/// A JSON object body decoded into `T`; another kind of value, wrong types and unknown
/// fields become 400 naming the field.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = json_value(req, state).await?;
        if !value.is_object() {
            return Err(ApiError::field(
                "body",
                format!(
                    "the request body must be a JSON object, got {}",
                    crate::validate::schema::json_kind(&value)
                ),
            ));
        }
        decode(value).map(Json)
    }
}

/// Any JSON value as the body (a hook's payload is whatever its schema says).
pub struct AnyJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for AnyJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        json_value(req, state).await.map(AnyJson)
    }
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        let message = format!("{field}: {}", plain(&e.inner().to_string()));
        ApiError::validation(message, json!({"field": field}))
    })
}

/// serde names the Rust type it expected (`expected struct CreateBody`, `expected u64`);
/// say what the JSON should have been instead.
fn plain(message: &str) -> String {
    let Some((head, expected)) = message.split_once(", expected ") else {
        return message.to_string();
    };
    let word = expected.split_whitespace().next().unwrap_or_default();
    let json = match word {
        "struct" | "map" | "tuple" => "a JSON object",
        "enum" => "one of the allowed values",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
        | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "a" if expected.starts_with("a sequence") => "an array",
        _ => return message.to_string(),
    };
    format!("{head}, expected {json}")
}

/// A body field kept as a JSON value by its request type, checked here: a wrong type is
/// answered 400 naming the field, in words about JSON (not serde's about Rust types).
pub struct Field<'a> {
    name: &'a str,
    value: Option<Value>,
}

pub fn field(name: &str, value: Option<Value>) -> Field<'_> {
    Field { name, value }
}

impl Field<'_> {
    fn wrong(&self, what: &str) -> ApiError {
        ApiError::field(self.name, format!("{} must be {what}", self.name))
    }

    /// A non-empty string; absent or null is `None`.
    pub fn text(self) -> Result<Option<String>, ApiError> {
        match self.value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(ref s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong("a non-empty string")),
        }
    }

    /// A non-empty string that must be there.
    pub fn required_text(self) -> Result<String, ApiError> {
        let name = self.name;
        self.text()?
            .ok_or_else(|| ApiError::field(name, format!("{name} is required")))
    }

    /// A non-empty string or a number (as its text); absent or null is `None`.
    pub fn text_or_number(self) -> Result<Option<String>, ApiError> {
        match self.value {
            Some(Value::Number(ref n)) => Ok(Some(n.to_string())),
            None | Some(Value::Null) | Some(Value::String(_)) => self.text(),
            Some(_) => Err(self.wrong("a non-empty string (or a number)")),
        }
    }

    /// A JSON object; absent or null is `{}`.
    pub fn object(self) -> Result<Value, ApiError> {
        match self.value {
            None | Some(Value::Null) => Ok(json!({})),
            Some(v @ Value::Object(_)) => Ok(v),
            Some(_) => Err(self.wrong("an object")),
        }
    }

    /// A boolean; absent or null is `false`.
    pub fn flag(self) -> Result<bool, ApiError> {
        match self.value {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(_) => Err(self.wrong("a boolean")),
        }
    }
}

/// Path parameters decoded into `T`: percent-decoded text that is not UTF-8 is 400 in the
/// envelope (axum's own rejection answers plain text).
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(match e.kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => ApiError::field(
                    key,
                    format!("`{key}` in the path is not valid UTF-8 once percent-decoded"),
                ),
                ErrorKind::ParseErrorAtKey { key, value, .. }
                | ErrorKind::DeserializeError { key, value, .. } => {
                    ApiError::field(key, format!("`{value}` is not a valid `{key}`"))
                }
                other => ApiError::validation(format!("invalid path: {other}"), json!({})),
            }),
            Err(other) => Err(ApiError::Internal(other.body_text())),
        }
    }
}

/// Query parameters decoded into `T`, errors in the envelope.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(q).map(Query).map_err(|e| {
            ApiError::validation(
                format!("invalid query parameters: {}", plain(&e.to_string())),
                json!({}),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_type_names_become_json_kinds() {
        assert_eq!(
            plain("invalid type: string \"x\", expected struct CreateBody"),
            "invalid type: string \"x\", expected a JSON object"
        );
        assert_eq!(
            plain("invalid type: string \"x\", expected u64"),
            "invalid type: string \"x\", expected an integer"
        );
        assert_eq!(
            plain("unknown field `x`, expected one of `a`, `b`"),
            "unknown field `x`, expected one of `a`, `b`"
        );
    }

    #[test]
    fn fields_name_themselves_when_wrong() {
        fn msg<T>(r: Result<T, ApiError>) -> String {
            match r {
                Err(ApiError::Validation { message, .. }) => message,
                _ => String::new(),
            }
        }
        assert_eq!(field("a", None).text().ok(), Some(None));
        assert_eq!(
            msg(field("a", Some(json!(""))).text()),
            "a must be a non-empty string"
        );
        assert_eq!(msg(field("a", None).required_text()), "a is required");
        assert_eq!(
            field("c", Some(json!(42))).text_or_number().ok(),
            Some(Some("42".into()))
        );
        assert_eq!(field("p", Some(Value::Null)).object().ok(), Some(json!({})));
        assert_eq!(
            msg(field("p", Some(json!([1]))).object()),
            "p must be an object"
        );
        assert_eq!(
            msg(field("d", Some(json!("yes"))).flag()),
            "d must be a boolean"
        );
    }

    #[test]
    fn json_and_yaml_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain+json"));
        assert!(!is_json("text/plain"));
        assert!(is_yaml("text/x-yaml"));
        assert!(!is_yaml("text/plain"));
    }
}
