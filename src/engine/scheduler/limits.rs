//! Concurrency and rate limits. A run of a workflow with `concurrency` or `rate` starts
//! only when its key has a free slot and the rate window allows; until then it stays
//! PENDING in a FIFO queue (creation order; after a restart, the stored creation order).
//! A step with `concurrency` starts only while fewer attempts of it run, over every run
//! of the workflow; ready attempts queue in the order they became ready.
//!
//! Slots are counted from the runs in memory: RUNNING runs and running steps are always
//! there, and WAITING or PAUSED runs are not, so waiting holds no slot. Nothing here is
//! stored: queues are rebuilt from PENDING rows at recovery, rate windows from the runs'
//! start times.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use jiff::Timestamp;

use super::Scheduler;
use crate::engine::state::Active;
use crate::model::{RunStatus, StepStatus};
use crate::template;

/// (workspace, workflow slug, rendered key or step id).
type QueueKey = (String, String, String);

#[derive(Default)]
pub(super) struct Limits {
    /// PENDING runs waiting for a run slot or the rate window.
    runs: HashMap<QueueKey, VecDeque<String>>,
    /// Runs with a ready step waiting for a slot of that step.
    steps: HashMap<QueueKey, VecDeque<String>>,
    /// Run starts within the rate window, by (workspace, workflow slug).
    starts: HashMap<(String, String), VecDeque<Timestamp>>,
    /// Each limited run's rendered concurrency key.
    keys: HashMap<String, String>,
    /// Runs admitted that may still be PENDING (their first steps queued or skipped).
    admitted: HashSet<String>,
}

impl Limits {
    pub fn is_idle(&self) -> bool {
        self.runs.is_empty() && self.steps.is_empty()
    }
}

fn limited(run: &Active) -> bool {
    let d = &run.def.plan.definition;
    d.concurrency.is_some() || d.rate.is_some()
}

impl Scheduler {
    /// The rendered concurrency key of a run (cached: it reads only the input).
    fn concurrency_key(&mut self, run: &Active) -> String {
        if let Some(k) = self.limits.keys.get(&run.rec.id) {
            return k.clone();
        }
        let key = match run
            .def
            .plan
            .definition
            .concurrency
            .as_ref()
            .and_then(|c| c.key.as_deref())
        {
            None => String::new(),
            Some(t) => {
                let ctx = run.mj_context(&self.secrets.template(&run.rec.workspace_id));
                match template::render_string(t, &ctx, "/concurrency/key") {
                    Ok(v) => super::start::as_text(v),
                    Err(e) => {
                        // The run still gets a key: one shared by every run whose key fails.
                        tracing::warn!("run {}: concurrency key: {e}", run.rec.id);
                        String::new()
                    }
                }
            }
        };
        self.limits.keys.insert(run.rec.id.clone(), key.clone());
        key
    }

    fn run_queue_key(&mut self, run: &Active) -> QueueKey {
        let key = self.concurrency_key(run);
        (
            run.rec.workspace_id.clone(),
            run.def.record.slug.clone(),
            key,
        )
    }

    /// Queue a new (or recovered) PENDING run of a limited workflow: queues keep the order
    /// runs were created in, whatever order they are advanced in.
    pub(super) fn enqueue_run(&mut self, run: &Active) {
        if !limited(run) || run.rec.status != RunStatus::Pending {
            return;
        }
        let qk = self.run_queue_key(run);
        let q = self.limits.runs.entry(qk).or_default();
        if !q.contains(&run.rec.id) {
            q.push_back(run.rec.id.clone());
        }
    }

