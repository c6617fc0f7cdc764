//! Each operation of a case against the engine, with what its outcome must be.
//!
//! When the engine was idle and the store healthy before an operation (`before` is the run as
//! stored then), the outcome is predictable: a command the state allows must succeed, any other
//! must be refused and change nothing. Otherwise only the durable effect of an acknowledged
//! command is checked, once the engine has settled.

use std::time::Duration;

use serde_json::json;
use stepwise::engine::{CreateRun, EngineError, Resume};
use stepwise::model::{RunStatus, StepStatus};
use stepwise::store::{DEFAULT_WORKSPACE, HookRecord, TimerKind};

use super::Defect;
use super::checks::{Invariant, RunView};
use super::model::{Action, Kind, Op, options_of, signal_of, step_id};
use super::runner::Ctx;

const ACTOR: &str = "faults";

/// Operations name runs, steps and hooks by a number taken modulo how many there are.
fn pick<T: Clone>(items: &[T], ix: &u16) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(*ix) % items.len()].clone())
}

fn is_command(op: &Op) -> bool {
    matches!(
        op,
        Op::Create { .. }
            | Op::Signal { .. }
            | Op::Hook { .. }
            | Op::Approve { .. }
            | Op::Cancel { .. }
            | Op::Retry { .. }
    )
}

/// Judge a command's outcome against what the state before it allowed.
fn judge<T>(
    ctx: &mut Ctx<'_>,
    what: &str,
    before: Option<&RunView>,
    down: bool,
    allowed: bool,
    r: &Result<T, EngineError>,
) {
    match r {
        Ok(_) => ctx.trace.push("  → ok".into()),
        Err(e) => ctx.trace.push(format!("  → refused: {e}")),
    }
    if down && r.is_ok() {
        ctx.v.add(
            Invariant::CommandOutcome,
            format!("{what} was acknowledged while the store refused every commit"),
        );
    }
    let Some(b) = before else {
        return;
    };
    match (allowed, r) {
        (true, Err(e)) => ctx.v.add(
            Invariant::CommandOutcome,
            format!("{what} was refused although the run allowed it: {e}"),
        ),
        (false, Ok(_)) => ctx.v.add(
            Invariant::CommandOutcome,
            format!("{what} was accepted although the run did not allow it"),
        ),
        _ => {}
    }
    if r.is_err() {
        ctx.unchanged(what, b);
    }
}

