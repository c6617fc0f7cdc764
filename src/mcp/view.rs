//! How runs look in MCP results: compact, with the fields an agent acts on (the REST API's
//! views stay in `src/api`, which builds on this module, not the reverse).

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::engine::Compiled;
use crate::model::StepStatus;
use crate::store::{RunRecord, StepRecord};

/// `2026-04-02T12:00:00.000Z`, as the REST API writes times.
fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A run as listed.
pub fn run(r: &RunRecord) -> Value {
    json!({
        "runId": r.id,
        "definitionId": r.definition_slug,
        "versionId": r.definition_id,
        "status": r.status,
        "input": r.input,
        "output": r.output,
        "error": r.error,
        "pendingAction": if r.status.is_suspended() { r.pending_action.clone() } else { None },
        "createdAt": time(r.created_at),
        "updatedAt": time(r.updated_at),
    })
}

/// A run with every step of its definition in plan order (the latest attempt of each).
pub fn detail(r: &RunRecord, def: &Compiled, records: &[StepRecord]) -> Value {
    let steps: Vec<Value> = def
        .plan
        .order
        .iter()
        .map(|&i| {
            let step = &def.plan.definition.steps[i];
            let last = records
                .iter()
                .filter(|s| s.step_id == step.id)
                .max_by_key(|s| (s.run_attempt, s.attempt));
            json!({
                "name": step.id,
                "type": step.kind.type_name(),
                "status": last.map_or(StepStatus::Pending, |s| s.status),
                "output": last.and_then(|s| s.output.clone()),
                "error": last.and_then(|s| s.error.clone()),
            })
        })
        .collect();
    let mut v = run(r);
    v["steps"] = Value::Array(steps);
    v
}

/// What a call that did not end with the output answers: where the run is and what it
/// waits for.
pub fn progress(r: &RunRecord) -> Value {
    json!({
        "runId": r.id,
        "status": r.status,
        "pendingAction": if r.status.is_suspended() { r.pending_action.clone() } else { None },
    })
}
