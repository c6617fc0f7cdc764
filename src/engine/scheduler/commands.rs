//! What callers ask of runs: create, cancel, retry. (Resuming is in `resume`.)

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::Scheduler;
use super::inbox::{Forwarded, Waiter};
use crate::engine::compiled::Compiled;
use crate::engine::state::Active;
use crate::engine::{CreateRun, EngineError, Update};
use crate::model::{EventKind, RUN_PREFIX, RunStatus, StepStatus, new_id};
use crate::store::{HookStatus, RunRecord, RunUpdate, StoreError, Write};

impl Scheduler {
    pub(super) fn create(
        &mut self,
        compiled: Arc<Compiled>,
        req: CreateRun,
        reply: oneshot::Sender<crate::engine::Result<(RunRecord, bool)>>,
    ) {
        if let Some(key) = &req.idempotency_key {
            match self.existing_by_key(&req.workspace_id, key) {
                Ok(Some(existing)) => {
                    let same = existing.definition_slug == compiled.record.slug;
                    let answer = if same {
                        Ok((existing, false))
                    } else {
                        Err(EngineError::Conflict(format!(
                            "idempotencyKey `{key}` was already used for run {} of workflow `{}`, not `{}`",
                            existing.id, existing.definition_slug, compiled.record.slug
                        )))
                    };
                    self.batch.reply(reply, answer);
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    return;
                }
            }
        }
        let rec = self.new_run(&compiled, &req, None);
        self.batch.reply(reply, Ok((rec, true)));
    }

    pub(super) fn existing_by_key(
        &mut self,
        workspace_id: &str,
        key: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        if let Some(id) = self
            .batch
            .pending_keys
            .get(&(workspace_id.to_string(), key.to_string()))
            && let Some(run) = self.active.get(id)
        {
            return Ok(Some(run.rec.clone()));
        }
        self.store.run_by_key(workspace_id, key)
    }

    pub(super) fn new_run(
        &mut self,
        compiled: &Arc<Compiled>,
        req: &CreateRun,
        parent: Option<(&str, &str)>,
    ) -> RunRecord {
        let now = self.now();
        let rec = RunRecord {
            id: new_id(RUN_PREFIX),
            workspace_id: req.workspace_id.clone(),
            definition_id: compiled.record.version_id.clone(),
            definition_slug: compiled.record.slug.clone(),
            status: RunStatus::Pending,
            input: req.input.clone(),
            output: None,
            error: None,
            idempotency_key: req.idempotency_key.clone(),
            current_step_index: 0,
            attempt: 1,
            parent_run_id: parent.map(|p| p.0.to_string()),
            parent_step_id: parent.map(|p| p.1.to_string()),
            trigger: req.trigger.clone(),
            pending_action: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        };
        if let Some(key) = &rec.idempotency_key {
            self.batch
                .pending_keys
                .insert((rec.workspace_id.clone(), key.clone()), rec.id.clone());
        }
        self.write(Write::insert_run(rec.clone()));
        self.event(
            &rec.id,
            EventKind::RunCreated,
            None,
            json!({"trigger": rec.trigger, "definitionVersion": compiled.record.version}),
        );
        self.count_run_created(&rec);
        self.batch.updates.push(Update {
            run_id: rec.id.clone(),
            status: rec.status,
            step: None,
        });
        self.batch.touched.insert(rec.id.clone());
        let run = Active::new(rec.clone(), compiled.clone());
        self.enqueue_run(&run);
        self.active.insert(rec.id.clone(), run);
        rec
    }

    pub(super) fn cancel(
        &mut self,
        workspace_id: Option<&str>,
        run_id: &str,
        by: Option<&str>,
    ) -> crate::engine::Result<RunRecord> {
        let mut run = self.lookup(workspace_id, run_id)?;
        let result = if run.rec.status.can_cancel() {
            self.cancel_run(&mut run, by);
            Ok(run.rec.clone())
        } else {
            Err(EngineError::Conflict(format!(
                "run `{run_id}` is {} and cannot be cancelled",
                run.rec.status
            )))
        };
        self.restore(run);
        if result.is_ok() {
            // Children started by `workflow` steps go with their parent.
            if let Ok(children) = self.store.child_runs(run_id) {
                for c in children.into_iter().filter(|c| !c.status.is_terminal()) {
                    if let Err(EngineError::HeldElsewhere(id)) = self.cancel(None, &c.id, by) {
                        let cmd = Forwarded::Cancel {
                            workspace_id: None,
                            run_id: id.clone(),
                            by: by.map(str::to_string),
                        };
                        self.forward(&id, &cmd, Waiter::Nobody);
                    }
                }
            }
        }
        result
    }

    fn cancel_run(&mut self, run: &mut Active, by: Option<&str>) {
        self.stop_open_steps(run);
        let data = by.map_or_else(|| json!({}), |by| json!({"by": by}));
        self.end_run_with(
            run,
            RunStatus::Cancelled,
            None,
            EventKind::RunCancelled,
            data,
        );
    }

