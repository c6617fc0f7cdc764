//! Stored definition versions, compiled once and shared: the plan plus validators for the
//! input, the result, and each step's payload or answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonschema::Validator;
use serde_json::Value;

use crate::compile::Plan;
use crate::definition::StepKind;
use crate::store::DefinitionRecord;

pub struct Compiled {
    pub record: DefinitionRecord,
    pub plan: Plan,
    pub input: Option<Validator>,
    pub output: Option<Validator>,
    /// Per step index: the external_event payload validator.
    pub payload: Vec<Option<Validator>>,
}

/// Schema violations as `{path, message}` objects for error details.
pub fn violations(v: &Validator, instance: &Value) -> Vec<Value> {
    v.iter_errors(instance)
        .map(|e| {
            serde_json::json!({
                "path": e.instance_path().as_str(),
                "message": e.masked().to_string(),
            })
        })
        .collect()
}

fn build(schema: Option<&Value>) -> Option<Validator> {
    schema.and_then(|s| {
        jsonschema::options()
            .should_validate_formats(true)
            .build(s)
            .ok()
    })
}

impl Compiled {
    /// A stored version with its plan (the engine's `PlanLoader` made it from the source).
    pub fn new(record: DefinitionRecord, plan: Plan) -> Compiled {
        let d = &plan.definition;
        let payload = d
            .steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::ExternalEvent(e) => build(e.schema.as_ref()),
                _ => None,
            })
            .collect();
        Compiled {
            input: build(d.input.as_ref()),
            output: build(d.output.as_ref()),
            payload,
            plan,
            record,
        }
    }

    pub fn step_index(&self, step_id: &str) -> Option<usize> {
        self.plan
            .definition
            .steps
            .iter()
            .position(|s| s.id == step_id)
    }
}

/// Compiled definitions by version id, and the latest version of each slug.
#[derive(Default)]
pub struct Cache {
    map: Mutex<HashMap<String, Arc<Compiled>>>,
    latest: Mutex<HashMap<(String, String), Arc<Compiled>>>,
}

impl Cache {
    /// The latest version of a slug, as this process last stored or read it. Only one engine
    /// runs on a database (it holds a lock), so what it applied is the latest.
    pub fn latest(&self, workspace_id: &str, slug: &str) -> Option<Arc<Compiled>> {
        self.latest
            .lock()
            .ok()?
            .get(&(workspace_id.to_string(), slug.to_string()))
            .cloned()
    }

    pub fn set_latest(&self, c: Arc<Compiled>) {
        if let Ok(mut m) = self.latest.lock() {
            let key = (c.record.workspace_id.clone(), c.record.slug.clone());
            if m.get(&key)
                .is_none_or(|old| old.record.version <= c.record.version)
            {
                m.insert(key, c);
            }
        }
    }

    pub fn get(&self, version_id: &str) -> Option<Arc<Compiled>> {
        self.map.lock().ok()?.get(version_id).cloned()
    }

    pub fn insert(&self, c: Arc<Compiled>) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(c.record.version_id.clone(), c);
        }
    }
}
