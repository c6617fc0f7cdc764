//! Structural validation: `schemas/workflow.schema.json`, errors mapped to YAML spans.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, Validator};
use serde_json::Value;

use crate::definition::FILE_TOOLS;
use crate::diagnostics::{Code, Diagnostic, did_you_mean};
use crate::yaml::{SpanIndex, pointer_push};

/// The definition format's JSON Schema, as shipped in `schemas/`.
pub const WORKFLOW_SCHEMA: &str = include_str!("../../schemas/workflow.schema.json");
/// The trigger format's JSON Schema.
pub const TRIGGER_SCHEMA: &str = include_str!("../../schemas/trigger.schema.json");
/// The test file format's JSON Schema (`stepwise test`).
pub const TEST_SCHEMA: &str = include_str!("../../schemas/test.schema.json");

/// Which format a document is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Workflow,
    Trigger,
    Test,
}

pub const TRIGGER_FIELDS: &[&str] = &[
    "$schema",
    "trigger",
    "workflow",
    "description",
    "enabled",
    "transform",
    "signal",
    "webhook",
    "schedule",
    "poll",
];

pub const TOP_FIELDS: &[&str] = &[
    "$schema",
    "id",
    "version",
    "description",
    "input",
    "output",
    "result",
    "concurrency",
    "rate",
    "workspace",
    "steps",
];
pub const STEP_FIELDS: &[&str] = &[
    "id",
    "type",
    "name",
    "description",
    "needs",
    "when",
    "retry",
    "timeout",
    "concurrency",
];
pub const STEP_TYPES: &[&str] = &[
    "action",
    "agent",
    "approval",
    "wait",
    "external_event",
    "script",
];

/// Fields a step of `type` may have beyond the common ones.
pub fn type_fields(step_type: &str) -> &'static [&'static str] {
    match step_type {
        "action" => &["uses", "with"],
        "agent" => &[
            "prompt",
            "system",
            "model",
            "temperature",
            "max_tokens",
            "output",
            "tools",
            "files",
            "max_turns",
            "budget",
        ],
        "approval" => &["message", "options"],
        "wait" => &["duration", "until"],
        "external_event" => &["signal", "schema", "correlate", "buffer"],
        "script" => &[
            "run",
            "command",
            "env",
            "with",
            "network",
            "memory_mb",
            "max_output_bytes",
            "output",
        ],
        _ => &[],
    }
}

fn build(text: &str) -> Option<Validator> {
    let schema: Value = serde_json::from_str(text).ok()?;
    jsonschema::options()
        .should_validate_formats(false)
        .build(&schema)
        .ok()
}

fn validator(format: Format) -> Option<&'static Validator> {
    static W: OnceLock<Option<Validator>> = OnceLock::new();
    static T: OnceLock<Option<Validator>> = OnceLock::new();
    static C: OnceLock<Option<Validator>> = OnceLock::new();
    match format {
        Format::Workflow => W.get_or_init(|| build(WORKFLOW_SCHEMA)).as_ref(),
        Format::Trigger => T.get_or_init(|| build(TRIGGER_SCHEMA)).as_ref(),
        Format::Test => C.get_or_init(|| build(TEST_SCHEMA)).as_ref(),
    }
}

/// Check `doc` against the definition schema; every violation becomes a diagnostic.
pub fn check(doc: &Value, spans: &SpanIndex) -> Vec<Diagnostic> {
    check_format(Format::Workflow, doc, spans)
}

