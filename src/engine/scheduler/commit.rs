//! Committing a batch, and what happens when the store refuses: the runs involved go back
//! to their committed state, finished executor work is kept and applied again, commands are
//! refused at once with `UNAVAILABLE`, and the commit is retried with a growing delay.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::batch::{Batch, Start, coalesce};
use super::{Command, Scheduler};
use crate::engine::EngineError;
use crate::model::StepStatus;
use crate::store::{StoreError, Write};

/// A store that keeps failing is reported this often, not on every retry.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// The store refuses commits.
pub(super) struct Failing {
    since: Instant,
    retry_at: Instant,
    delay: Duration,
    message: String,
    /// Runs whose committed state could not be read back yet.
    stale: HashSet<String>,
}

impl Failing {
    pub fn retry_in(&self) -> Duration {
        self.retry_at.saturating_duration_since(Instant::now())
    }

    fn due(&self) -> bool {
        Instant::now() >= self.retry_at
    }
}

/// Failed commits reach the log at most once per `REPORT_EVERY`, with a count of the rest:
/// a full disk under load fails many commits, and each would otherwise be a line.
#[derive(Default)]
pub(super) struct FailureLog {
    reported_at: Option<Instant>,
    unreported: u64,
}

impl FailureLog {
    fn note(&mut self, message: &str) {
        if self.reported_at.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            self.unreported += 1;
            return;
        }
        if self.unreported > 0 {
            tracing::error!(
                "{message} ({} more failed commits since the last report)",
                self.unreported
            );
        } else {
            tracing::error!("{message}; refusing changes and retrying");
        }
        self.reported_at = Some(Instant::now());
        self.unreported = 0;
    }
}

impl Scheduler {
    /// Commit the batch, then answer, notify, start steps and advance; repeat while that made
    /// new writes. While the store fails, only at the retry time.
    pub(super) fn flush(&mut self) {
        loop {
            self.process_children();
            if let Some(f) = &self.failing {
                if !f.due() {
                    return;
                }
                let stale: Vec<String> = f.stale.iter().cloned().collect();
                self.roll_back(stale);
            }
            if self.batch.is_empty() {
                if self.failing.is_some() {
                    // Nothing to commit: a small write says whether the store is back. It
                    // can succeed on a disk that is still full (SQLite reuses its log); then
                    // the next commit that fails starts the outage again.
                    match self.store.probe() {
                        Ok(()) => self.recovered(),
                        Err(e) => self.note_failure(&e),
                    }
                }
                return;
            }
            let batch = std::mem::take(&mut self.batch);
            if !self.commit(batch) {
                return;
            }
        }
    }

