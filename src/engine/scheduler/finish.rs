//! Outcomes: a step completes or fails (and maybe retries), and the run's status, index,
//! pending action and result follow from its steps.

use serde_json::{Value, json};

use super::policy::{add, backoff_delay, retries_left};
use super::{Outcome, Scheduler};
use crate::engine::Update;
use crate::engine::compiled::violations;
use crate::engine::state::Active;
use crate::exec::{Produced, StepError};
use crate::model::{EventKind, RunStatus, StepStatus};
use crate::store::{HookStatus, RunUpdate, TimerKind, Write};
use crate::template;

impl Scheduler {
    /// An executor finished: keep the result until it commits, and apply it.
    pub(super) fn done(&mut self, o: Outcome) {
        let (run_id, step, attempt, result) =
            (o.run_id.clone(), o.step, o.attempt, o.result.clone());
        self.outcomes.push(o);
        self.apply_outcome(&run_id, step, attempt, result);
    }

    pub(super) fn apply_outcome(
        &mut self,
        run_id: &str,
        i: usize,
        attempt: i64,
        result: Result<Produced, StepError>,
    ) {
        let Some(mut run) = self.active.remove(run_id) else {
            return;
        };
        let current = run
            .slots
            .get(i)
            .is_some_and(|s| s.status == StepStatus::Running && s.attempt == attempt);
        if current {
            run.tasks.remove(&i);
            match result {
                Ok(Produced::Finished(s)) => self.complete(&mut run, i, s.output, s.usage, None),
                Ok(Produced::ModelTurn(reply)) => self.agent_turn(&mut run, i, *reply),
                Ok(Produced::ToolResult { turn, call, result }) => {
                    self.agent_file_done(&mut run, i, turn, call, result);
                }
                Err(e) => self.fail_attempt(&mut run, i, e),
            }
            self.refresh(&mut run);
        }
        self.active.insert(run_id.to_string(), run);
    }

    pub(super) fn complete(
        &mut self,
        run: &mut Active,
        i: usize,
        output: Value,
        usage: Option<Value>,
        meta: Option<Value>,
    ) {
        let now = self.now();
        // Redacted in memory too, so what later steps see is what a reload would see.
        let output = if self.secrets.is_empty() {
            output
        } else {
            self.secrets.redact(&output)
        };
        let step_id = run.def.plan.definition.steps[i].id.clone();
        let mut rec = match &run.slots[i].record {
            Some(r) => r.clone(),
            None => run.blank_record(i),
        };
        let slot = &mut run.slots[i];
        slot.status = StepStatus::Completed;
        slot.mj_output = Some(template::context(&output));
        slot.output = Some(output.clone());
        slot.committed = false;
        rec.status = StepStatus::Completed;
        rec.output = Some(output);
        rec.usage = usage;
        if meta.is_some() {
            rec.meta = meta;
        }
        rec.started_at.get_or_insert(now);
        rec.finished_at = Some(now);
        slot.record = Some(rec.clone());
        self.count_step_done(run, i, &rec);
        self.write(Write::put_step(rec));
        self.event(
            &run.rec.id,
            EventKind::StepCompleted,
            Some(&step_id),
            json!({"attempt": run.slots[i].attempt}),
        );
        self.step_update(run, i);
        self.batch.touched.insert(run.rec.id.clone());
    }

