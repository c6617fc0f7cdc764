//! Resuming a waiting step: a signal (by type), an approval (by step), or a hook (by token:
//! exactly the hook's own step, once). Every check happens here, on the scheduler, in the
//! same turn as the completion, so two resumes can never both succeed.

use serde_json::{Value, json};

use super::Scheduler;
use crate::definition::StepKind;
use crate::engine::compiled::violations;
use crate::engine::state::Active;
use crate::engine::{EngineError, Result, Resume, approval_choice};
use crate::model::{EventKind, StepStatus};
use crate::store::{HookKind, HookStatus, SignalRecord, TimerKind, Write};

impl Scheduler {
    pub(super) fn resume(
        &mut self,
        workspace_id: Option<&str>,
        run_id: &str,
        resume: Resume,
        actor: &str,
    ) -> Result<crate::store::RunRecord> {
        let mut run = self.lookup(workspace_id, run_id)?;
        let r = match resume {
            Resume::Signal {
                signal_type,
                payload,
            } => self.signal(&mut run, &signal_type, payload, actor),
            Resume::Approval { step, input } => self.approve(&mut run, &step, input, actor),
            Resume::Hook { token, payload } => self.hook(&mut run, &token, payload),
        };
        if r.is_ok() {
            self.refresh(&mut run);
        }
        let out = r.map(|()| run.rec.clone());
        self.restore(run);
        out
    }

