//! What `tools/list` shows: one tool per workflow definition of the workspace (its latest
//! version), then the management tools. Management tools are named `runs_…`: a definition
//! id is lowercase letters, digits and `-`, so the two can never clash.

use std::sync::Arc;

use rmcp::ErrorData;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use crate::definition::{Definition, StepKind};
use crate::engine::Engine;

pub const MANAGEMENT_TOOLS: [&str; 7] = [
    "runs_list",
    "runs_get",
    "runs_cancel",
    "runs_retry",
    "runs_approve",
    "runs_reject",
    "runs_signal",
];

/// Can a run of this workflow pause or wait (approval, external_event, wait)? Such a call
/// may answer with a pending action instead of the output, so its tool declares no
/// `outputSchema` (clients check structured results against it).
pub fn may_suspend(def: &Definition) -> bool {
    def.steps.iter().any(|s| {
        matches!(
            s.kind,
            StepKind::Approval(_) | StepKind::ExternalEvent(_) | StepKind::Wait(_)
        )
    })
}

/// The tool's `outputSchema`, and whether the output is wrapped as `{"result": output}`
/// (MCP wants an object; a workflow may return any JSON value).
pub fn output_schema(def: &Definition) -> Option<(Value, bool)> {
    if may_suspend(def) {
        return None;
    }
    let schema = def.output.as_ref()?;
    if schema.get("type").and_then(Value::as_str) == Some("object") {
        Some((schema.clone(), false))
    } else {
        Some((
            json!({"type": "object", "required": ["result"], "properties": {"result": schema}}),
            true,
        ))
    }
}

/// The input schema as MCP wants it: an object schema (`{"type": "object"}` when the
/// workflow declares none: the engine takes only objects).
fn input_schema(def: &Definition) -> JsonObject {
    let mut schema = match &def.input {
        Some(Value::Object(m)) => m.clone(),
        _ => JsonObject::new(),
    };
    schema
        .entry("type")
        .or_insert_with(|| Value::String("object".into()));
    schema
}

fn object(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(JsonObject::new()),
    }
}

fn workflow_tool(def: &Definition) -> Tool {
    let mut description = def
        .description
        .clone()
        .unwrap_or_else(|| format!("Run the workflow `{}`.", def.id));
    if may_suspend(def) {
        description.push_str(
            " A run may pause for an approval or wait for a signal: the result then has its \
             runId, status and pendingAction; answer with runs_approve, runs_reject or \
             runs_signal.",
        );
    }
    let mut tool = Tool::new(def.id.clone(), description, Arc::new(input_schema(def)))
        .with_title(def.id.clone());
    if let Some((schema, _)) = output_schema(def) {
        tool = tool.with_raw_output_schema(object(schema));
    }
    tool
}

fn run_id() -> Value {
    json!({"type": "string", "description": "The run's id (wfrun_…)"})
}

fn management_tool(
    name: &'static str,
    description: &'static str,
    schema: Value,
    read_only: bool,
    destructive: bool,
) -> Tool {
    Tool::new(name, description, object(schema)).with_annotations(
        ToolAnnotations::new()
            .read_only(read_only)
            .destructive(destructive)
            .idempotent(read_only)
            .open_world(false),
    )
}