    pub(super) fn fail_attempt(&mut self, run: &mut Active, i: usize, err: StepError) {
        let now = self.now();
        let step = run.def.plan.definition.steps[i].clone();
        run.tasks.remove(&i);
        let was_waiting = run.slots[i].status == StepStatus::Waiting;
        let mut rec = match &run.slots[i].record {
            Some(r) => r.clone(),
            None => run.blank_record(i),
        };
        let slot = &mut run.slots[i];
        let attempt = slot.attempt;
        rec.status = StepStatus::Failed;
        rec.error = Some(err.to_json());
        rec.started_at.get_or_insert(now);
        rec.finished_at = Some(now);
        slot.record = Some(rec.clone());
        self.count_step_done(run, i, &rec);
        self.write(Write::put_step(rec));
        if was_waiting {
            // The attempt that made the hooks is over: they cannot resume a later one.
            self.write(Write::CloseHooks {
                run_id: run.rec.id.clone(),
                step_id: Some(step.id.clone()),
                status: HookStatus::Closed,
                at: now,
            });
        }
        self.batch.touched.insert(run.rec.id.clone());
        let retry = err.retryable
            && retries_left(&run.slots[i], &step.retry)
            && !run.rec.status.is_terminal();
        if retry {
            let delay = backoff_delay(
                &step.retry,
                attempt - run.slots[i].base_attempt + 1,
                self.engine.config().jitter,
            );
            let slot = &mut run.slots[i];
            slot.status = StepStatus::Pending;
            slot.backoff = true;
            slot.attempt += 1;
            self.event(
                &run.rec.id,
                EventKind::StepRetrying,
                Some(&step.id),
                json!({"attempt": attempt, "error": err.to_json(), "nextAttempt": attempt + 1, "delayMs": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)}),
            );
            let due = add(now, delay).unwrap_or(now);
            self.add_timer(&run.rec.id, &step.id, TimerKind::Retry, due);
            self.step_update(run, i);
            return;
        }
        run.slots[i].status = StepStatus::Failed;
        self.event(
            &run.rec.id,
            EventKind::StepFailed,
            Some(&step.id),
            json!({"attempt": attempt, "error": err.to_json()}),
        );
        self.step_update(run, i);
        let mut error = err.to_json();
        error["step"] = json!(step.id);
        error["attempt"] = json!(attempt);
        self.fail_run(run, error);
    }

    pub(super) fn fail_run(&mut self, run: &mut Active, error: Value) {
        self.stop_open_steps(run);
        self.end_run(run, RunStatus::Failed, Some(error), EventKind::RunFailed);
    }

    /// A run reached a terminal status: tell waiters, and its parent if it has one.
    pub(super) fn finished(&mut self, run: &Active) {
        self.batch.touched.insert(run.rec.id.clone());
        self.batch.updates.push(Update {
            run_id: run.rec.id.clone(),
            status: run.rec.status,
            step: None,
        });
        if let (Some(p), Some(s)) = (&run.rec.parent_run_id, &run.rec.parent_step_id) {
            self.batch
                .child_done
                .push((p.clone(), s.clone(), run.rec.clone()));
        }
    }

    pub(super) fn step_update(&mut self, run: &Active, i: usize) {
        self.batch.updates.push(Update {
            run_id: run.rec.id.clone(),
            status: run.rec.status,
            step: Some((
                run.def.plan.definition.steps[i].id.clone(),
                run.slots[i].status,
            )),
        });
    }

    /// Recompute the run's status, index, pending action and result after its steps changed.
    pub(super) fn refresh(&mut self, run: &mut Active) {
        if run.rec.status.is_terminal() {
            return;
        }
        let now = self.now();
        let status = run.derived_status();
        if status == RunStatus::Completed {
            return self.complete_run(run);
        }
        let status = if run.rec.status == RunStatus::Pending
            && status == RunStatus::Running
            && run.slots.iter().all(|s| s.status == StepStatus::Pending)
        {
            RunStatus::Pending
        } else {
            status
        };
        if status.is_suspended() && super::children::is_inline(&run.rec) {
            // A tool's run (or a run it started) reached an approval, wait or event: the
            // agent waiting for it cannot wait that long.
            let at = run
                .pending_action()
                .map(|p| {
                    format!(
                        " (step `{}` is {})",
                        p["step"].as_str().unwrap_or("?"),
                        p["type"].as_str().unwrap_or("?")
                    )
                })
                .unwrap_or_default();
            return self.fail_run(
                run,
                json!({"kind": "inline_suspend", "message": format!("a workflow run as an agent's tool cannot suspend{at}")}),
            );
        }
        let index = run.current_step_index();
        let pending = if status.is_suspended() {
            run.pending_action()
        } else {
            None
        };
        if run.dirty
            || status != run.rec.status
            || index != run.rec.current_step_index
            || pending != run.rec.pending_action
        {
            run.dirty = false;
            run.rec.status = status;
            run.rec.current_step_index = index;
            run.rec.pending_action = pending;
            run.rec.updated_at = now;
            self.write(Write::UpdateRun(RunUpdate::of(&run.rec)));
            self.batch.updates.push(Update {
                run_id: run.rec.id.clone(),
                status,
                step: None,
            });
            self.batch.touched.insert(run.rec.id.clone());
        }
    }

    fn complete_run(&mut self, run: &mut Active) {
        let now = self.now();
        let secrets = self.secrets.of(&run.rec.workspace_id);
        let output = match run.result(&secrets) {
            Ok(v) => self.secrets.redact(&v),
            Err(e) => {
                return self.fail_run(run, json!({"kind": "result", "message": e.to_string()}));
            }
        };
        if let Some(v) = &run.def.output {
            let problems = violations(v, &output);
            if !problems.is_empty() {
                return self.fail_run(
                    run,
                    json!({"kind": "output", "message": "the result does not match the output schema", "details": {"problems": problems, "result": output}}),
                );
            }
        }
        run.rec.status = RunStatus::Completed;
        run.rec.output = Some(output);
        run.rec.pending_action = None;
        run.rec.finished_at = Some(now);
        run.rec.started_at.get_or_insert(now);
        run.rec.current_step_index = run.current_step_index();
        run.rec.updated_at = now;
        self.write(Write::UpdateRun(RunUpdate::of(&run.rec)));
        self.write(Write::DeleteRunTimers {
            run_id: run.rec.id.clone(),
        });
        self.event(&run.rec.id, EventKind::RunCompleted, None, json!({}));
        self.count_run_finished(run);
        self.finished(run);
    }
}