    fn commit(&mut self, batch: Batch) -> bool {
        let Batch {
            writes,
            replies,
            updates,
            touched,
            starts,
            aborts,
            facts,
            ..
        } = batch;
        let writes = coalesce(writes);
        let began = Instant::now();
        let committed = self.store.commit(&writes);
        self.engine
            .metrics()
            .commit_latency
            .observe(began.elapsed().as_secs_f64());
        match committed {
            Ok(()) => {
                self.count_committed(writes.len(), facts);
                self.outcomes.clear();
                self.recovered();
                for id in &touched {
                    if let Some(run) = self.active.get_mut(id) {
                        for s in &mut run.slots {
                            s.committed = true;
                        }
                    }
                }
                for r in replies {
                    r(None);
                }
                for u in updates {
                    let _ = self.engine.inner.updates.send(u);
                }
                for (_, _, task) in aborts {
                    task.abort();
                }
                for s in starts {
                    self.launch(s);
                }
                let touched: Vec<String> = touched.into_iter().collect();
                for id in &touched {
                    self.advance(id);
                }
                // Runs that finished or began waiting freed slots.
                self.drain_limits();
                self.evict(&touched);
                true
            }
            Err(e @ (StoreError::Fenced(_) | StoreError::DuplicateKey(_))) => {
                // Fenced: another process took these runs over. They leave memory without
                // side effects (their executors stop; what they did is redone by the new
                // owner as after a crash). DuplicateKey: another process created a run with
                // the same idempotency key a moment earlier (a client that retried at
                // another process); ours never existed. Either way the other runs go back
                // to their committed state and commit again at once; callers of the batch
                // hear that nothing changed, and a retried create finds the existing run.
                let lost = match &e {
                    StoreError::Fenced(lost) => lost.clone(),
                    StoreError::DuplicateKey(key) => created_with_key(&writes, key),
                    _ => Vec::new(),
                };
                for r in replies {
                    r(Some(&e));
                }
                tracing::warn!("{e}: {lost:?} dropped from this process");
                for (run_id, step, task) in aborts {
                    match self.active.get_mut(&run_id) {
                        Some(run) if !lost.contains(&run_id) => {
                            run.tasks.insert(step, task);
                        }
                        _ => task.abort(),
                    }
                }
                self.drop_lost(&lost);
                let rest: Vec<String> = touched
                    .into_iter()
                    .filter(|id| !lost.contains(id))
                    .collect();
                self.roll_back(rest);
                false
            }
            Err(e) => {
                for r in replies {
                    r(Some(&e));
                }
                // `starts` are dropped: a step whose start is not durable never executes.
                // Executors a change meant to stop go back to their runs, which roll back.
                for (run_id, step, task) in aborts {
                    match self.active.get_mut(&run_id) {
                        Some(run) => {
                            run.tasks.insert(step, task);
                        }
                        None => task.abort(),
                    }
                }
                self.note_failure(&e);
                self.roll_back(touched.into_iter().collect());
                false
            }
        }
    }

    fn recovered(&mut self) {
        if let Some(f) = self.failing.take() {
            tracing::info!(
                "the store accepts commits again after {:.1?}",
                f.since.elapsed()
            );
            self.engine.set_store_error(None);
        }
    }

    fn note_failure(&mut self, e: &StoreError) {
        let message = format!("the store refuses commits: {e}");
        self.engine.metrics().store_errors.inc();
        let (first, max) = (
            self.engine.config().commit_retry_first,
            self.engine.config().commit_retry_max,
        );
        self.failure_log.note(&message);
        match &mut self.failing {
            None => {
                let now = Instant::now();
                self.failing = Some(Failing {
                    since: now,
                    retry_at: now + first,
                    delay: first,
                    message: message.clone(),
                    stale: HashSet::new(),
                });
            }
            Some(f) => {
                f.delay = (f.delay * 2).min(max);
                f.retry_at = Instant::now() + f.delay;
                f.message.clone_from(&message);
            }
        }
        self.engine.set_store_error(Some(message));
    }