    /// Whether a PENDING run may start now; if not it stays queued.
    pub(super) fn admit_run(&mut self, run: &Active) -> bool {
        if !limited(run) || self.limits.admitted.contains(&run.rec.id) {
            return true;
        }
        self.enqueue_run(run);
        let qk = self.run_queue_key(run);
        if self.limits.runs.get(&qk).and_then(|q| q.front()) != Some(&run.rec.id) {
            return false;
        }
        let def = &run.def.plan.definition;
        if let Some(c) = &def.concurrency {
            let ids: Vec<String> = self
                .active
                .values()
                .filter(|r| {
                    r.rec.status == RunStatus::Running
                        && r.rec.workspace_id == qk.0
                        && r.def.record.slug == qk.1
                })
                .map(|r| r.rec.id.clone())
                .collect();
            let mut running = 0;
            for id in ids {
                let key = match self.limits.keys.get(&id) {
                    Some(k) => k.clone(),
                    None => match self.active.remove(&id) {
                        Some(r) => {
                            let k = self.concurrency_key(&r);
                            self.active.insert(id.clone(), r);
                            k
                        }
                        None => continue,
                    },
                };
                if key == qk.2 {
                    running += 1;
                }
            }
            if running >= c.limit as usize {
                return false;
            }
        }
        if let Some(r) = &def.rate {
            let per = crate::duration::parse(&r.per).unwrap_or(Duration::from_secs(60));
            let now = self.now();
            let since = jiff::SignedDuration::try_from(per)
                .ok()
                .and_then(|d| now.checked_sub(d).ok())
                .unwrap_or(now);
            let wk = (qk.0.clone(), qk.1.clone());
            if !self.limits.starts.contains_key(&wk) {
                let stored = match self.store.run_starts_since(&qk.0, &qk.1, since) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!("cannot read the rate window of `{}`: {e}", qk.1);
                        return false;
                    }
                };
                self.limits.starts.insert(wk.clone(), stored.into());
            }
            let window = self.limits.starts.entry(wk).or_default();
            while window.front().is_some_and(|t| *t < since) {
                window.pop_front();
            }
            if window.len() >= r.limit as usize {
                return false;
            }
            window.push_back(now);
        }
        self.pop_run(&qk);
        self.limits.admitted.insert(run.rec.id.clone());
        true
    }

    /// Whether ready step `i` of `run` may start now; if not the run queues for it.
    pub(super) fn admit_step(&mut self, run: &Active, i: usize) -> bool {
        let step = &run.def.plan.definition.steps[i];
        let Some(limit) = step.concurrency else {
            return true;
        };
        let qk = (
            run.rec.workspace_id.clone(),
            run.def.record.slug.clone(),
            step.id.clone(),
        );
        let q = self.limits.steps.entry(qk.clone()).or_default();
        if !q.contains(&run.rec.id) {
            q.push_back(run.rec.id.clone());
        }
        if q.front() != Some(&run.rec.id) {
            return false;
        }
        let running = self
            .active
            .values()
            .filter(|r| r.rec.workspace_id == qk.0 && r.def.record.slug == qk.1)
            .filter(|r| {
                r.def
                    .step_index(&qk.2)
                    .is_some_and(|j| r.slots[j].status == StepStatus::Running)
            })
            .count();
        if running >= limit as usize {
            return false;
        }
        if let Some(q) = self.limits.steps.get_mut(&qk) {
            q.pop_front();
            if q.is_empty() {
                self.limits.steps.remove(&qk);
            }
        }
        true
    }

    /// Start what the limits now allow: the heads of the queues, in order, while they are
    /// admitted. Heads that no longer wait (cancelled, gone) leave their queue.
    pub(super) fn drain_limits(&mut self) {
        if self.limits.is_idle() {
            if !self.limits.keys.is_empty() || !self.limits.admitted.is_empty() {
                let active = &self.active;
                self.limits.keys.retain(|id, _| active.contains_key(id));
                self.limits.admitted.retain(|id| active.contains_key(id));
            }
            return;
        }
        let keys: Vec<QueueKey> = self.limits.runs.keys().cloned().collect();
        for qk in keys {
            while let Some(head) = self.limits.runs.get(&qk).and_then(|q| q.front().cloned()) {
                let pending = self
                    .active
                    .get(&head)
                    .is_some_and(|r| r.rec.status == RunStatus::Pending);
                if !pending {
                    self.pop_run(&qk);
                    continue;
                }
                self.advance(&head);
                let still = self.limits.runs.get(&qk).and_then(|q| q.front()) == Some(&head);
                if still {
                    break;
                }
            }
        }
        let keys: Vec<QueueKey> = self.limits.steps.keys().cloned().collect();
        for qk in keys {
            while let Some(head) = self.limits.steps.get(&qk).and_then(|q| q.front().cloned()) {
                let waiting = self.active.get(&head).is_some_and(|r| {
                    !r.rec.status.is_terminal()
                        && r.def
                            .step_index(&qk.2)
                            .is_some_and(|j| r.ready().contains(&j))
                });
                if !waiting {
                    if let Some(q) = self.limits.steps.get_mut(&qk) {
                        q.pop_front();
                        if q.is_empty() {
                            self.limits.steps.remove(&qk);
                        }
                    }
                    continue;
                }
                self.advance(&head);
                let still = self.limits.steps.get(&qk).and_then(|q| q.front()) == Some(&head);
                if still {
                    break;
                }
            }
        }
    }

    fn pop_run(&mut self, qk: &QueueKey) {
        if let Some(q) = self.limits.runs.get_mut(qk) {
            q.pop_front();
            if q.is_empty() {
                self.limits.runs.remove(qk);
            }
        }
    }
}