impl Ctx<'_> {
    pub async fn op(&mut self, op: &Op, next: Option<&Action>, faulty: bool, settled: bool) {
        self.seq += 1;
        self.trace
            .push(format!("{:?}", op).chars().take(160).collect());
        let stable = settled && !faulty;
        let down = self.env.store.is_down();
        let run = |ix: &u16, runs: &[String]| pick(runs, ix);
        match op {
            Op::Create { choice, key } => self.create(choice, *key, stable, down).await,
            Op::Signal {
                run: r,
                step,
                valid,
            } => {
                let events: Vec<usize> = self.indices(|k| matches!(k, Kind::Event { .. }));
                let (Some(id), Some(i)) = (run(r, &self.runs), pick(&events, step)) else {
                    return;
                };
                let before = self.before(&id, stable);
                signal(self, &id, before.as_ref(), down, i, *valid).await;
            }
            Op::Hook {
                run: r,
                hook,
                twice,
            } => {
                let Some(id) = run(r, &self.runs) else {
                    return;
                };
                let mut hooks = self
                    .env
                    .store
                    .inner()
                    .hooks_for_run(&id)
                    .unwrap_or_default();
                // Tokens are random: order by step so a case replays the same way.
                hooks.sort_by(|a, b| (&a.step_id, a.created_at).cmp(&(&b.step_id, b.created_at)));
                let Some(h) = pick(&hooks, hook) else {
                    return;
                };
                let before = self.before(&id, stable);
                resume_hook(self, &id, before.as_ref(), down, &h, *twice).await;
            }
            Op::Approve {
                run: r,
                step,
                option,
            } => {
                let approvals = self.indices(|k| matches!(k, Kind::Approval { .. }));
                let (Some(id), Some(i)) = (run(r, &self.runs), pick(&approvals, step)) else {
                    return;
                };
                let before = self.before(&id, stable);
                approve(self, &id, before.as_ref(), down, i, *option).await;
            }
            Op::Cancel { run: r } => {
                let Some(id) = run(r, &self.runs) else {
                    return;
                };
                let before = self.before(&id, stable);
                let engine = self.env.engine.clone();
                let Some(res) = self
                    .call("cancel", engine.cancel(DEFAULT_WORKSPACE, &id))
                    .await
                else {
                    return;
                };
                let allowed = before.as_ref().is_some_and(|b| !b.run.status.is_terminal());
                judge(self, "cancel", before.as_ref(), down, allowed, &res);
                if res.is_ok() {
                    self.expect_cancelled(&id);
                }
            }
            Op::Retry { run: r } => {
                let Some(id) = run(r, &self.runs) else {
                    return;
                };
                if self.known(Defect::RetrySplitAcrossCommits) && faulty {
                    self.trace
                        .push("  skipped: retry on a failing store (known defect)".into());
                    return;
                }
                let before = self.before(&id, stable);
                let engine = self.env.engine.clone();
                let Some(res) = self
                    .call("retry", engine.retry(DEFAULT_WORKSPACE, &id))
                    .await
                else {
                    return;
                };
                let allowed = before
                    .as_ref()
                    .is_some_and(|b| b.run.status == RunStatus::Failed);
                judge(self, "retry", before.as_ref(), down, allowed, &res);
                if let Ok(rec) = &res {
                    self.expect_retried(&id, rec.attempt);
                }
            }
            Op::Advance { secs } => self
                .env
                .clock
                .advance(Duration::from_secs(u64::from(*secs))),
            Op::FailNext { skip, fail } => {
                if !self.known(Defect::CommitFailureReloadsRuns) {
                    self.env.store.fail_next(u32::from(*skip), u32::from(*fail));
                    return;
                }
                // Only one failure, of a command's own batch, on runs with nothing in flight
                // or in backoff: the reload that follows a failure then re-runs nothing.
                let command_next = next.is_some_and(|a| is_command(&a.op));
                if settled && command_next && !self.any_retry_timer() {
                    self.env.store.fail_next(0, 1);
                    self.disarm_after_next_op();
                } else {
                    self.trace.push("  skipped (known defect)".into());
                }
            }
            Op::FailRandomly { percent, seed } => {
                if self.known(Defect::CommitFailureReloadsRuns) {
                    self.trace.push("  skipped (known defect)".into());
                } else {
                    // Bounded, so an engine that backs off between retries still settles soon.
                    self.env
                        .store
                        .fail_randomly(f64::from(*percent) / 100.0, 12, *seed);
                }
            }
            Op::Outage => {
                if self.known(Defect::CommitFailureReloadsRuns) {
                    self.trace.push("  skipped (known defect)".into());
                } else {
                    self.env.store.go_down();
                }
            }
            Op::Heal => self.env.store.heal(),
            Op::Crash { clean } => self.crash(*clean).await,
        }
    }

    pub async fn create(
        &mut self,
        choice: &super::model::RunChoice,
        key: Option<u8>,
        expect_ok: bool,
        down: bool,
    ) {
        let input = self.wf.input(
            &self.env.server.base(),
            choice,
            stepwise::clock::Clock::now(&self.env.clock),
        );
        let idem = key.map(|k| format!("{}-k{k}", self.tag));
        let prior = key.and_then(|k| self.keys.get(&k).cloned());
        let req = CreateRun {
            workspace_id: DEFAULT_WORKSPACE.into(),
            definition: self.slug.clone(),
            input,
            idempotency_key: idem,
            trigger: json!({"kind": "api", "label": "faults"}),
        };
        let engine = self.env.engine.clone();
        let Some(r) = self.call("create_run", engine.create_run(req)).await else {
            return;
        };
        match r {
            Ok((rec, created)) => {
                self.trace.push(format!("  → {} created={created}", rec.id));
                if created && down {
                    self.v.add(
                        Invariant::CommandOutcome,
                        format!(
                            "run {} was created while the store refused every commit",
                            rec.id
                        ),
                    );
                }
                match (&prior, created) {
                    (Some(p), _) if p != &rec.id || created => self.v.add(
                        Invariant::CommandOutcome,
                        format!("key {key:?} of run {p} created another run {}", rec.id),
                    ),
                    (None, false) => self.v.add(
                        Invariant::CommandOutcome,
                        format!(
                            "a create with a new key returned an existing run {}",
                            rec.id
                        ),
                    ),
                    _ => {}
                }
                if let Some(k) = key {
                    self.keys.insert(k, rec.id.clone());
                }
                if !self.runs.contains(&rec.id) {
                    self.runs.push(rec.id.clone());
                }
                self.expect_exists(&rec.id);
            }
            Err(e) => {
                self.trace.push(format!("  → refused: {e}"));
                if expect_ok {
                    self.v.add(
                        Invariant::CommandOutcome,
                        format!("create refused on a healthy store: {e}"),
                    );
                }
            }
        }
    }

    fn indices(&self, f: impl Fn(&Kind) -> bool) -> Vec<usize> {
        (0..self.wf.steps.len())
            .filter(|&i| f(&self.wf.steps[i].kind))
            .collect()
    }

    fn before(&mut self, id: &str, stable: bool) -> Option<RunView> {
        if stable { self.view(id) } else { None }
    }

    fn any_retry_timer(&mut self) -> bool {
        let runs = self.runs.clone();
        self.views(&runs)
            .iter()
            .any(|v| v.timers.iter().any(|t| t.kind == TimerKind::Retry))
    }

    /// Stop the engine as a crash would (the store refusing the last commits) or cleanly,
    /// and start a new one on the same store: it must recover every run.
    async fn crash(&mut self, clean: bool) {
        let dirty = !clean
            && !self.known(Defect::CommitFailureReloadsRuns)
            && !self.known(Defect::RecoveryIgnoresBackoff);
        if dirty {
            self.env.store.go_down();
        } else {
            self.env.store.heal();
            self.settle().await;
            if self.hung {
                return;
            }
            if self.known(Defect::RecoveryIgnoresBackoff) && self.any_retry_timer() {
                self.trace
                    .push("  skipped: a step is in backoff (known defect)".into());
                return;
            }
        }
        let engine = self.env.engine.clone();
        let stopped = self
            .call("shutdown", async move {
                engine.shutdown().await;
                Ok(())
            })
            .await;
        if stopped.is_none() {
            return;
        }
        self.env.store.heal();
        self.restart_engine();
    }
}

