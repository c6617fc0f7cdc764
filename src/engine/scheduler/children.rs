//! Child runs: one per `workflow` step attempt and one per agent tool call, each found again
//! by its idempotency key after a restart; a parent step hears when its child ends.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::Scheduler;
use super::inbox::{Forwarded, Waiter};
use crate::definition::StepKind;
use crate::engine::CreateRun;
use crate::engine::compiled::{Compiled, violations};
use crate::engine::state::Active;
use crate::exec::StepError;
use crate::model::{EventKind, RunStatus, StepStatus};
use crate::store::{RunRecord, Write};

/// A child to start: what it runs, with what, and how it is told apart.
pub(super) struct ChildSpec {
    pub compiled: Arc<Compiled>,
    pub input: Value,
    /// Derived from the parent, its step and the attempt or call: the same after a restart.
    pub key: String,
    /// The child's trigger (`{kind, label, …}`); the parent's ids are added.
    pub trigger: Value,
    /// Facts for the parent's `child.started` event besides the child's id.
    pub started: Value,
}

/// Runs that execute inline for an agent (tools, and what they start) may not suspend.
pub(super) fn is_inline(run: &RunRecord) -> bool {
    run.trigger.get("inline") == Some(&Value::Bool(true))
}

impl Scheduler {
    pub(super) fn start_child(&mut self, run: &mut Active, i: usize, with: &Map<String, Value>) {
        let step_id = run.def.plan.definition.steps[i].id.clone();
        let Some(def_id) = with
            .get("definition")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            let e = StepError::permanent("workflow", "`definition` must be a definition id");
            return self.fail_attempt(run, i, e);
        };
        let compiled = match self.store.definition(&run.rec.workspace_id, &def_id) {
            Ok(Some(rec)) => match self.engine.compiled_record(rec) {
                Ok(c) => c,
                Err(e) => {
                    let e = StepError::permanent("workflow", e.to_string());
                    return self.fail_attempt(run, i, e);
                }
            },
            Ok(None) => {
                let e = StepError::permanent(
                    "workflow",
                    format!("workflow definition `{def_id}` not found"),
                );
                return self.fail_attempt(run, i, e);
            }
            Err(e) => return self.fail_attempt(run, i, StepError::new("workflow", e.to_string())),
        };
        if let Some(rec) = run.slots[i].record.clone() {
            self.write(Write::put_step(rec));
        }
        self.step_update(run, i);
        let spec = ChildSpec {
            compiled,
            input: with.get("input").cloned().unwrap_or_else(|| json!({})),
            key: format!("{}:{}:{}", run.rec.id, step_id, run.slots[i].attempt),
            trigger: json!({"kind": "workflow", "label": format!("child of run {}", run.rec.id)}),
            started: json!({}),
        };
        match self.child_run(&run.rec, &step_id, spec) {
            Ok(child) if child.status.is_terminal() => {
                self.batch
                    .child_done
                    .push((run.rec.id.clone(), step_id, child));
            }
            Ok(_) => {}
            Err(e) => self.fail_attempt(run, i, e),
        }
    }

    /// The child run of `parent`'s step `step_id` that `spec` describes: the one its key
    /// already names, or a new one (with a `child.started` event on the parent).
    pub(super) fn child_run(
        &mut self,
        parent: &RunRecord,
        step_id: &str,
        spec: ChildSpec,
    ) -> Result<RunRecord, StepError> {
        // The child's input is persisted as the child's run input: no secret may reach it.
        let input = self.secrets.redact(&spec.input);
        if let Some(v) = &spec.compiled.input {
            let problems = violations(v, &input);
            if !problems.is_empty() {
                return Err(StepError::permanent(
                    "workflow",
                    format!(
                        "the input does not match the input schema of `{}`",
                        spec.compiled.record.slug
                    ),
                )
                .with_details(json!({"problems": problems})));
            }
        }
        match self.existing_by_key(&parent.workspace_id, &spec.key) {
            Ok(Some(child)) => Ok(child),
            Ok(None) => {
                let mut trigger = spec.trigger;
                trigger["parentRunId"] = json!(parent.id);
                trigger["parentStepId"] = json!(step_id);
                if is_inline(parent) {
                    trigger["inline"] = json!(true);
                }
                let req = CreateRun {
                    workspace_id: parent.workspace_id.clone(),
                    definition: spec.compiled.record.slug.clone(),
                    input,
                    idempotency_key: Some(spec.key),
                    trigger,
                };
                let child = self.new_run(&spec.compiled, &req, Some((&parent.id, step_id)));
                let mut data = spec.started;
                data["childRunId"] = json!(child.id);
                self.event(&parent.id, EventKind::ChildStarted, Some(step_id), data);
                Ok(child)
            }
            Err(e) => Err(StepError::new("workflow", e.to_string())),
        }
    }

    /// Finish the parent steps of children that ended in this batch.
    pub(super) fn process_children(&mut self) {
        while let Some((parent_id, step_id, child)) = self.batch.child_done.pop() {
            let loaded = self.get_or_load(&parent_id).is_some();
            if !loaded && self.held_elsewhere() {
                // The parent runs in another process: it hears of the end through the
                // inbox, in the commit that records the end.
                let cmd = Forwarded::ChildDone {
                    parent_id: parent_id.clone(),
                    step_id,
                    child_id: child.id,
                };
                self.forward(&parent_id, &cmd, Waiter::Nobody);
                continue;
            }
            let Some(mut parent) = self.active.remove(&parent_id) else {
                continue;
            };
            if let Some(i) = parent.def.step_index(&step_id)
                && parent.slots[i].status == StepStatus::Running
            {
                if matches!(parent.def.plan.definition.steps[i].kind, StepKind::Agent(_)) {
                    self.agent_child_done(&mut parent, i, &child);
                } else {
                    self.workflow_step_done(&mut parent, i, &child);
                }
                self.refresh(&mut parent);
            }
            self.batch.touched.insert(parent_id.clone());
            self.active.insert(parent_id, parent);
        }
    }

    fn workflow_step_done(&mut self, parent: &mut Active, i: usize, child: &RunRecord) {
        let meta = json!({"childRunId": child.id});
        match child.status {
            RunStatus::Completed => {
                let output = child.output.clone().unwrap_or(Value::Null);
                self.complete(parent, i, output, None, Some(meta));
            }
            status => {
                let e =
                    StepError::new("workflow", format!("child run {} ended {status}", child.id))
                        .with_details(json!({"childRunId": child.id, "error": child.error}));
                self.fail_attempt(parent, i, e);
            }
        }
    }
}
