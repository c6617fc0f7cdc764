//! The in-memory state of an active run, and the pure rules over it: which steps are ready,
//! what the run's status, `currentStepIndex` and `pendingAction` are, what the result is.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::compiled::Compiled;
use crate::definition::StepKind;
use crate::model::{RunStatus, StepStatus};
use crate::store::{RunRecord, StepRecord};
use crate::template;

#[derive(Debug, Clone)]
pub struct Slot {
    pub status: StepStatus,
    /// The current (or next) attempt number, from 1.
    pub attempt: i64,
    /// The first attempt of the run's current attempt: `retry: N` allows N from here.
    pub base_attempt: i64,
    pub output: Option<Value>,
    /// The completion is durable: dependents may start.
    pub committed: bool,
    /// A failed attempt waits for its retry timer.
    pub backoff: bool,
    /// The step record as last written (input, timing, meta).
    pub record: Option<StepRecord>,
    /// `output` converted once for templates: steps are read far more often than written.
    pub mj_output: Option<minijinja::Value>,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            status: StepStatus::Pending,
            attempt: 1,
            base_attempt: 1,
            output: None,
            committed: false,
            backoff: false,
            record: None,
            mj_output: None,
        }
    }
}

pub struct Active {
    pub rec: RunRecord,
    pub def: Arc<Compiled>,
    /// By definition step index.
    pub slots: Vec<Slot>,
    pub tasks: HashMap<usize, tokio::task::AbortHandle>,
    /// The record changed since it was last written.
    pub dirty: bool,
    /// `input` converted once for templates.
    pub mj_input: minijinja::Value,
}

impl Active {
    pub fn new(rec: RunRecord, def: Arc<Compiled>) -> Self {
        let n = def.plan.definition.steps.len();
        let mj_input = template::context(&rec.input);
        Self {
            rec,
            def,
            slots: vec![Slot::default(); n],
            tasks: HashMap::new(),
            dirty: false,
            mj_input,
        }
    }

    /// Rebuild from stored records: the latest attempt of each step counts.
    pub fn load(rec: RunRecord, def: Arc<Compiled>, steps: Vec<StepRecord>) -> Self {
        let mut a = Active::new(rec, def);
        let mut base: Vec<Option<i64>> = vec![None; a.slots.len()];
        for s in steps {
            let Some(i) = a.def.step_index(&s.step_id) else {
                continue;
            };
            if s.run_attempt == a.rec.attempt {
                base[i] = Some(base[i].map_or(s.attempt, |b| b.min(s.attempt)));
            }
            let slot = &mut a.slots[i];
            if slot.record.as_ref().is_some_and(|r| r.attempt > s.attempt) {
                continue;
            }
            slot.status = s.status;
            slot.attempt = s.attempt;
            slot.output = s.output.clone();
            slot.mj_output = s.output.as_ref().map(template::context);
            slot.committed = true;
            slot.backoff = false;
            slot.record = Some(s);
        }
        for (slot, base) in a.slots.iter_mut().zip(base) {
            slot.base_attempt = base.unwrap_or(slot.attempt);
        }
        a
    }

    /// A fresh record of step `i`'s current attempt: PENDING, nothing recorded yet.
    pub fn blank_record(&self, i: usize) -> StepRecord {
        StepRecord {
            run_id: self.rec.id.clone(),
            step_id: self.def.plan.definition.steps[i].id.clone(),
            step_index: i64::try_from(self.def.plan.position[i]).unwrap_or(i64::MAX),
            attempt: self.slots[i].attempt,
            run_attempt: self.rec.attempt,
            status: StepStatus::Pending,
            input: None,
            output: None,
            error: None,
            usage: None,
            meta: None,
            started_at: None,
            finished_at: None,
        }
    }

    pub fn deps_done(&self, i: usize) -> bool {
        self.def.plan.deps[i]
            .iter()
            .all(|&d| self.slots[d].status.is_done() && self.slots[d].committed)
    }

    /// Steps whose dependencies are durably finished and that have not started.
    pub fn ready(&self) -> Vec<usize> {
        self.def
            .plan
            .order
            .iter()
            .copied()
            .filter(|&i| {
                let s = &self.slots[i];
                s.status == StepStatus::Pending && !s.backoff && self.deps_done(i)
            })
            .collect()
    }

    /// Position in the plan order of the first step not finished (all: the step count).
    pub fn current_step_index(&self) -> i64 {
        let pos = self
            .def
            .plan
            .order
            .iter()
            .position(|&i| !self.slots[i].status.is_done())
            .unwrap_or(self.def.plan.order.len());
        i64::try_from(pos).unwrap_or(i64::MAX)
    }