pub async fn signal(
    ctx: &mut Ctx<'_>,
    run: &str,
    before: Option<&RunView>,
    down: bool,
    i: usize,
    valid: bool,
) {
    let sid = step_id(i);
    let mut payload = json!({"op": ctx.seq});
    if valid {
        payload["for"] = json!(sid);
    }
    let waiting = before.is_some_and(|b| b.status_of(i) == Some(StepStatus::Waiting));
    // Signals to a step that waits while the run is RUNNING or PAUSED are refused (known).
    let refused_by_defect = ctx.known(Defect::SignalRefusedWhileRunning)
        && before.is_some_and(|b| b.run.status != RunStatus::Waiting);
    if refused_by_defect && waiting && valid {
        ctx.trace
            .push("  skipped: run not WAITING (known defect)".into());
        return;
    }
    let resume = Resume::Signal {
        signal_type: signal_of(i),
        payload: payload.clone(),
    };
    let engine = ctx.env.engine.clone();
    let Some(res) = ctx
        .call(
            "signal",
            engine.resume(DEFAULT_WORKSPACE, run, resume, ACTOR),
        )
        .await
    else {
        return;
    };
    judge(
        ctx,
        &format!("signal to {sid}"),
        before,
        down,
        waiting && valid,
        &res,
    );
    if res.is_ok() {
        ctx.expect_resumed(run, i, payload, before);
    }
}

pub async fn approve(
    ctx: &mut Ctx<'_>,
    run: &str,
    before: Option<&RunView>,
    down: bool,
    i: usize,
    option: u8,
) {
    let sid = step_id(i);
    let choice = options_of(i)
        .get(usize::from(option))
        .cloned()
        .unwrap_or_else(|| format!("maybe_{sid}"));
    let resume = Resume::Approval {
        step: sid.clone(),
        input: json!(choice),
    };
    let engine = ctx.env.engine.clone();
    let Some(res) = ctx
        .call(
            "approve",
            engine.resume(DEFAULT_WORKSPACE, run, resume, ACTOR),
        )
        .await
    else {
        return;
    };
    let waiting = before.is_some_and(|b| b.status_of(i) == Some(StepStatus::Waiting));
    judge(
        ctx,
        &format!("approval of {sid} with {choice}"),
        before,
        down,
        waiting && option < 2,
        &res,
    );
    if res.is_ok() {
        ctx.expect_resumed(run, i, json!(choice), before);
    }
}