/// Check `doc` against the schema of `format`.
pub fn check_format(format: Format, doc: &Value, spans: &SpanIndex) -> Vec<Diagnostic> {
    let Some(validator) = validator(format) else {
        return vec![Diagnostic::new(
            Code::Schema,
            Default::default(),
            "internal error: the bundled workflow schema does not compile",
        )];
    };
    let mut out = Vec::new();
    let mut bad_type_steps = Vec::new();
    let errors: Vec<_> = validator.iter_errors(doc).collect();
    for e in &errors {
        let path = e.instance_path().as_str();
        if path.ends_with("/type") && matches!(e.kind(), ValidationErrorKind::Enum { .. }) {
            bad_type_steps.push(path.trim_end_matches("/type").to_string());
        }
    }
    for e in &errors {
        let path = e.instance_path().as_str().to_string();
        match e.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                if bad_type_steps.contains(&path) {
                    continue;
                }
                let (allowed, what) = allowed_fields(format, doc, &path);
                // A failed `then` branch leaves its own fields "unevaluated"; those are reported
                // by the branch's error, not as unknown.
                for name in unexpected.iter().filter(|n| !allowed.contains(&n.as_str())) {
                    let field = pointer_push(&path, name);
                    out.push(
                        Diagnostic::new(
                            Code::UnknownField,
                            spans.key(&field),
                            format!("unknown field `{name}`{what}"),
                        )
                        .with_label("not a known field")
                        .with_help_opt(
                            did_you_mean(name, allowed.iter().copied()).or_else(|| {
                                (!allowed.is_empty())
                                    .then(|| format!("known fields: {}", allowed.join(", ")))
                            }),
                        ),
                    );
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                let (_, what) = allowed_fields(format, doc, &path);
                let span = if path.is_empty() {
                    Default::default()
                } else {
                    spans.value(&path)
                };
                out.push(
                    Diagnostic::new(
                        Code::MissingField,
                        span,
                        format!("missing field `{name}`{what}"),
                    )
                    .with_label(format!("`{name}` is required here")),
                );
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => article(*t),
                    TypeKind::Multiple(ts) => {
                        ts.iter().map(article).collect::<Vec<_>>().join(" or ")
                    }
                };
                let found = instance_at(doc, &path).map_or("nothing", json_kind);
                out.push(
                    Diagnostic::new(
                        Code::InvalidType,
                        spans.value(&path),
                        format!("{} must be {expected}, found {found}", describe(&path)),
                    )
                    .with_label(format!("expected {expected}")),
                );
            }
            ValidationErrorKind::Enum { options } => {
                let found = instance_at(doc, &path)
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                // Allowed values that are not strings (`files: true`) are named as written.
                let names: Vec<String> = options
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        spans.value(&path),
                        format!("{} must be one of {}", describe(&path), names.join(", ")),
                    )
                    .with_label("not one of the allowed values")
                    .with_help_opt(did_you_mean(found, names.iter().map(String::as_str))),
                );
            }
            ValidationErrorKind::Pattern { .. } => {
                let found = instance_at(doc, &path).and_then(Value::as_str);
                let d = match found.filter(|f| FILE_TOOLS.contains(f)) {
                    // A file tool's name where a workflow id goes: no workflow can have it.
                    Some(name) if is_tool_entry(&path) => Diagnostic::new(
                        Code::InvalidValue,
                        spans.value(&path),
                        format!("`{name}` is a file tool, not a workflow: a tool here is a workflow's definitionId"),
                    )
                    .with_label("a file tool's name")
                    .with_help("file tools are not listed in `tools`: the step offers them with `files: true` (or `files: read-only`), in a workflow with `workspace: true`"),
                    _ => Diagnostic::new(
                        Code::InvalidValue,
                        spans.value(&path),
                        pattern_message(&path),
                    )
                    .with_label("does not have the required form"),
                };
                out.push(d);
            }
            _ => {
                out.push(
                    Diagnostic::new(
                        Code::Schema,
                        spans.value(&path),
                        format!("{}: {}", describe(&path), e.masked()),
                    )
                    .with_label("invalid"),
                );
            }
        }
    }
    out.dedup();
    out
}

fn instance_at<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    doc.pointer(pointer)
}