    /// Abort in-flight steps and mark every started, waiting or retrying step CANCELLED.
    pub(super) fn stop_open_steps(&mut self, run: &mut Active) {
        let now = self.now();
        for (i, t) in run.tasks.drain() {
            self.batch.aborts.push((run.rec.id.clone(), i, t));
        }
        for i in 0..run.slots.len() {
            let slot = &mut run.slots[i];
            // A step reset to run again (after a crash or a failed commit) still has an open
            // record of that attempt: it is closed too.
            let open_record = slot.record.as_ref().is_some_and(|r| {
                r.attempt == slot.attempt
                    && matches!(r.status, StepStatus::Running | StepStatus::Waiting)
            });
            if !(matches!(slot.status, StepStatus::Running | StepStatus::Waiting)
                || slot.backoff
                || open_record)
            {
                continue;
            }
            // A step backing off has no record of its next attempt yet: cancel that one,
            // and keep the failed attempt as it was.
            let mut rec = match &slot.record {
                Some(r) if !slot.backoff && r.attempt == slot.attempt => r.clone(),
                _ => run.blank_record(i),
            };
            let slot = &mut run.slots[i];
            slot.status = StepStatus::Cancelled;
            slot.backoff = false;
            rec.status = StepStatus::Cancelled;
            rec.finished_at = Some(now);
            slot.record = Some(rec.clone());
            self.write(Write::put_step(rec));
        }
    }

    /// Give a run its terminal status and close what it held: timers, hooks.
    pub(super) fn end_run(
        &mut self,
        run: &mut Active,
        status: RunStatus,
        error: Option<Value>,
        event: EventKind,
    ) {
        let data = error
            .as_ref()
            .map_or_else(|| json!({}), |e| json!({"error": e}));
        self.end_run_with(run, status, error, event, data);
    }

    /// `end_run` with the event's data given (a cancel records who asked).
    fn end_run_with(
        &mut self,
        run: &mut Active,
        status: RunStatus,
        error: Option<Value>,
        event: EventKind,
        data: Value,
    ) {
        let now = self.now();
        run.rec.status = status;
        run.rec.error.clone_from(&error);
        run.rec.pending_action = None;
        run.rec.finished_at = Some(now);
        run.rec.updated_at = now;
        run.rec.current_step_index = run.current_step_index();
        self.write(Write::UpdateRun(RunUpdate::of(&run.rec)));
        self.write(Write::DeleteRunTimers {
            run_id: run.rec.id.clone(),
        });
        self.write(Write::CloseHooks {
            run_id: run.rec.id.clone(),
            step_id: None,
            status: HookStatus::Closed,
            at: now,
        });
        self.event(&run.rec.id, event, None, data);
        self.queue_alerts(run);
        self.count_run_finished(run);
        self.finished(run);
    }

    /// A FAILED run runs again from its failed and cancelled steps, each with a fresh count
    /// of attempts. The run row and the new step attempts commit together.
    pub(super) fn retry(
        &mut self,
        workspace_id: &str,
        run_id: &str,
        by: Option<&str>,
    ) -> crate::engine::Result<RunRecord> {
        let mut run = self.lookup(Some(workspace_id), run_id)?;
        if run.rec.status != RunStatus::Failed {
            let status = run.rec.status;
            self.restore(run);
            return Err(EngineError::Conflict(format!(
                "only a FAILED run can be retried; run `{run_id}` is {status}"
            )));
        }
        run.rec.attempt += 1;
        for i in 0..run.slots.len() {
            let slot = &mut run.slots[i];
            if !matches!(slot.status, StepStatus::Failed | StepStatus::Cancelled) {
                continue;
            }
            slot.status = StepStatus::Pending;
            slot.attempt += 1;
            slot.base_attempt = slot.attempt;
            slot.committed = false;
            slot.backoff = false;
            // An agent's loop goes on from its transcript (`agent`), not from scratch.
            let carried = slot
                .record
                .as_ref()
                .and_then(|r| r.meta.clone())
                .filter(|m| m.get("agent").is_some());
            let mut rec = run.blank_record(i);
            rec.meta = carried;
            run.slots[i].record = Some(rec.clone());
            self.write(Write::put_step(rec));
        }
        let now = self.now();
        run.rec.status = RunStatus::Running;
        run.rec.error = None;
        run.rec.finished_at = None;
        run.rec.updated_at = now;
        run.rec.current_step_index = run.current_step_index();
        self.write(Write::UpdateRun(RunUpdate::of(&run.rec)));
        self.event(
            run_id,
            EventKind::RunRetried,
            None,
            match by {
                Some(by) => json!({"attempt": run.rec.attempt, "by": by}),
                None => json!({"attempt": run.rec.attempt}),
            },
        );
        self.count_run_retried(&run);
        self.batch.updates.push(Update {
            run_id: run_id.to_string(),
            status: run.rec.status,
            step: None,
        });
        self.batch.touched.insert(run_id.to_string());
        let rec = run.rec.clone();
        self.restore(run);
        Ok(rec)
    }
}
