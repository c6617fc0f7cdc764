//! The `http` action.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{StepError, Success};
use crate::builtins::{self, HTTP_METHODS};
use crate::http_client::{BodyError, DEFAULT_MAX_BODY, error_chain, read_body_limited};

/// Arguments after rendering.
pub struct HttpCall<'a> {
    pub with: &'a Map<String, Value>,
    /// Derived from run and step: the same on every attempt, so receivers can deduplicate.
    pub idempotency_key: &'a str,
    pub timeout: Duration,
}

pub async fn run(client: &reqwest::Client, call: HttpCall<'_>) -> Result<Success, StepError> {
    let with = call.with;
    let method = with
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
        .to_ascii_uppercase();
    if !HTTP_METHODS.contains(&method.as_str()) {
        return Err(StepError::permanent(
            "http_request",
            format!("`{method}` is not an HTTP method"),
        ));
    }
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| StepError::permanent("http_request", e.to_string()))?;
    let url = match with.get("url") {
        Some(Value::String(u)) => u.clone(),
        Some(other) => {
            return Err(StepError::permanent(
                "http_request",
                format!("`url` must be a string, got {other}"),
            ));
        }
        None => return Err(StepError::permanent("http_request", "`url` is missing")),
    };
    let limit = match with.get("max_response_bytes") {
        None => DEFAULT_MAX_BODY,
        Some(v) => builtins::max_response_bytes(v).ok_or_else(|| {
            StepError::permanent(
                "http_request",
                format!("{}, got {v}", builtins::max_response_bytes_rule()),
            )
        })?,
    };
    let mut req = client
        .request(method, &url)
        .timeout(call.timeout)
        .header("Idempotency-Key", call.idempotency_key);
    if let Some(Value::Object(headers)) = with.get("headers") {
        for (k, v) in headers {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            req = req.header(k.as_str(), v);
        }
    }
    if let Some(body) = with.get("json") {
        req = req.json(body);
    } else if let Some(body) = with.get("body") {
        let text = match body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        req = req.body(text);
    }
    let resp = req.send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            "timeout"
        } else {
            "http_request"
        };
        StepError::new(kind, format!("{url}: {}", error_chain(&e)))
    })?;
    let status = resp.status().as_u16();
    let mut headers = Map::new();
    for (k, v) in resp.headers() {
        headers.insert(
            k.as_str().to_string(),
            Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    let expected = match with.get("expect_status") {
        Some(Value::Number(n)) => n.as_u64().is_some_and(|n| n == u64::from(status)),
        Some(Value::Array(list)) => list.iter().any(|n| n.as_u64() == Some(u64::from(status))),
        _ => (200..300).contains(&status),
    };
    // 4xx other than 408/429 will not change on retry; 5xx, 408 and 429 may.
    let status_error = |message: String, output: Value| StepError {
        kind: "http_status",
        message,
        retryable: status >= 500 || status == 408 || status == 429,
        details: Some(output),
    };
    let bytes = match read_body_limited(resp, limit).await {
        Ok(bytes) => bytes,
        // The status decides an unexpected answer, however large its body.
        Err(e @ BodyError::TooLarge { .. }) if !expected => {
            let output = json!({"status": status, "headers": headers, "body": null});
            return Err(status_error(
                format!("{url} answered {status}; {e} (max_response_bytes) and was not kept"),
                output,
            ));
        }
        Err(e) => return Err(body_error(&url, &e, "max_response_bytes", "http_request")),
    };
    let body = serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|_| {
        Value::String(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    });
    let output = json!({"status": status, "headers": headers, "body": body});
    if !expected {
        return Err(status_error(format!("{url} answered {status}"), output));
    }
    Ok(Success {
        output,
        usage: None,
    })
}

/// A body over the limit fails the attempt for good: the same request will get the same
/// answer. `setting` names what the user can raise; `kind` is the kind of a failed read.
pub(crate) fn body_error(url: &str, e: &BodyError, setting: &str, kind: &'static str) -> StepError {
    match e {
        BodyError::TooLarge { .. } => {
            let message = if setting.is_empty() {
                format!("{url}: {e}")
            } else {
                format!("{url}: {e} ({setting})")
            };
            StepError::permanent("response_too_large", message)
        }
        BodyError::Read(_) => {
            let kind = if e.is_timeout() { "timeout" } else { kind };
            StepError::new(kind, format!("{url}: {e}"))
        }
    }
}