/// The fields allowed at `pointer`, and a phrase naming the place (" in a `wait` step").
fn allowed_fields(format: Format, doc: &Value, pointer: &str) -> (Vec<&'static str>, String) {
    if format == Format::Trigger {
        return match pointer {
            "" => (TRIGGER_FIELDS.to_vec(), " at the top of the trigger".into()),
            "/webhook" => (
                vec!["endpoint", "schema", "signature", "idempotency"],
                " in `webhook`".into(),
            ),
            "/webhook/signature" => (
                vec!["type", "header", "secret"],
                " in `webhook.signature`".into(),
            ),
            "/webhook/idempotency" => (vec!["header", "field"], " in `webhook.idempotency`".into()),
            "/schedule" => (
                vec!["cron", "timezone", "every", "missed"],
                " in `schedule`".into(),
            ),
            "/poll" => (
                vec!["url", "interval", "headers", "items", "key", "cursor"],
                " in `poll`".into(),
            ),
            _ => (Vec::new(), String::new()),
        };
    }
    if format == Format::Test {
        return crate::testing::lint::allowed_fields(pointer);
    }
    if pointer.is_empty() {
        return (TOP_FIELDS.to_vec(), " at the top of the definition".into());
    }
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    match segments.as_slice() {
        ["steps", _] => {
            let step_type = doc
                .pointer(pointer)
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut fields = STEP_FIELDS.to_vec();
            fields.extend_from_slice(type_fields(step_type));
            let what = if STEP_TYPES.contains(&step_type) {
                let article = if step_type.starts_with(['a', 'e']) {
                    "an"
                } else {
                    "a"
                };
                format!(" in {article} `{step_type}` step")
            } else {
                " in a step".to_string()
            };
            (fields, what)
        }
        ["steps", _, "tools", _] => (
            vec!["workflow", "version", "description"],
            " in an agent tool".into(),
        ),
        ["steps", _, "retry"] => (
            vec!["max_attempts", "backoff", "initial_delay", "max_delay"],
            " in `retry`".into(),
        ),
        _ => (Vec::new(), String::new()),
    }
}

fn describe(pointer: &str) -> String {
    if pointer.is_empty() {
        return "the definition".into();
    }
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    match segments.as_slice() {
        ["steps", i] => format!("step #{}", i.parse::<usize>().map_or(0, |n| n + 1)),
        ["steps", _, rest @ ..] => format!("`{}`", rest.join(".")),
        all => format!("`{}`", all.join(".")),
    }
}

/// Whether `pointer` is an agent step's `tools` entry (or its `workflow`).
fn is_tool_entry(pointer: &str) -> bool {
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    matches!(
        segments.as_slice(),
        ["steps", _, "tools", _] | ["steps", _, "tools", _, "workflow"]
    )
}

fn pattern_message(pointer: &str) -> String {
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    match segments.as_slice() {
        ["trigger"] => "a trigger name must be a slug: lowercase letters, digits and `-` (e.g. `signup`)".into(),
        ["webhook", "endpoint"] => "a webhook `endpoint` must be a slug: lowercase letters, digits and `-` (it becomes /v1/webhooks/<endpoint>)".into(),
        ["id"] => "the definition `id` must be a slug: lowercase letters, digits and `-`, starting with a letter or digit, at most 63 characters (e.g. `lead-router`)".into(),
        ["steps", _, "id"] => "a step `id` must start with a letter or `_` and hold only letters, digits and `_` (templates read it as `steps.<id>`)".into(),
        ["steps", _, "tools", _] | ["steps", _, "tools", _, "workflow"] => "a tool is a workflow's definitionId: lowercase letters, digits and `-` (e.g. `refund-order`)".into(),
        ["steps", _, "signal"] => "a `signal` holds only letters, digits and `._:-`, at most 128 characters (e.g. `payment.confirmed`)".into(),
        _ => format!("{} does not have the required form", describe(pointer)),
    }
}

fn article(t: JsonType) -> String {
    match t {
        JsonType::Array => "a list",
        JsonType::Boolean => "a boolean",
        JsonType::Integer => "an integer",
        JsonType::Null => "null",
        JsonType::Number => "a number",
        JsonType::Object => "a mapping",
        JsonType::String => "a string",
    }
    .to_string()
}

pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
