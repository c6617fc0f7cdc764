//! The catalogue of built-in actions (`uses:`): their arguments and what they output.
//!
//! The linter checks `with:` against it; the engine dispatches on the same names.

use serde_json::{Value, json};

/// One argument of a built-in action.
#[derive(Debug, Clone, Copy)]
pub struct Arg {
    pub name: &'static str,
    pub required: bool,
    pub doc: &'static str,
}

/// A built-in action.
#[derive(Debug, Clone, Copy)]
pub struct Action {
    pub name: &'static str,
    pub doc: &'static str,
    pub args: &'static [Arg],
}

const fn req(name: &'static str, doc: &'static str) -> Arg {
    Arg {
        name,
        required: true,
        doc,
    }
}

const fn opt(name: &'static str, doc: &'static str) -> Arg {
    Arg {
        name,
        required: false,
        doc,
    }
}

pub const ACTIONS: &[Action] = &[
    Action {
        name: "http",
        doc: "an HTTP request; output {status, headers, body}",
        args: &[
            opt(
                "method",
                "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS (default GET)",
            ),
            req("url", "the URL"),
            opt("headers", "a mapping of header names to values"),
            opt("json", "a JSON body"),
            opt("body", "a text body"),
            opt(
                "expect_status",
                "a status code or a list of them (default: any 2xx)",
            ),
            opt("timeout", "a duration"),
            opt(
                "max_response_bytes",
                "the most of the response body kept, in bytes (default 10485760, 10 MiB)",
            ),
        ],
    },
    Action {
        name: "log",
        doc: "writes a line to the run's trace; output null",
        args: &[
            req("message", "the line"),
            opt("level", "debug, info, warn or error (default info)"),
        ],
    },
    Action {
        name: "transform",
        doc: "builds a value from templates; output that value",
        args: &[req("value", "any value; its strings are rendered")],
    },
    Action {
        name: "workflow",
        doc: "starts a child run and waits for its result; output the child's result",
        args: &[
            req("definition", "the child's definitionId"),
            opt("input", "the child's input"),
        ],
    },
];

pub const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
pub const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error"];

/// The `http` action's `max_response_bytes`, when it is a whole number in the allowed range.
pub fn max_response_bytes(v: &Value) -> Option<u64> {
    v.as_u64()
        .filter(|n| (1..=crate::http_client::MAX_BODY_CEILING).contains(n))
}

/// What lint and the engine say about a `max_response_bytes` they refuse.
pub fn max_response_bytes_rule() -> String {
    format!(
        "`max_response_bytes` must be a whole number of bytes from 1 to {}",
        crate::http_client::MAX_BODY_CEILING
    )
}

pub fn find(name: &str) -> Option<&'static Action> {
    ACTIONS.iter().find(|a| a.name == name)
}

/// What the linter knows of an action's output, as a JSON Schema (`true`: anything).
pub fn output_schema(action: &str, with: &serde_json::Map<String, Value>) -> Value {
    match action {
        "http" => json!({
            "type": "object",
            "properties": {"status": {"type": "integer"}, "headers": {"type": "object"}, "body": true},
            "additionalProperties": false
        }),
        "log" => json!({"type": "null"}),
        "transform" => with.get("value").map_or(json!(true), shape_of),
        _ => json!(true),
    }
}

/// The shape of a literal value: mappings keep their keys, templates may be anything.
fn shape_of(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let props: serde_json::Map<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), shape_of(v))).collect();
            json!({"type": "object", "properties": props, "additionalProperties": false})
        }
        Value::Array(_) => json!({"type": "array"}),
        Value::String(s) if s.contains("{{") || s.contains("{%") => json!(true),
        Value::String(_) => json!({"type": "string"}),
        Value::Number(_) => json!({"type": "number"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Null => json!({"type": "null"}),
    }
}
