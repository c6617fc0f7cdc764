//! The `agent` step: one OpenAI-compatible chat-completions call.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{StepError, Success};
use crate::http_client::{DEFAULT_MAX_BODY, error_chain, read_body_limited};

/// Where agent calls go. From `STEPWISE_LLM_BASE_URL`, `STEPWISE_LLM_API_KEY`,
/// `STEPWISE_LLM_MODEL` (or the `OPENAI_*` equivalents).
#[derive(Debug, Clone, Default)]
pub struct LlmConfig {
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub model: Option<String>,
}

impl LlmConfig {
    pub fn from_env() -> Self {
        let var = |a: &str, b: &str| {
            std::env::var(a)
                .or_else(|_| std::env::var(b))
                .ok()
                .filter(|v| !v.is_empty())
        };
        Self {
            base_url: var("STEPWISE_LLM_BASE_URL", "OPENAI_BASE_URL"),
            api_key: var("STEPWISE_LLM_API_KEY", "OPENAI_API_KEY"),
            model: var("STEPWISE_LLM_MODEL", "OPENAI_MODEL"),
        }
    }
}

pub struct AgentCall<'a> {
    pub prompt: &'a str,
    pub system: Option<&'a str>,
    pub model: Option<&'a str>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// When set, the answer must be JSON satisfying this schema.
    pub output_schema: Option<&'a Value>,
    pub timeout: Duration,
}

pub async fn run(
    client: &reqwest::Client,
    cfg: &LlmConfig,
    call: AgentCall<'_>,
) -> Result<Success, StepError> {
    let Some(base) = cfg.base_url.as_deref() else {
        return Err(StepError::permanent(
            "agent_config",
            "no model endpoint configured: set STEPWISE_LLM_BASE_URL (an OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1)",
        ));
    };
    let Some(model) = call.model.or(cfg.model.as_deref()) else {
        return Err(StepError::permanent(
            "agent_config",
            "no model given: set `model:` on the step or STEPWISE_LLM_MODEL",
        ));
    };
    let mut messages = Vec::new();
    let mut system = call.system.unwrap_or_default().to_string();
    if let Some(schema) = call.output_schema {
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str(&format!(
            "Answer with one JSON value only, no prose, that satisfies this JSON Schema:\n{schema}"
        ));
    }
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": call.prompt}));
    let mut body = json!({"model": model, "messages": messages});
    if let Some(t) = call.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = call.max_tokens {
        body["max_tokens"] = json!(m);
    }
    if call.output_schema.is_some() {
        body["response_format"] = json!({"type": "json_object"});
    }
    let url = format!("{}/chat/completions", base.trim_end_matches('/'));
    let started = Instant::now();
    let mut req = client.post(&url).timeout(call.timeout).json(&body);
    if let Some(key) = &cfg.api_key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.map_err(|e| {
        let kind = if e.is_timeout() { "timeout" } else { "agent" };
        StepError::new(kind, format!("{url}: {}", error_chain(&e)))
    })?;
    let status = resp.status();
    let bytes = read_body_limited(resp, DEFAULT_MAX_BODY)
        .await
        .map_err(|e| super::http::body_error(&url, &e, "", "agent"))?;
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| StepError::new("agent", format!("{url}: the answer is not JSON: {e}")))?;
    if !status.is_success() {
        let retryable =
            status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
        return Err(StepError {
            kind: "agent",
            message: format!("{url} answered {status}"),
            retryable,
            details: Some(answer),
        });
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let content = answer
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| StepError::new("agent", "the answer has no choices[0].message.content"))?;
    let u = answer.get("usage").cloned().unwrap_or(Value::Null);
    let usage = json!({
        "model": answer.get("model").and_then(Value::as_str).unwrap_or(model),
        "promptTokens": u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        "completionTokens": u.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
        "totalTokens": u.get("total_tokens").and_then(Value::as_u64).unwrap_or(0),
        "durationMs": duration_ms,
    });
    let output = match call.output_schema {
        None => Value::String(content.to_string()),
        Some(schema) => {
            let parsed = parse_json_answer(content).ok_or_else(|| {
                StepError::new("agent_output", "the answer is not JSON")
                    .with_details(json!({"answer": content}))
            })?;
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(schema)
                .map_err(|e| {
                    StepError::permanent(
                        "agent_output",
                        format!("the output schema is invalid: {e}"),
                    )
                })?;
            let problems: Vec<String> = validator
                .iter_errors(&parsed)
                .map(|e| format!("{}: {}", e.instance_path(), e.masked()))
                .collect();
            if !problems.is_empty() {
                return Err(StepError::new(
                    "agent_output",
                    "the answer does not satisfy the output schema",
                )
                .with_details(json!({"answer": parsed, "problems": problems})));
            }
            parsed
        }
    };
    Ok(Success {
        output,
        usage: Some(usage),
    })
}

/// Models often wrap JSON in a fenced block; accept that.
fn parse_json_answer(content: &str) -> Option<Value> {
    let t = content.trim();
    if let Ok(v) = serde_json::from_str(t) {
        return Some(v);
    }
    let inner = t.strip_prefix("```")?;
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    let inner = inner.strip_suffix("```")?;
    serde_json::from_str(inner.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_json_is_accepted() {
        assert_eq!(
            parse_json_answer("```json\n{\"a\": 1}\n```"),
            Some(json!({"a": 1}))
        );
        assert_eq!(parse_json_answer(" {\"a\": 1} "), Some(json!({"a": 1})));
        assert_eq!(parse_json_answer("sure! {\"a\": 1}"), None);
    }
}
