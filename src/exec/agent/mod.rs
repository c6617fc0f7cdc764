//! The `agent` step: OpenAI-compatible chat completions, in a loop with tools.
//!
//! The executor makes one model call at a time ([`call`]) and returns what the model said;
//! the scheduler records each turn in the step's [`Transcript`], runs the tools the model
//! asked for (child runs), and asks for the next call, so a crash loses at most the call in
//! flight. What is pure about the loop (the messages of the next call, the limits, the
//! answer's check) lives in `transcript`; the tools the model sees in `tools`; the file
//! tools on a run's workspace in `files`.

pub mod files;
mod prices;
mod tools;
mod transcript;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::StepError;
use crate::http_client::{DEFAULT_MAX_BODY, error_chain, read_body_limited};

pub use prices::Prices;
pub use tools::{FileOp, Tool, ToolKind};
pub use transcript::{
    Limits, Next, Request, ToolCall, ToolResult, Transcript, Turn, TurnUsage, check_answer,
    correction,
};

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

    /// The model a step calls: its own `model:`, else the configured one.
    pub fn model_for(&self, step_model: Option<&str>) -> Result<String, StepError> {
        step_model
            .or(self.model.as_deref())
            .map(str::to_string)
            .ok_or_else(|| {
                StepError::permanent(
                    "agent_config",
                    "no model given: set `model:` on the step or STEPWISE_LLM_MODEL",
                )
            })
    }
}

/// One model call, ready to send.
#[derive(Debug, Clone)]
pub struct ModelCall {
    pub model: String,
    pub messages: Vec<Value>,
    /// Function tools, as the chat completions API takes them.
    pub tools: Vec<Value>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Ask for a JSON object (a step with an output schema and no tools).
    pub json: bool,
    /// User messages this call adds after the recorded turns (kept with its turn).
    pub notes: Vec<String>,
    pub timeout: Duration,
}

/// What one call brought back: the assistant's message and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// `{role, content, tool_calls}` as the model sent them.
    pub message: Value,
    pub finish_reason: Option<String>,
    pub usage: TurnUsage,
    pub request: Request,
    pub notes: Vec<String>,
}

/// Send one chat completions request.
pub async fn call(
    client: &reqwest::Client,
    cfg: &LlmConfig,
    call: ModelCall,
) -> Result<Reply, StepError> {
    let Some(base) = cfg.base_url.as_deref() else {
        return Err(StepError::permanent(
            "agent_config",
            "no model endpoint configured: set STEPWISE_LLM_BASE_URL (an OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1)",
        ));
    };
    let mut body = json!({"model": call.model, "messages": call.messages});
    if !call.tools.is_empty() {
        body["tools"] = Value::Array(call.tools);
    }
    if let Some(t) = call.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = call.max_tokens {
        body["max_tokens"] = json!(m);
    }
    if call.json {
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
    let message = answer
        .pointer("/choices/0/message")
        .filter(|m| m.is_object())
        .ok_or_else(|| StepError::new("agent", "the answer has no choices[0].message"))?;
    let has_calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    if !has_calls && !message.get("content").is_some_and(Value::is_string) {
        return Err(StepError::new(
            "agent",
            "the answer has neither choices[0].message.content nor tool_calls",
        ));
    }
    let mut kept = json!({"role": "assistant", "content": message.get("content").cloned().unwrap_or(Value::Null)});
    if has_calls {
        kept["tool_calls"] = message["tool_calls"].clone();
    }
    let u = answer.get("usage").cloned().unwrap_or(Value::Null);
    let count = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(Reply {
        message: kept,
        finish_reason: answer
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: TurnUsage {
            model: answer
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(&call.model)
                .to_string(),
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            total_tokens: count("total_tokens"),
            duration_ms,
            cost_usd: None,
        },
        request: Request {
            model: call.model,
            messages: call.messages.len(),
            max_tokens: call.max_tokens,
        },
        notes: call.notes,
    })
}