pub async fn resume_hook(
    ctx: &mut Ctx<'_>,
    run: &str,
    before: Option<&RunView>,
    down: bool,
    hook: &HookRecord,
    twice: bool,
) {
    let Some(i) = hook
        .step_id
        .strip_prefix('s')
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return;
    };
    let event = hook.kind == "external_event";
    if event && ctx.known(Defect::HookResumesFirstWaitingStep) {
        let now = match before {
            Some(b) => Some(b.clone()),
            None => ctx.view(run),
        };
        let waiting_events = now.map_or(2, |v| {
            (0..ctx.wf.steps.len())
                .filter(|&j| {
                    matches!(ctx.wf.steps[j].kind, Kind::Event { .. })
                        && v.status_of(j) == Some(StepStatus::Waiting)
                })
                .count()
        });
        if waiting_events > 1 {
            ctx.trace
                .push("  skipped: several events wait (known defect)".into());
            return;
        }
    }
    let (payload, value) = if event {
        let p = json!({"for": hook.step_id, "op": ctx.seq});
        (p.clone(), p)
    } else {
        let option = options_of(i)[(ctx.seq % 2) as usize].clone();
        (json!({"option": option}), json!(option))
    };
    let twice = twice && !ctx.known(Defect::HookUsableTwice);
    let engine = ctx.env.engine.clone();
    let results = if twice {
        let (e1, e2) = (engine.clone(), engine.clone());
        let (p1, p2) = (payload.clone(), payload.clone());
        let both = async {
            let (a, b) = tokio::join!(
                e1.resume_hook(&hook.token, p1, "hook"),
                e2.resume_hook(&hook.token, p2, "hook")
            );
            Ok(vec![a, b])
        };
        ctx.call("resume_hook twice", both).await
    } else {
        let one = async {
            Ok(vec![
                engine
                    .resume_hook(&hook.token, payload.clone(), "hook")
                    .await,
            ])
        };
        ctx.call("resume_hook", one).await
    };
    let Some(Ok(results)) = results else {
        return;
    };
    let oks = results.iter().filter(|r| r.is_ok()).count();
    let allowed = hook.status == "pending"
        && before.is_some_and(|b| b.status_of(i) == Some(StepStatus::Waiting));
    let first = results.into_iter().find(|r| r.is_ok()).unwrap_or_else(|| {
        Err(EngineError::Conflict(
            "every use of the hook was refused".into(),
        ))
    });
    judge(
        ctx,
        &format!("hook of {}", hook.step_id),
        before,
        down,
        allowed,
        &first,
    );
    if oks > 1 {
        ctx.v.add(
            Invariant::ResumeTarget,
            format!(
                "hook {} of {} was accepted {oks} times",
                hook.token, hook.step_id
            ),
        );
    }
    if oks > 0 {
        if !ctx.used_tokens.insert(hook.token.clone()) {
            ctx.v.add(
                Invariant::ResumeTarget,
                format!(
                    "hook {} of {} was accepted again after it was used",
                    hook.token, hook.step_id
                ),
            );
        }
        ctx.expect_resumed(run, i, value, before);
    }
}

/// Answer a waiting event in the drain: by signal, or by its hook when a known defect
/// refuses the signal.
pub async fn answer_event(ctx: &mut Ctx<'_>, v: &RunView, stable: bool, i: usize) {
    let before = stable.then_some(v);
    if ctx.known(Defect::SignalRefusedWhileRunning) && v.run.status != RunStatus::Waiting {
        let sid = step_id(i);
        let hook = v
            .hooks
            .iter()
            .find(|h| h.step_id == sid && h.status == "pending")
            .cloned();
        if let Some(h) = hook {
            resume_hook(ctx, &v.run.id, before, false, &h, false).await;
        }
        return;
    }
    signal(ctx, &v.run.id, before, false, i, true).await;
}
