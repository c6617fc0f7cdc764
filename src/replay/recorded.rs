//! A recorded run, as `stepwise runs export` writes it (the API's run view with its steps,
//! and the definition version it is pinned to), or as the API returns it.

use serde_json::Value;

/// The export file's format marker.
pub const EXPORT_FORMAT: &str = "stepwise.run-export/1";

#[derive(Debug, Clone)]
pub struct RecordedStep {
    pub id: String,
    /// The step type when the run recorded it (`action`, `agent`, …).
    pub step_type: String,
    /// The last attempt's status: COMPLETED, SKIPPED, WAITING, FAILED, RUNNING, PENDING.
    pub status: String,
    pub output: Option<Value>,
    /// Every attempt: `{attempt, status, input, output, error, startedAt, finishedAt}`.
    pub attempts: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: String,
    pub status: String,
    pub input: Value,
    pub output: Option<Value>,
    pub created_at: Option<String>,
    pub steps: Vec<RecordedStep>,
    /// The YAML of the definition version the run is pinned to, when known.
    pub source: Option<String>,
}

impl Recorded {
    /// Read an export file's JSON (`{format, run, definition}`) or a bare run view.
    pub fn from_export(doc: &Value) -> Result<Recorded, String> {
        let run = doc.get("run").unwrap_or(doc);
        let source = doc
            .pointer("/definition/source")
            .and_then(Value::as_str)
            .map(str::to_string);
        Recorded::from_view(run, source)
    }

    /// Read a run view with `include=steps`.
    pub fn from_view(run: &Value, source: Option<String>) -> Result<Recorded, String> {
        let s = |k: &str| run.get(k).and_then(Value::as_str).map(str::to_string);
        let id = s("id").ok_or("not a run: `id` is missing")?;
        let steps = run
            .get("steps")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("run {id} has no `steps` (export it with --include steps)"))?
            .iter()
            .map(|st| RecordedStep {
                id: st
                    .get("name")
                    .or_else(|| st.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                step_type: st
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                status: st
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("PENDING")
                    .to_string(),
                output: st.get("output").cloned().filter(|v| !v.is_null()),
                attempts: st
                    .get("attempts")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        Ok(Recorded {
            status: s("status").unwrap_or_default(),
            input: run.get("input").cloned().unwrap_or(Value::Null),
            output: run.get("output").cloned().filter(|v| !v.is_null()),
            created_at: s("createdAt"),
            steps,
            source,
            id,
        })
    }

    pub fn step(&self, id: &str) -> Option<&RecordedStep> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Whether the step finished (completed or skipped): later steps may rely on it.
    pub fn done(&self, id: &str) -> bool {
        self.step(id)
            .is_some_and(|s| s.status == "COMPLETED" || s.status == "SKIPPED")
    }
}