    /// The run status the steps imply (terminal statuses are set explicitly, not derived).
    pub fn derived_status(&self) -> RunStatus {
        if self.slots.iter().all(|s| s.status.is_done()) {
            return RunStatus::Completed;
        }
        // A pending step is blocked when something it depends on waits, failed or was
        // cancelled; any other pending step will run, so the run is busy.
        let mut blocked = vec![false; self.slots.len()];
        for &i in &self.def.plan.order {
            blocked[i] = self.def.plan.deps[i].iter().any(|&d| {
                let s = &self.slots[d];
                matches!(
                    s.status,
                    StepStatus::Waiting | StepStatus::Failed | StepStatus::Cancelled
                ) || (s.status == StepStatus::Pending && blocked[d])
            });
        }
        let busy = self.slots.iter().enumerate().any(|(i, s)| {
            s.status == StepStatus::Running || (s.status == StepStatus::Pending && !blocked[i])
        });
        if busy {
            return RunStatus::Running;
        }
        let waiting: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].status == StepStatus::Waiting)
            .collect();
        if waiting.is_empty() {
            return RunStatus::Running;
        }
        let approval = waiting.iter().any(|&i| {
            matches!(
                self.def.plan.definition.steps[i].kind,
                StepKind::Approval(_)
            )
        });
        if approval {
            RunStatus::Paused
        } else {
            RunStatus::Waiting
        }
    }

    /// Seed 003's `pendingAction` for the first suspended step.
    pub fn pending_action(&self) -> Option<Value> {
        let mut actions = self.def.plan.order.iter().filter_map(|&i| {
            let slot = &self.slots[i];
            if slot.status != StepStatus::Waiting {
                return None;
            }
            let step = &self.def.plan.definition.steps[i];
            let rendered = slot.record.as_ref().and_then(|r| r.input.clone()).unwrap_or(Value::Null);
            Some(match &step.kind {
                StepKind::Approval(a) => json!({
                    "step": step.id,
                    "type": "approval",
                    "message": rendered.get("message").cloned().unwrap_or(json!(a.message)),
                    "options": a.options,
                }),
                StepKind::ExternalEvent(e) => json!({
                    "step": step.id,
                    "type": "external_event",
                    "message": format!("Waiting for signal `{}`", e.signal),
                    "signalType": e.signal,
                    "schema": e.schema,
                }),
                StepKind::Wait(_) => json!({
                    "step": step.id,
                    "type": "wait",
                    "message": format!("Sleeping until {}", rendered.get("until").and_then(Value::as_str).unwrap_or("the timer is due")),
                    "until": rendered.get("until"),
                }),
                _ => json!({"step": step.id, "type": step.kind.type_name()}),
            })
        });
        // An approval is what a person must act on; show it first.
        let all: Vec<Value> = actions.by_ref().collect();
        all.iter()
            .find(|a| a["type"] == "approval")
            .or_else(|| all.first())
            .cloned()
    }

    /// The template scope for a step of this run.
    pub fn context(&self, secrets: &HashMap<String, String>) -> Value {
        let mut steps = Map::new();
        for (i, step) in self.def.plan.definition.steps.iter().enumerate() {
            let s = &self.slots[i];
            if s.status.is_done() {
                steps.insert(
                    step.id.clone(),
                    json!({"output": s.output.clone().unwrap_or(Value::Null), "status": s.status.as_str()}),
                );
            }
        }
        json!({
            "input": self.rec.input,
            "steps": steps,
            "run": {"id": self.rec.id, "definitionId": self.rec.definition_slug, "attempt": self.rec.attempt},
            "secrets": secrets,
        })
    }

    /// The template scope as minijinja values, built from the cached conversions.
    pub fn mj_context(&self, secrets: &minijinja::Value) -> minijinja::Value {
        let mut steps = std::collections::BTreeMap::new();
        for (i, step) in self.def.plan.definition.steps.iter().enumerate() {
            let s = &self.slots[i];
            if s.status.is_done() {
                let output = s
                    .mj_output
                    .clone()
                    .unwrap_or_else(|| minijinja::Value::from(()));
                steps.insert(
                    step.id.clone(),
                    minijinja::context! { output => output, status => s.status.as_str() },
                );
            }
        }
        minijinja::context! {
            input => self.mj_input.clone(),
            steps => minijinja::Value::from(steps),
            run => minijinja::context! { id => self.rec.id.clone(), definitionId => self.rec.definition_slug.clone(), attempt => self.rec.attempt },
            secrets => secrets.clone(),
        }
    }

    /// The run's result: the `result` mapping rendered, or the sink's output (several sinks:
    /// an object keyed by step id).
    pub fn result(
        &self,
        secrets: &HashMap<String, String>,
    ) -> Result<Value, template::RenderError> {
        let def = &self.def.plan.definition;
        if let Some(result) = &def.result {
            let ctx = template::context(&self.context(secrets));
            return template::render_value(result, &ctx, "/result");
        }
        let sinks = &self.def.plan.sinks;
        let out = |i: usize| self.slots[i].output.clone().unwrap_or(Value::Null);
        Ok(match sinks.as_slice() {
            [one] => out(*one),
            many => Value::Object(
                many.iter()
                    .map(|&i| (def.steps[i].id.clone(), out(i)))
                    .collect(),
            ),
        })
    }
}
