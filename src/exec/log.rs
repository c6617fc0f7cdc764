//! `log`: one line on the server's log at the step's level; the step outputs nothing.

use serde_json::{Map, Value};

pub struct Line {
    pub level: String,
    pub message: String,
}

/// The line a `with` asks for: `message` (text, or any value as JSON) at `level` (`info`).
pub fn line(with: &Map<String, Value>) -> Line {
    let message = with.get("message").map_or_else(String::new, |m| match m {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let level = with
        .get("level")
        .and_then(Value::as_str)
        .unwrap_or("info")
        .to_string();
    Line { level, message }
}

/// Write the line (already redacted by the caller) to the server's log.
pub fn emit(run_id: &str, step_id: &str, line: &Line) {
    let message = &line.message;
    match line.level.as_str() {
        "error" => tracing::error!(run = %run_id, step = %step_id, "{message}"),
        "warn" => tracing::warn!(run = %run_id, step = %step_id, "{message}"),
        "debug" => tracing::debug!(run = %run_id, step = %step_id, "{message}"),
        _ => tracing::info!(run = %run_id, step = %step_id, "{message}"),
    }
}
