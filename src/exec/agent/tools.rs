//! The tools a model sees: resolved when an agent step first starts and recorded with its
//! transcript, so every call of the loop (and a resumed loop) offers the same tools.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A tool as offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    /// The function name the model calls.
    pub name: String,
    pub description: String,
    /// A JSON Schema of the arguments.
    pub parameters: Value,
    #[serde(flatten)]
    pub kind: ToolKind,
}

/// What runs when the model calls a tool; the scheduler starts every kind at one place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToolKind {
    /// A child run of this exact definition version.
    #[serde(rename_all = "camelCase")]
    Workflow {
        workflow: String,
        version_id: String,
        version: i64,
    },
    /// A file operation on the run's workspace (`super::files`).
    File { op: FileOp },
}

/// The file tools' operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    List,
    Read,
    Write,
}

impl Tool {
    /// The `tools` entry of a chat completions request.
    pub fn function(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }
}