fn management() -> Vec<Tool> {
    let by_id = |extra: Value| {
        let mut s = json!({
            "type": "object",
            "required": ["runId"],
            "additionalProperties": false,
            "properties": {"runId": run_id()},
        });
        if let (Value::Object(props), Value::Object(more)) = (&mut s["properties"], extra) {
            props.extend(more);
        }
        s
    };
    let decision = |what: &str| {
        by_id(json!({
            "step": {"type": "string", "description": "The paused approval step (default: the run's pending approval)"},
            "option": {"type": "string", "description": format!("The option to choose (default: `{what}`, when the approval offers it)")},
        }))
    };
    vec![
        management_tool(
            "runs_list",
            "List runs of this workspace, newest first, optionally by status or workflow.",
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "status": {"type": "string", "enum": ["PENDING", "RUNNING", "WAITING", "PAUSED", "COMPLETED", "FAILED", "CANCELLED"]},
                    "definitionId": {"type": "string", "description": "A workflow id"},
                    "page": {"type": "integer", "minimum": 1},
                    "pageSize": {"type": "integer", "minimum": 1, "maximum": 100},
                },
            }),
            true,
            false,
        ),
        management_tool(
            "runs_get",
            "A run: status, output or error, its steps, and the pending action of a paused or waiting run.",
            by_id(json!({})),
            true,
            false,
        ),
        management_tool(
            "runs_cancel",
            "Cancel a PENDING, RUNNING, WAITING or PAUSED run. Its remaining steps never run.",
            by_id(json!({})),
            false,
            true,
        ),
        management_tool(
            "runs_retry",
            "Retry a FAILED run from the step that failed, keeping earlier outputs.",
            by_id(json!({})),
            false,
            false,
        ),
        management_tool(
            "runs_approve",
            "Approve a run PAUSED at an approval step: the run goes on with the chosen option.",
            decision("approve"),
            false,
            false,
        ),
        management_tool(
            "runs_reject",
            "Reject a run PAUSED at an approval step: the run goes on with the chosen option.",
            decision("reject"),
            false,
            true,
        ),
        management_tool(
            "runs_signal",
            "Send a signal to a run WAITING at an external_event step.",
            by_id(json!({
                "signalType": {"type": "string", "description": "The signal the step waits for (its pendingAction's signalType)"},
                "payload": {"type": "object", "description": "Checked against the step's schema (default {})"},
            }))
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("required".into(), json!(["runId", "signalType"]));
                Value::Object(o)
            })
            .unwrap_or_default(),
            false,
            false,
        ),
    ]
}

/// Every tool the workspace offers.
pub async fn list(engine: &Engine, workspace_id: &str) -> Result<Vec<Tool>, ErrorData> {
    let store = engine.store().clone();
    let ws = workspace_id.to_string();
    let defs = tokio::task::spawn_blocking(move || store.list_definitions(&ws))
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    let mut out = Vec::with_capacity(defs.len() + MANAGEMENT_TOOLS.len());
    for rec in defs {
        match engine.compiled(workspace_id, &rec.version_id).await {
            Ok(c) => out.push(workflow_tool(&c.plan.definition)),
            // A stored version that no longer compiles is not offered; the log says why.
            Err(e) => tracing::warn!("MCP: workflow {} is not listed: {e}", rec.slug),
        }
    }
    out.extend(management());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::SourceFile;

    fn def(yaml: &str) -> Definition {
        let l = crate::validate::lint(&SourceFile::new("t.yaml", yaml));
        l.definition
            .unwrap_or_else(|| panic!("{:?}", l.diagnostics))
    }

    const STEP: &str =
        "steps:\n  - id: a\n    type: action\n    uses: transform\n    with: {value: 1}\n";

    #[test]
    fn output_schemas_are_objects_and_absent_when_a_run_may_pause() {
        let plain = def(&format!("id: plain\n{STEP}"));
        assert_eq!(output_schema(&plain), None);
        assert_eq!(
            input_schema(&plain),
            json!({"type": "object"})
                .as_object()
                .cloned()
                .unwrap_or_default()
        );
        let object = def(&format!("id: obj\noutput: {{type: object}}\n{STEP}"));
        assert_eq!(
            output_schema(&object),
            Some((json!({"type": "object"}), false))
        );
        let number = def(&format!("id: num\noutput: {{type: integer}}\n{STEP}"));
        let (schema, wrapped) = output_schema(&number).unwrap_or_default();
        assert!(wrapped);
        assert_eq!(schema["properties"]["result"], json!({"type": "integer"}));
        let paused = def(
            "id: p\noutput: {type: object}\nsteps:\n  - id: ok\n    type: approval\n    message: ok?\n    options: [yes, no]\n",
        );
        assert!(may_suspend(&paused));
        assert_eq!(output_schema(&paused), None);
        assert!(
            workflow_tool(&paused)
                .description
                .unwrap_or_default()
                .contains("runs_approve")
        );
    }

    #[test]
    fn management_tools_are_the_ones_named_and_annotated() {
        let tools = management();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, MANAGEMENT_TOOLS);
        for t in &tools {
            let a = t.annotations.clone().unwrap_or_default();
            assert!(
                a.read_only_hint.is_some() && a.destructive_hint.is_some(),
                "{}",
                t.name
            );
            // Management names can never be a workflow id (lowercase letters, digits, `-`).
            assert!(t.name.contains('_'));
        }
    }
}