    /// A signal goes to the waiting `external_event` step with its type, whatever the
    /// run's other branches do.
    fn signal(
        &mut self,
        run: &mut Active,
        signal_type: &str,
        payload: Value,
        actor: &str,
    ) -> Result<()> {
        let steps = &run.def.plan.definition.steps;
        let waiting: Vec<(usize, String)> = (0..run.slots.len())
            .filter(|&i| run.slots[i].status == StepStatus::Waiting)
            .filter_map(|i| match &steps[i].kind {
                StepKind::ExternalEvent(e) => Some((i, e.signal.clone())),
                _ => None,
            })
            .collect();
        let expected = || {
            waiting
                .iter()
                .map(|(_, s)| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        let i = match (signal_type, waiting.as_slice()) {
            (_, []) => {
                return Err(EngineError::Conflict(format!(
                    "run `{}` is {}, not waiting for a signal",
                    run.rec.id, run.rec.status
                )));
            }
            ("", [(i, _)]) => *i,
            ("", _) => {
                return Err(EngineError::validation(
                    format!(
                        "signalType is required: run `{}` waits for {}",
                        run.rec.id,
                        expected()
                    ),
                    json!({"field": "signalType"}),
                ));
            }
            (t, _) => waiting
                .iter()
                .find(|(_, s)| s == t)
                .map(|(i, _)| *i)
                .ok_or_else(|| {
                    EngineError::Conflict(format!(
                        "run `{}` waits for {}, not `{t}`",
                        run.rec.id,
                        expected()
                    ))
                })?,
        };
        self.deliver(run, i, payload, actor)
    }

    /// Complete external event step `i` with `payload`.
    pub(super) fn deliver(
        &mut self,
        run: &mut Active,
        i: usize,
        payload: Value,
        actor: &str,
    ) -> Result<()> {
        check_payload(run, i, &payload)?;
        let step = &run.def.plan.definition.steps[i];
        let step_id = step.id.clone();
        let signal = match &step.kind {
            StepKind::ExternalEvent(e) => e.signal.clone(),
            _ => String::new(),
        };
        let now = self.now();
        self.write(Write::Signal(SignalRecord {
            run_id: run.rec.id.clone(),
            step_id: step_id.clone(),
            signal_type: signal.clone(),
            payload: payload.clone(),
            received_at: now,
            via: actor.to_string(),
        }));
        self.close_wait(run, &step_id);
        self.event(
            &run.rec.id,
            EventKind::SignalReceived,
            Some(&step_id),
            json!({"signalType": signal, "via": actor}),
        );
        let meta = json!({"signalType": signal, "receivedAt": now.to_string(), "via": actor});
        self.complete(run, i, payload, None, Some(meta));
        Ok(())
    }

    fn approve(&mut self, run: &mut Active, step: &str, input: Value, actor: &str) -> Result<()> {
        let field = json!({"field": "input.resume.step"});
        let Some(i) = run.def.step_index(step) else {
            return Err(EngineError::validation(
                format!("run `{}` has no step `{step}`", run.rec.id),
                field,
            ));
        };
        // Seed 003 resumes every paused step by name, and its endpoint reports a run waiting
        // at an external event as `paused` with that step in `pendingAction`: naming that
        // step delivers `input` as its signal's payload, as `{signalType, payload}` would.
        if let StepKind::ExternalEvent(_) = &run.def.plan.definition.steps[i].kind
            && run.slots[i].status == StepStatus::Waiting
        {
            return self.deliver(run, i, input, actor);
        }
        let StepKind::Approval(a) = &run.def.plan.definition.steps[i].kind else {
            return Err(EngineError::validation(
                format!("step `{step}` is not an approval or a waiting external event"),
                field,
            ));
        };
        if run.slots[i].status != StepStatus::Waiting {
            return Err(EngineError::Conflict(format!(
                "run `{}` is {}, not paused at step `{step}`",
                run.rec.id, run.rec.status
            )));
        }
        let options = a.options.clone();
        let choice = match &input {
            Value::String(s) if options.contains(s) => s.clone(),
            _ => {
                return Err(EngineError::validation(
                    format!(
                        "input must be one of the options of `{step}`: {}",
                        options.join(", ")
                    ),
                    json!({"field": "input", "options": options, "got": input}),
                ));
            }
        };
        let now = self.now();
        self.close_wait(run, step);
        self.event(
            &run.rec.id,
            EventKind::ApprovalDecided,
            Some(step),
            json!({"option": choice, "by": actor}),
        );
        let meta = json!({"decidedBy": actor, "decidedAt": now.to_string()});
        self.complete(run, i, Value::String(choice), None, Some(meta));
        Ok(())
    }

    /// A hook resumes its own step, and only while that step waits in the attempt that
    /// made the hook.
    fn hook(&mut self, run: &mut Active, token: &str, payload: Value) -> Result<()> {
        let hook = self
            .store
            .hook(token)?
            .filter(|h| h.run_id == run.rec.id)
            .ok_or_else(|| EngineError::NotFound("hook not found".into()))?;
        let used = |how: &str| EngineError::Conflict(format!("this hook was already {how}"));
        match hook.status {
            HookStatus::Pending => {}
            HookStatus::Resumed => return Err(used("used")),
            HookStatus::Closed => {
                return Err(EngineError::Gone(
                    "this hook expired: its step no longer waits (the run ended or the wait timed out)"
                        .into(),
                ));
            }
        }
        let i = run
            .def
            .step_index(&hook.step_id)
            .ok_or_else(|| EngineError::NotFound("hook not found".into()))?;
        let slot = &run.slots[i];
        let same_attempt = slot
            .record
            .as_ref()
            .and_then(|r| r.started_at)
            .is_none_or(|started| hook.created_at >= started);
        if slot.status != StepStatus::Waiting || !same_attempt {
            return Err(used("used"));
        }
        match hook.kind {
            HookKind::Approval => {
                self.approve(run, &hook.step_id, approval_choice(payload), "hook")?;
            }
            HookKind::ExternalEvent => self.deliver(run, i, payload, "hook")?,
        }
        self.event(
            &run.rec.id,
            EventKind::HookResumed,
            Some(&hook.step_id),
            json!({"kind": hook.kind}),
        );
        Ok(())
    }

    /// The step no longer waits: its hooks are used up and its deadline goes.
    pub(super) fn close_wait(&mut self, run: &Active, step_id: &str) {
        let now = self.now();
        self.write(Write::CloseHooks {
            run_id: run.rec.id.clone(),
            step_id: Some(step_id.to_string()),
            status: HookStatus::Resumed,
            at: now,
        });
        self.write(Write::DeleteTimer {
            run_id: run.rec.id.clone(),
            step_id: step_id.to_string(),
            kind: TimerKind::Deadline,
        });
    }
}

/// The checks a payload passes before it completes external event step `i`.
pub(super) fn check_payload(run: &Active, i: usize, payload: &Value) -> Result<()> {
    if !payload.is_object() {
        return Err(EngineError::validation(
            "payload must be an object",
            json!({"field": "payload"}),
        ));
    }
    let step = &run.def.plan.definition.steps[i];
    if let Some(v) = &run.def.payload[i] {
        let problems = violations(v, payload);
        if !problems.is_empty() {
            return Err(EngineError::validation(
                format!("payload does not match the schema of step `{}`", step.id),
                json!({"field": "payload", "problems": problems}),
            ));
        }
    }
    Ok(())
}
