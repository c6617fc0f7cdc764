//! Loading runs into memory, recovering them after a restart, and dropping them again.

use serde_json::json;

use super::Scheduler;
use super::policy::retries_left;
use crate::engine::EngineError;
use crate::engine::state::Active;
use crate::model::{EventKind, RunStatus, StepStatus};
use crate::store::TimerKind;

/// Runs taken over in one go on a shared store (the next pass takes more).
const RECLAIM_LIMIT: usize = 1000;
/// Runs loaded with one store call.
const LOAD_CHUNK: usize = 500;

impl Scheduler {
    /// Whether a run not in memory is held by another process (a shared store): claiming
    /// it failed. Only meaningful right after `get_or_load` returned `None`.
    pub(super) fn held_elsewhere(&self) -> bool {
        self.elsewhere
    }

    /// The run in memory, loaded (claimed first) if it is not. A run that is loaded here
    /// unfinished was being executed by a process that stopped (this one before a restart,
    /// or another that was killed or let go of it): it is recovered as a takeover would,
    /// whoever claimed it (a takeover pass, a command, a timer), or the steps it had in
    /// flight would never run again while this process renews its lease.
    pub(super) fn get_or_load(&mut self, id: &str) -> Option<&mut Active> {
        self.elsewhere = false;
        if !self.active.contains_key(id) {
            if !self.load(id) {
                return None;
            }
            self.take_over(id);
        }
        self.active.get_mut(id)
    }

