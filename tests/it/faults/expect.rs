//! What the case remembers between its steps, and checks against: finished records seen
//! (they must never change), executor calls at completion (there must be no more), and the
//! effects acknowledged commands promised.

use std::collections::{HashMap, HashSet};

use stepwise::model::{RunStatus, StepStatus};

use super::Defect;
use super::checks::{self, Invariant, RunView, Scope};
use super::runner::Ctx;

/// A successful command whose effect must be durable once the engine settles on a healthy
/// store.
#[derive(Debug)]
pub enum Expect {
    Exists(String),
    Cancelled(String),
    Retried {
        run: String,
        attempt: i64,
    },
    /// `step` completed with `value`; `others` (waiting before) did not.
    Resumed {
        run: String,
        step: usize,
        value: serde_json::Value,
        others: Vec<usize>,
    },
}

impl Ctx<'_> {
    fn scope(&self, settled: bool) -> Scope {
        let reload = self.known(Defect::CommitFailureReloadsRuns)
            && self.env.store.failed_commits() > self.failed_before;
        let recovery = self.known(Defect::RecoveryIgnoresBackoff) && self.crashes > 0;
        Scope {
            settled: settled && !self.env.store.is_faulty(),
            retry_spacing: !reload && !recovery,
            timers_after_retry: !self.known(Defect::StaleTimersAfterRetry),
            retry_budget: !self.known(Defect::RunRetryGivesOneAttempt),
            max_suspended_secs: i64::try_from(self.env.config.max_suspended.as_secs())
                .unwrap_or(i64::MAX),
        }
    }

    /// Every invariant over the case's runs, and the expectations of earlier commands.
    pub async fn check(&mut self, settled: bool) {
        let runs = self.runs.clone();
        let views = self.views(&runs);
        let scope = self.scope(settled);
        for view in &views {
            checks::check_run(self.wf, view, scope, &mut self.v);
            self.check_kept(view);
            self.check_executions(view);
        }
        for early in self.env.server.take_early() {
            self.v.add(Invariant::StartCommittedFirst, early);
        }
        if scope.settled {
            self.check_expectations(&views);
        }
    }

    /// Finished step records never change; finished runs stay finished (a FAILED run only
    /// through a retry).
    fn check_kept(&mut self, view: &RunView) {
        let cancel_rewrites = self.known(Defect::CancelRewritesFailedAttempt);
        for r in &view.steps {
            let key = (r.run_id.clone(), r.step_id.clone(), r.attempt);
            match self.done_seen.get(&key) {
                Some(old)
                    if old != r
                        && !(cancel_rewrites
                            && old.status == StepStatus::Failed
                            && r.status == StepStatus::Cancelled) =>
                {
                    self.v.add(
                        Invariant::CompletionKept,
                        format!("{} {} attempt {} changed after it finished:\n  was {old:?}\n  now {r:?}", r.run_id, r.step_id, r.attempt),
                    )
                }
                Some(_) => {}
                None if matches!(
                    r.status,
                    StepStatus::Completed | StepStatus::Skipped | StepStatus::Failed
                ) =>
                {
                    self.done_seen.insert(key, r.clone());
                }
                None => {}
            }
        }
        let run = &view.run;
        if let Some((status, attempt)) = self.ended_seen.get(&run.id)
            && (run.status != *status || run.attempt != *attempt)
            && !(*status == RunStatus::Failed && run.attempt > *attempt)
        {
            self.v.add(
                Invariant::CompletionKept,
                format!(
                    "{} ended {status} (attempt {attempt}) and is now {} (attempt {})",
                    run.id, run.status, run.attempt
                ),
            );
        }
        if run.status.is_terminal() {
            self.ended_seen
                .insert(run.id.clone(), (run.status, run.attempt));
        } else {
            self.ended_seen.remove(&run.id);
        }
        let gone: Vec<String> = self
            .done_seen
            .keys()
            .filter(|(run, step, attempt)| {
                run == &view.run.id
                    && !view
                        .steps
                        .iter()
                        .any(|r| &r.step_id == step && r.attempt == *attempt)
            })
            .map(|(_, s, a)| format!("{s} attempt {a}"))
            .collect();
        if !gone.is_empty() {
            self.v.add(
                Invariant::CompletionKept,
                format!("{}: finished records disappeared: {gone:?}", view.run.id),
            );
        }
    }

    /// Executor calls per step: at most one per attempt (plus one per crash), and none after
    /// the completion was committed.
    fn check_executions(&mut self, view: &RunView) {
        for (i, step) in self.wf.steps.iter().enumerate() {
            if step.kind.attempts().is_none() {
                continue;
            }
            let sid = super::model::step_id(i);
            let key = format!("{}:{sid}", view.run.id);
            let hits = self.env.server.hits(&key);
            let attempts: HashSet<i64> = view
                .steps
                .iter()
                .filter(|r| r.step_id == sid && r.status != StepStatus::Pending)
                .map(|r| r.attempt)
                .collect();
            if hits > attempts.len() as u32 + self.crashes {
                self.v.add(
                    Invariant::ExecutedOnce,
                    format!(
                        "{key}: {hits} calls for {} started attempts ({} crashes)",
                        attempts.len(),
                        self.crashes
                    ),
                );
            }
            if view.status_of(i) == Some(StepStatus::Completed) {
                let first = *self.hits_at_done.entry(key.clone()).or_insert(hits);
                if hits != first {
                    self.v.add(
                        Invariant::ExecutedOnce,
                        format!("{key}: called again after its completion was committed ({first} → {hits})"),
                    );
                }
            }
        }
    }

    fn check_expectations(&mut self, views: &[RunView]) {
        let by_id: HashMap<&str, &RunView> = views.iter().map(|v| (v.run.id.as_str(), v)).collect();
        let mut left = Vec::new();
        for e in std::mem::take(&mut self.expect) {
            let fine = match &e {
                Expect::Exists(id) => by_id.contains_key(id.as_str()),
                Expect::Cancelled(id) => {
                    by_id.get(id.as_str()).map(|v| v.run.status) == Some(RunStatus::Cancelled)
                }
                Expect::Retried { run, attempt } => by_id
                    .get(run.as_str())
                    .is_some_and(|v| v.run.attempt >= *attempt),
                Expect::Resumed {
                    run,
                    step,
                    value,
                    others,
                } => {
                    let Some(v) = by_id.get(run.as_str()) else {
                        left.push(e);
                        continue;
                    };
                    let completed_with = |i: usize| {
                        let sid = super::model::step_id(i);
                        v.steps.iter().any(|r| {
                            r.step_id == sid
                                && r.status == StepStatus::Completed
                                && r.output.as_ref() == Some(value)
                        })
                    };
                    if let Some(&o) = others.iter().find(|&&o| completed_with(o)) {
                        self.v.add(
                            Invariant::ResumeTarget,
                            format!("{run}: the resume meant for s{step} completed s{o}"),
                        );
                    }
                    completed_with(*step)
                }
            };
            if !fine {
                self.v.add(
                    Invariant::CommandOutcome,
                    format!("acknowledged but not in the store once settled: {e:?}"),
                );
            }
        }
        self.expect = left;
    }

    pub fn expect_resumed(
        &mut self,
        run: &str,
        step: usize,
        value: serde_json::Value,
        before: Option<&RunView>,
    ) {
        let others = before
            .map(|b| {
                (0..self.wf.steps.len())
                    .filter(|&j| {
                        j != step
                            && self.wf.steps[j].kind.hooked()
                            && b.status_of(j) == Some(StepStatus::Waiting)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.expect.push(Expect::Resumed {
            run: run.to_string(),
            step,
            value,
            others,
        });
        self.stats.resumes += 1;
    }

    pub fn expect_exists(&mut self, id: &str) {
        self.expect.push(Expect::Exists(id.to_string()));
    }

    pub fn expect_cancelled(&mut self, id: &str) {
        self.expect.push(Expect::Cancelled(id.to_string()));
    }

    pub fn expect_retried(&mut self, id: &str, attempt: i64) {
        self.expect.push(Expect::Retried {
            run: id.to_string(),
            attempt,
        });
    }

    /// A refused command changes nothing (checked when the engine was idle before it).
    pub fn unchanged(&mut self, what: &str, before: &RunView) {
        let Some(after) = self.view(&before.run.id) else {
            return;
        };
        let same = after.run.status == before.run.status
            && after.run.attempt == before.run.attempt
            && after.steps == before.steps
            && after.hooks == before.hooks
            && after.signals == before.signals;
        if !same {
            self.v.add(
                Invariant::CommandOutcome,
                format!("{what} was refused but changed run {}", before.run.id),
            );
        }
    }
}
