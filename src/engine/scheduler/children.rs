//! `workflow` steps: a child run per attempt (found again by its idempotency key after a
//! restart), and the parent step finishing when the child does.

use serde_json::{Map, Value, json};

use super::Scheduler;
use crate::engine::CreateRun;
use crate::engine::compiled::violations;
use crate::engine::state::Active;
use crate::exec::StepError;
use crate::model::{EventKind, RunStatus, StepStatus};
use crate::store::Write;

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
        // The child's input is persisted as the child's run input: no secret may reach it.
        let input = self
            .secrets
            .redact(&with.get("input").cloned().unwrap_or_else(|| json!({})));
        if let Some(v) = &compiled.input {
            let problems = violations(v, &input);
            if !problems.is_empty() {
                let e = StepError::permanent(
                    "workflow",
                    format!("the input does not match the input schema of `{def_id}`"),
                )
                .with_details(json!({"problems": problems}));
                return self.fail_attempt(run, i, e);
            }
        }
        if let Some(rec) = run.slots[i].record.clone() {
            self.write(Write::put_step(rec));
        }
        self.step_update(run, i);
        let key = format!("{}:{}:{}", run.rec.id, step_id, run.slots[i].attempt);
        match self.existing_by_key(&run.rec.workspace_id, &key) {
            Ok(Some(child)) => {
                if child.status.is_terminal() {
                    self.batch
                        .child_done
                        .push((run.rec.id.clone(), step_id, child));
                }
            }
            Ok(None) => {
                let req = CreateRun {
                    workspace_id: run.rec.workspace_id.clone(),
                    definition: def_id,
                    input,
                    idempotency_key: Some(key),
                    trigger: json!({"kind": "workflow", "label": format!("child of run {}", run.rec.id), "parentRunId": run.rec.id, "parentStepId": step_id}),
                };
                let child = self.new_run(&compiled, &req, Some((&run.rec.id, &step_id)));
                self.event(
                    &run.rec.id,
                    EventKind::ChildStarted,
                    Some(&step_id),
                    json!({"childRunId": child.id}),
                );
            }
            Err(e) => self.fail_attempt(run, i, StepError::new("workflow", e.to_string())),
        }
    }

    /// Finish the parent steps of children that ended in this batch.
    pub(super) fn process_children(&mut self) {
        while let Some((parent_id, step_id, child)) = self.batch.child_done.pop() {
            let Some(mut parent) = self
                .get_or_load(&parent_id)
                .map(|_| ())
                .and_then(|()| self.active.remove(&parent_id))
            else {
                continue;
            };
            if let Some(i) = parent.def.step_index(&step_id)
                && parent.slots[i].status == StepStatus::Running
            {
                let meta = json!({"childRunId": child.id});
                match child.status {
                    RunStatus::Completed => {
                        let output = child.output.clone().unwrap_or(Value::Null);
                        self.complete(&mut parent, i, output, None, Some(meta));
                    }
                    status => {
                        let e = StepError::new(
                            "workflow",
                            format!("child run {} ended {status}", child.id),
                        )
                        .with_details(json!({"childRunId": child.id, "error": child.error}));
                        self.fail_attempt(&mut parent, i, e);
                    }
                }
                self.refresh(&mut parent);
            }
            self.batch.touched.insert(parent_id.clone());
            self.active.insert(parent_id, parent);
        }
    }
}