    /// Load runs this process has claimed into memory (those already there stay as they
    /// are): their rows in one store call, each definition version read once at most.
    fn load_claimed(&mut self, ids: &[String]) {
        let loaded = match self.store.runs_with_steps(ids) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot load runs {ids:?}: {e}");
                return;
            }
        };
        for (rec, steps) in loaded {
            if self.active.contains_key(&rec.id) {
                continue;
            }
            let def = match self.compiled_of(&rec.workspace_id, &rec.definition_id) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!("cannot load the definition of run {}: {e}", rec.id);
                    continue;
                }
            };
            self.active
                .insert(rec.id.clone(), Active::load(rec, def, steps));
        }
    }

    /// A run's definition version: compiled already in this process, or read and compiled.
    fn compiled_of(
        &self,
        workspace_id: &str,
        version_id: &str,
    ) -> Result<std::sync::Arc<crate::engine::compiled::Compiled>, String> {
        if let Some(c) = self.engine.compiled_cached(workspace_id, version_id) {
            return Ok(c);
        }
        self.store
            .definition(workspace_id, version_id)
            .map_err(|e| e.to_string())
            .and_then(|d| d.ok_or_else(|| "its definition version is missing".to_string()))
            .and_then(|d| self.engine.compiled_record(d).map_err(|e| e.to_string()))
    }

    /// Read a run this process had in memory back from its committed rows (after a
    /// refused commit): its executors are still running, so nothing is recovered.
    pub(super) fn reload(&mut self, id: &str) -> bool {
        self.elsewhere = false;
        self.load(id)
    }

    /// Claim a run and read it into memory; `false` when another live process holds it
    /// (`held_elsewhere`), or it is missing or unreadable.
    fn load(&mut self, id: &str) -> bool {
        match self.store.claim_run(id) {
            Ok(true) => {}
            Ok(false) => {
                self.elsewhere = true;
                return false;
            }
            Err(e) => {
                tracing::error!("cannot claim run {id}: {e}");
                return false;
            }
        }
        self.load_claimed(&[id.to_string()]);
        self.active.contains_key(id)
    }

    /// A PENDING or RUNNING run just loaded goes on here: its in-flight steps run again,
    /// it takes its place in its workflow's queue, and it is advanced after the next commit.
    fn take_over(&mut self, id: &str) {
        let unfinished = self
            .active
            .get(id)
            .is_some_and(|r| matches!(r.rec.status, RunStatus::Pending | RunStatus::Running));
        if !unfinished {
            return;
        }
        self.prepare_recovered(id);
        // Oldest first: limited workflows start their PENDING runs in this order.
        if let Some(run) = self.active.remove(id) {
            self.enqueue_run(&run);
            self.active.insert(id.to_string(), run);
        }
        self.batch.touched.insert(id.to_string());
    }

    /// Take a run out of memory for a command (loading it if needed); 404 for an unknown
    /// run or another workspace's. Give it back with [`Scheduler::restore`].
    pub(super) fn lookup(
        &mut self,
        workspace_id: Option<&str>,
        run_id: &str,
    ) -> crate::engine::Result<Active> {
        // On a shared store a copy in memory may be stale: this process's lease lapsed (a
        // stall) and another took the run over. Writes are fenced at the commit, but a
        // refusal writes nothing, so the copy must prove itself before it answers. A run
        // with writes in this batch is proven by the batch's fence (its answer waits for
        // the commit).
        if self.store.shared()
            && self.active.contains_key(run_id)
            && !self.batch.touched.contains(run_id)
            && !self.store.holds(run_id)?
        {
            tracing::warn!("run {run_id} was taken over by another process; dropped from this one");
            self.drop_lost(&[run_id.to_string()]);
        }
        let found = self
            .get_or_load(run_id)
            .is_some_and(|r| workspace_id.is_none_or(|ws| ws == r.rec.workspace_id));
        if !found {
            // Another workspace's run is not found, wherever it runs.
            let visible = || -> crate::engine::Result<bool> {
                Ok(self
                    .store
                    .run(run_id)?
                    .is_some_and(|r| workspace_id.is_none_or(|ws| ws == r.workspace_id)))
            };
            if self.held_elsewhere() && visible()? {
                // Another live process runs it right now (a shared store): nothing was
                // changed here; the command goes to that process through the inbox.
                return Err(EngineError::HeldElsewhere(run_id.to_string()));
            }
            self.evict(&[run_id.to_string()]);
            return Err(EngineError::NotFound(format!("run `{run_id}` not found")));
        }
        self.active
            .remove(run_id)
            .ok_or_else(|| EngineError::NotFound(format!("run `{run_id}` not found")))
    }

    /// Put a run back after a command; one that needs no memory (finished, or waiting on
    /// rows) leaves at once, so refused commands cost nothing.
    pub(super) fn restore(&mut self, run: Active) {
        let id = run.rec.id.clone();
        self.active.insert(id.clone(), run);
        if !self.batch.touched.contains(&id) {
            self.evict(&[id]);
        }
    }

    /// Steps in flight when the process stopped run again (same attempt, same
    /// Idempotency-Key, marked in the trace); failed attempts with retries left get their
    /// next attempt.
    fn prepare_recovered(&mut self, id: &str) {
        let Some(run) = self.active.get_mut(id) else {
            return;
        };
        let mut recovered = Vec::new();
        for (i, slot) in run.slots.iter_mut().enumerate() {
            if slot.status == StepStatus::Running {
                slot.status = StepStatus::Pending;
                let step = &run.def.plan.definition.steps[i];
                let reason = if matches!(step.kind, crate::definition::StepKind::Agent(_)) {
                    "the process stopped while this attempt ran; it resumes from its last recorded turn"
                } else {
                    "the process stopped while this attempt ran; it runs again"
                };
                recovered.push((step.id.clone(), slot.attempt, reason));
            }
        }
        for (step_id, attempt, reason) in recovered {
            self.event(
                id,
                EventKind::StepRecovered,
                Some(&step_id),
                json!({"attempt": attempt, "reason": reason}),
            );
        }
        self.resume_retries(id);
    }

    /// A loaded run whose last attempt of a step failed with retries left goes on with the
    /// next attempt: after its stored retry timer if there is one (its backoff continues),
    /// else at once.
    pub(super) fn resume_retries(&mut self, id: &str) {
        let Some(run) = self.active.get(id) else {
            return;
        };
        if run.rec.status != RunStatus::Running {
            return;
        }
        let retrying: Vec<(usize, bool)> = (0..run.slots.len())
            .filter(|&i| {
                let slot = &run.slots[i];
                slot.status == StepStatus::Failed
                    && retries_left(slot, &run.def.plan.definition.steps[i].retry)
            })
            .map(|i| {
                let step_id = &run.def.plan.definition.steps[i].id;
                let timer = self.store.timer(id, step_id, TimerKind::Retry);
                (i, matches!(timer, Ok(Some(_))))
            })
            .collect();
        let Some(run) = self.active.get_mut(id) else {
            return;
        };
        for (i, backing_off) in retrying {
            let slot = &mut run.slots[i];
            slot.status = StepStatus::Pending;
            slot.attempt += 1;
            slot.backoff = backing_off;
        }
    }

    /// Load unfinished runs no process holds: at start, every one (one process), or on a
    /// shared store those whose owner's lease expired (takeover), a bounded number a time.
    pub(super) fn recover(&mut self, starting: bool) {
        let ids = match self.store.claim_orphans(
            &[RunStatus::Pending, RunStatus::Running],
            RECLAIM_LIMIT,
            starting,
        ) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("cannot list runs to recover: {e}");
                Vec::new()
            }
        };
        if !ids.is_empty() {
            tracing::info!("recovering {} unfinished runs", ids.len());
        }
        // A full page: more may be waiting (a backlog, a large takeover); look again at
        // once rather than after `RECLAIM_EVERY`.
        if ids.len() >= RECLAIM_LIMIT {
            self.next_reclaim = std::time::Instant::now();
        }
        // Claimed just now, so loaded without a claim each; in chunks, oldest first. A run
        // still in memory here (its lease had lapsed) keeps its copy and its executors.
        let fresh: Vec<String> = ids
            .into_iter()
            .filter(|id| !self.active.contains_key(id))
            .collect();
        for chunk in fresh.chunks(LOAD_CHUNK) {
            self.load_claimed(chunk);
        }
        for id in &fresh {
            self.take_over(id);
        }
    }

    /// Drop runs that need no memory: finished, or waiting on rows (hooks, timers).
    pub(super) fn evict(&mut self, ids: &[String]) {
        for id in ids {
            let idle = self.active.get(id).is_some_and(|r| {
                (r.rec.status.is_terminal() || r.rec.status.is_suspended())
                    && r.tasks.is_empty()
                    && r.slots
                        .iter()
                        .all(|s| !s.backoff && s.status != StepStatus::Running)
            });
            // A run with writes in the next batch stays until they commit (a shared store
            // fences them by the epoch this process holds while the run is in memory).
            if idle && !self.batch.touched.contains(id) {
                self.active.remove(id);
                self.store.forget_run(id);
            }
        }
    }
}