    /// Put runs back to their committed state, keeping executors that still run and applying
    /// again the results that arrived since; a step that was running without either (its
    /// executor was stopped by a change that did not commit) runs again, as after a crash.
    fn roll_back(&mut self, ids: Vec<String>) {
        self.batch.pending_keys.clear();
        // Timers that fired in the failed batch still have their rows: queue them again.
        self.timers.reload_soon();
        for id in ids {
            let old = self.active.remove(&id);
            if !self.reload(&id) && self.held_elsewhere() {
                if let Some(old) = old {
                    for t in old.tasks.values() {
                        t.abort();
                    }
                }
                self.drop_lost(std::slice::from_ref(&id));
                continue;
            }
            if !self.active.contains_key(&id) {
                let readable = matches!(self.store.run(&id), Ok(None));
                if let Some(old) = old {
                    if readable {
                        // Created in the failed batch: it never existed.
                        for t in old.tasks.values() {
                            t.abort();
                        }
                    } else {
                        self.active.insert(id.clone(), old);
                    }
                }
                if let Some(f) = self.failing.as_mut() {
                    if readable {
                        f.stale.remove(&id);
                    } else {
                        f.stale.insert(id);
                    }
                }
                continue;
            }
            if let Some(f) = self.failing.as_mut() {
                f.stale.remove(&id);
            }
            let Some(mut run) = self.active.remove(&id) else {
                continue;
            };
            if let Some(mut old) = old {
                for (i, task) in old.tasks.drain() {
                    let same = old.slots.get(i).map(|s| s.attempt)
                        == run.slots.get(i).map(|s| s.attempt)
                        && run.slots.get(i).map(|s| s.status) == Some(StepStatus::Running);
                    if same {
                        run.tasks.insert(i, task);
                    } else {
                        task.abort();
                    }
                }
            }
            let outcomes: Vec<usize> = self
                .outcomes
                .iter()
                .enumerate()
                .filter(|(_, o)| o.run_id == id)
                .map(|(k, _)| k)
                .collect();
            for (i, slot) in run.slots.iter_mut().enumerate() {
                let awaited = run.tasks.contains_key(&i)
                    || outcomes.iter().any(|&k| self.outcomes[k].step == i);
                if slot.status == StepStatus::Running && !awaited && !run.rec.status.is_terminal() {
                    slot.status = StepStatus::Pending;
                }
            }
            self.active.insert(id.clone(), run);
            self.resume_retries(&id);
            for k in outcomes {
                let o = &self.outcomes[k];
                let (run_id, step, attempt, result) =
                    (o.run_id.clone(), o.step, o.attempt, o.result.clone());
                self.apply_outcome(&run_id, step, attempt, result);
            }
            self.batch.touched.insert(id);
        }
    }

    /// Runs another process took over leave memory: executors stopped, results dropped.
    pub(super) fn drop_lost(&mut self, lost: &[String]) {
        for id in lost {
            if let Some(run) = self.active.remove(id) {
                for t in run.tasks.values() {
                    t.abort();
                }
            }
            self.outcomes.retain(|o| &o.run_id != id);
            self.store.forget_run(id);
            if let Some(f) = self.failing.as_mut() {
                f.stale.remove(id);
            }
        }
    }

    /// Hand a step whose start committed to its executor.
    fn launch(&mut self, s: Start) {
        let Some(run) = self.active.get_mut(&s.run_id) else {
            return;
        };
        let current = run
            .slots
            .get(s.step)
            .is_some_and(|slot| slot.status == StepStatus::Running && slot.attempt == s.attempt);
        if !current {
            return;
        }
        let tx = self.engine.inner.tx.clone();
        let (run_id, step, attempt, fut) = (s.run_id, s.step, s.attempt, s.fut);
        let handle = self.exec.spawn(async move {
            let result = fut.await;
            let _ = tx.send(Command::Done {
                run_id,
                step,
                attempt,
                result,
            });
        });
        run.tasks.insert(step, handle.abort_handle());
    }

    /// While the store fails, commands that would change a run are refused at once.
    pub(super) fn refuse_while_failing(&mut self, cmd: Command) -> Option<Command> {
        let Some(f) = &self.failing else {
            return Some(cmd);
        };
        let err = || EngineError::Unavailable(format!("{}; try again later", f.message));
        match cmd {
            Command::Create { reply, .. } => {
                let _ = reply.send(Err(err()));
                None
            }
            Command::Cancel { reply, .. }
            | Command::Resume { reply, .. }
            | Command::Retry { reply, .. } => {
                let _ = reply.send(Err(err()));
                None
            }
            Command::Signal { reply, .. } => {
                let _ = reply.send(Err(err()));
                None
            }
            // The alert stays due: it is attempted again once the store is back.
            Command::AlertDone { reply, .. } => {
                let _ = reply.send(Err(err()));
                None
            }
            other => Some(other),
        }
    }
}

/// Runs the batch creates under an idempotency key.
fn created_with_key(writes: &[Write], key: &str) -> Vec<String> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::InsertRun(r) if r.idempotency_key.as_deref() == Some(key) => Some(r.id.clone()),
            _ => None,
        })
        .collect()
}
