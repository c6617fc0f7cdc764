//! `stepwise test --from-run FILE`: a recorded run (`stepwise runs export`) as a golden
//! test. Its input, its steps' recorded outcomes (as mocks, one per attempt) and the
//! approvals and signals it received (as events at the times they came) are replayed
//! against a definition; the run must end as it did.

use serde_json::{Map, Value, json};

use crate::definition::{Definition, StepKind};
use crate::replay::Recorded;

/// Milliseconds between two RFC 3339 times, as a duration (`90000ms`).
fn offset(from: Option<&str>, to: Option<&str>) -> Option<String> {
    let a = from?.parse::<jiff::Timestamp>().ok()?;
    let b = to?.parse::<jiff::Timestamp>().ok()?;
    let ms = (b.as_millisecond() - a.as_millisecond()).max(0);
    Some(format!("{ms}ms"))
}

/// The test document (JSON, which is YAML) for a recorded run against `def`, whose file is
/// `workflow` (relative to where the test document is written).
pub fn test_document(run: &Recorded, def: &Definition, workflow: &str) -> Value {
    let mut mocks = Map::new();
    let mut events: Vec<(String, Value)> = Vec::new();
    for rs in &run.steps {
        let Some(step) = def.step(&rs.id) else {
            continue;
        };
        let finished = rs
            .attempts
            .last()
            .and_then(|a| a.get("finishedAt"))
            .and_then(Value::as_str);
        let at = offset(run.created_at.as_deref(), finished);
        match &step.kind {
            StepKind::Action(a) if ["transform", "log", "workflow"].contains(&a.uses.as_str()) => {}
            StepKind::Action(_) | StepKind::Agent(_) | StepKind::Script(_) => {
                let outcomes: Vec<Value> = rs
                    .attempts
                    .iter()
                    .filter_map(|a| match a.get("status").and_then(Value::as_str) {
                        Some("COMPLETED") => Some(json!({"output": a.get("output").cloned().unwrap_or(Value::Null)})),
                        Some("FAILED") => Some(json!({"error": a.pointer("/error/message").and_then(Value::as_str).unwrap_or("failed")})),
                        _ => None,
                    })
                    .collect();
                if !outcomes.is_empty() {
                    mocks.insert(rs.id.clone(), Value::Array(outcomes));
                }
            }
            StepKind::Approval(_) if rs.status == "COMPLETED" => {
                if let Some(Value::String(option)) = &rs.output {
                    let mut e = json!({"approve": rs.id, "option": option});
                    if let Some(at) = &at {
                        e["at"] = json!(at);
                    }
                    events.push((finished.unwrap_or_default().to_string(), e));
                }
            }
            StepKind::ExternalEvent(x) if rs.status == "COMPLETED" => {
                let mut e =
                    json!({"signal": x.signal, "payload": rs.output.clone().unwrap_or(json!({}))});
                if let Some(at) = &at {
                    e["at"] = json!(at);
                }
                events.push((finished.unwrap_or_default().to_string(), e));
            }
            _ => {}
        }
    }
    events.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expect = json!({"status": run.status});
    if run.status == "COMPLETED" {
        expect["output"] = run.output.clone().unwrap_or(Value::Null);
    }
    let mut case = json!({
        "name": format!("recorded run {}", run.id),
        "input": run.input,
        "expect": expect,
    });
    if !mocks.is_empty() {
        case["mocks"] = Value::Object(mocks);
    }
    if !events.is_empty() {
        case["events"] = Value::Array(events.into_iter().map(|(_, e)| e).collect());
    }
    let mut doc = json!({"workflow": workflow, "tests": [case]});
    if let Some(start) = &run.created_at {
        doc["start"] = json!(start);
    }
    doc
}
