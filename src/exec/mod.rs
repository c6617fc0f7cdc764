//! Step executors: each turns a rendered step into an outcome. They never write state; the
//! scheduler records what they return.

pub mod agent;
pub mod http;
pub mod log;
pub mod sandbox;
pub mod script;
pub mod transform;

use serde_json::{Value, json};

/// Why an attempt failed, and whether another attempt may help.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    /// A stable kind: `http_status`, `http_request`, `response_too_large`, `timeout`,
    /// `template`, `agent`, …
    pub kind: &'static str,
    pub message: String,
    pub retryable: bool,
    pub details: Option<Value>,
}

impl StepError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable: true,
            details: None,
        }
    }

    pub fn permanent(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            ..Self::new(kind, message)
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({"kind": self.kind, "message": self.message});
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

/// What an attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    pub output: Value,
    /// Token counts and duration of an agent call.
    pub usage: Option<Value>,
}

/// What an executor reports to the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub enum Produced {
    /// The attempt's outcome.
    Finished(Success),
    /// One model call of an agent loop: the scheduler records it and decides what follows.
    ModelTurn(Box<agent::Reply>),
    /// The result of an agent's file tool call `call` of turn `turn`.
    ToolResult {
        turn: usize,
        call: usize,
        result: agent::ToolResult,
    },
}
