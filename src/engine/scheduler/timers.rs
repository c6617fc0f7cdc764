//! Timers: a row per (run, step, kind) in the store, and an in-memory queue of those due
//! soon. A queued entry is only a reminder: when it fires, the stored row must still exist
//! with the same due time, or the entry is stale (the timer was replaced or deleted).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::Scheduler;
use super::policy::add;
use crate::exec::StepError;
use crate::model::{EventKind, StepStatus};
use crate::store::{TimerKind, TimerRecord, Write};

/// Timers due within this window are kept in memory; later ones stay rows until then.
const TIMER_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Entry {
    due: i64,
    run_id: String,
    step_id: String,
    kind: u8,
}

fn kind_code(k: TimerKind) -> u8 {
    match k {
        TimerKind::Wake => 0,
        TimerKind::Deadline => 1,
        TimerKind::Retry => 2,
    }
}

fn code_kind(c: u8) -> TimerKind {
    match c {
        0 => TimerKind::Wake,
        1 => TimerKind::Deadline,
        _ => TimerKind::Retry,
    }
}

#[derive(Default)]
pub(super) struct TimerQueue {
    heap: BinaryHeap<Reverse<Entry>>,
    /// Entries in the heap, keyed with their due time: a timer set again for another time
    /// is a new entry, and the old one turns stale.
    queued: HashSet<Entry>,
    next_refresh: Option<Timestamp>,
}

impl TimerQueue {
    fn push(&mut self, t: &TimerRecord) {
        let e = Entry {
            due: t.due_at.as_microsecond(),
            run_id: t.run_id.clone(),
            step_id: t.step_id.clone(),
            kind: kind_code(t.kind),
        };
        if self.queued.insert(e.clone()) {
            self.heap.push(Reverse(e));
        }
    }

    fn pop_due(&mut self, now: Timestamp) -> Option<TimerRecord> {
        let Reverse(top) = self.heap.peek()?;
        if top.due > now.as_microsecond() {
            return None;
        }
        let Reverse(e) = self.heap.pop()?;
        self.queued.remove(&e);
        Some(TimerRecord {
            due_at: Timestamp::from_microsecond(e.due).unwrap_or(now),
            run_id: e.run_id,
            step_id: e.step_id,
            kind: code_kind(e.kind),
        })
    }

    /// Time until the next entry or the next look at the store.
    pub fn next_due(&self, now: Timestamp) -> Duration {
        let now_us = now.as_microsecond();
        let refresh = self.next_refresh.map_or(now_us, |r| r.as_microsecond());
        let next = self
            .heap
            .peek()
            .map_or(refresh, |Reverse(t)| t.due.min(refresh));
        Duration::from_micros(u64::try_from(next - now_us).unwrap_or(0))
    }

    /// Read the due rows again at the next look (after a failed commit).
    pub fn reload_soon(&mut self) {
        self.next_refresh = None;
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

impl Scheduler {
    pub(super) fn add_timer(
        &mut self,
        run_id: &str,
        step_id: &str,
        kind: TimerKind,
        due: Timestamp,
    ) {
        let t = TimerRecord {
            run_id: run_id.to_string(),
            step_id: step_id.to_string(),
            kind,
            due_at: due,
        };
        let horizon = add(self.now(), TIMER_WINDOW).unwrap_or(due);
        if due <= horizon {
            self.timers.push(&t);
        }
        self.write(Write::PutTimer(t));
    }

    fn refresh_timers(&mut self, now: Timestamp) {
        let horizon = add(now, TIMER_WINDOW).unwrap_or(now);
        match self.store.timers_due(horizon, 100_000) {
            Ok(timers) => {
                for t in &timers {
                    self.timers.push(t);
                }
            }
            Err(e) => tracing::error!("cannot load timers: {e}"),
        }
        self.timers.next_refresh = Some(add(now, TIMER_WINDOW / 2).unwrap_or(now));
    }

    pub(super) fn fire_timers(&mut self) {
        let now = self.now();
        if self.timers.next_refresh.is_none_or(|r| now >= r) {
            self.refresh_timers(now);
        }
        while let Some(t) = self.timers.pop_due(now) {
            match self.store.timer(&t.run_id, &t.step_id, t.kind) {
                Ok(Some(stored)) if stored.due_at == t.due_at => self.fire(&t),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("cannot read a timer of run {}: {e}", t.run_id);
                    self.timers.push(&t);
                    break;
                }
            }
        }
        self.process_children();
    }

    fn fire(&mut self, t: &TimerRecord) {
        let (run_id, step_id, kind) = (t.run_id.as_str(), t.step_id.as_str(), t.kind);
        // Claimed first: on a shared store the process that holds the run fires its
        // timers, and the timer's row stays for it (a timer fires once across processes).
        let loaded = self.get_or_load(run_id).is_some();
        if !loaded && self.held_elsewhere() {
            return;
        }
        self.write(Write::DeleteTimer {
            run_id: run_id.to_string(),
            step_id: step_id.to_string(),
            kind,
        });
        self.batch.touched.insert(run_id.to_string());
        if !loaded {
            return;
        }
        let Some(mut run) = self.active.remove(run_id) else {
            return;
        };
        if let Some(i) = run.def.step_index(step_id)
            && !run.rec.status.is_terminal()
        {
            let slot = &run.slots[i];
            match kind {
                TimerKind::Wake if slot.status == StepStatus::Waiting => {
                    self.event(
                        run_id,
                        EventKind::TimerFired,
                        Some(step_id),
                        json!({"kind": "wake"}),
                    );
                    self.complete(&mut run, i, Value::Null, None, None);
                    self.refresh(&mut run);
                }
                TimerKind::Deadline if slot.status == StepStatus::Waiting => {
                    self.event(
                        run_id,
                        EventKind::TimerFired,
                        Some(step_id),
                        json!({"kind": "deadline"}),
                    );
                    let e = StepError::permanent(
                        "timeout",
                        format!(
                            "step `{step_id}` was not resumed in time; the run timed out while {}",
                            run.rec.status
                        ),
                    );
                    self.fail_attempt(&mut run, i, e);
                }
                TimerKind::Retry if slot.backoff => {
                    run.slots[i].backoff = false;
                    // Without a free slot the attempt queues like any ready step.
                    if self.admit_step(&run, i) {
                        self.start(&mut run, i);
                    }
                    self.refresh(&mut run);
                }
                _ => {}
            }
        }
        self.active.insert(run_id.to_string(), run);
    }
}
