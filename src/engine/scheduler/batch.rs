//! What one commit carries: the writes, and what may happen only once they are durable
//! (answers to callers, update broadcasts, steps handed to executors).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::Scheduler;
use crate::engine::secrets::Secrets;
use crate::engine::{EngineError, Update};
use crate::exec::{Produced, StepError};
use crate::model::EventKind;
use crate::store::{EventRecord, RunRecord, StoreError, Write};

/// Answers a caller once the batch committed (`None`) or failed.
pub(super) type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

pub(super) type StepFuture = Pin<Box<dyn Future<Output = Result<Produced, StepError>> + Send>>;

/// A step whose start is in the batch: its executor runs only after the commit.
pub(super) struct Start {
    pub run_id: String,
    pub step: usize,
    pub attempt: i64,
    pub fut: StepFuture,
}

#[derive(Default)]
pub(super) struct Batch {
    pub writes: Vec<Write>,
    pub replies: Vec<Reply>,
    pub updates: Vec<Update>,
    /// Runs changed by this batch: advanced (or reloaded) after the commit.
    pub touched: HashSet<String>,
    pub starts: Vec<Start>,
    /// Executors to stop once the batch commits (run id, step, task): a cancel that does
    /// not commit must leave them running.
    pub aborts: Vec<(String, usize, tokio::task::AbortHandle)>,
    /// Idempotency keys of runs created in this batch.
    pub pending_keys: HashMap<(String, String), String>,
    /// Children that finished in this batch: (parent run, parent step, the child as it ended).
    pub child_done: Vec<(String, String, RunRecord)>,
    /// Metric updates, applied once the batch commits (`observe`).
    pub facts: Vec<super::observe::Fact>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.replies.is_empty()
            && self.touched.is_empty()
            && self.starts.is_empty()
            && self.aborts.is_empty()
    }

    /// Answer `tx` with `value` once the batch commits; with an error if it does not.
    pub fn reply<T: Send + 'static>(
        &mut self,
        tx: tokio::sync::oneshot::Sender<crate::engine::Result<T>>,
        value: crate::engine::Result<T>,
    ) {
        self.replies.push(Box::new(move |err: Option<&StoreError>| {
            let v = match err {
                None => value,
                Some(e) => Err(EngineError::Unavailable(format!(
                    "the change could not be saved: {e}"
                ))),
            };
            let _ = tx.send(v);
        }));
    }
}

impl Scheduler {
    /// Add a write to the batch. Every value the engine persists passes here, so secrets
    /// are redacted in this one place.
    pub(super) fn write(&mut self, mut w: Write) {
        if !self.secrets.is_empty() {
            redact_write(&self.secrets, &mut w);
        }
        self.batch.writes.push(w);
    }

    pub(super) fn event(
        &mut self,
        run_id: &str,
        kind: EventKind,
        step_id: Option<&str>,
        data: Value,
    ) {
        let at = self.now();
        self.write(Write::Event(EventRecord {
            run_id: run_id.to_string(),
            at,
            kind,
            step_id: step_id.map(str::to_string),
            data,
        }));
    }
}

fn redact_write(s: &Secrets, w: &mut Write) {
    match w {
        Write::InsertRun(r) => {
            r.input = s.redact(&r.input);
            s.redact_opt(&mut r.output);
            s.redact_opt(&mut r.error);
        }
        Write::UpdateRun(u) => {
            s.redact_opt(&mut u.output);
            s.redact_opt(&mut u.error);
            s.redact_opt(&mut u.pending_action);
        }
        Write::PutStep(r) => {
            s.redact_opt(&mut r.input);
            s.redact_opt(&mut r.output);
            s.redact_opt(&mut r.error);
            s.redact_opt(&mut r.meta);
        }
        Write::Event(e) => e.data = s.redact(&e.data),
        Write::Signal(sig) => sig.payload = s.redact(&sig.payload),
        Write::BufferSignal(b) => b.payload = s.redact(&b.payload),
        Write::PutAlert(a) => a.body = s.redact(&a.body),
        Write::UpdateAlert { last_error, .. } => {
            if let Some(e) = last_error {
                *e = s.redact_str(e);
            }
        }
        Write::PutTimer(_)
        | Write::InboxPut(_)
        | Write::InboxAnswer { .. }
        | Write::DeleteTimer { .. }
        | Write::DeleteRunTimers { .. }
        | Write::PutHook(_)
        | Write::CloseHooks { .. }
        | Write::ConsumeSignal { .. }
        | Write::SignalDelivery(_) => {}
    }
}

/// Keep only the last write of each run row and step attempt; order is otherwise kept.
/// An update of a run inserted in the same batch folds into the insert.
pub(super) fn coalesce(mut writes: Vec<Write>) -> Vec<Write> {
    let mut keep = vec![true; writes.len()];
    {
        let mut seen_runs: HashSet<&str> = HashSet::new();
        let mut seen_steps: HashSet<(&str, &str, i64)> = HashSet::new();
        for (i, w) in writes.iter().enumerate().rev() {
            keep[i] = match w {
                Write::UpdateRun(r) => seen_runs.insert(r.id.as_str()),
                Write::PutStep(s) => {
                    seen_steps.insert((s.run_id.as_str(), s.step_id.as_str(), s.attempt))
                }
                _ => true,
            };
        }
    }
    let mut inserted: HashMap<String, usize> = HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        if let Write::InsertRun(r) = w {
            inserted.insert(r.id.clone(), i);
        }
    }
    if !inserted.is_empty() {
        let mut folds = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            if keep[i]
                && let Write::UpdateRun(u) = w
                && let Some(&at) = inserted.get(&u.id)
            {
                folds.push((at, i));
            }
        }
        for (at, i) in folds {
            let (Write::InsertRun(r), Write::UpdateRun(u)) = (&writes[at], &writes[i]) else {
                continue;
            };
            let mut r = r.clone();
            u.apply(&mut r);
            writes[at] = Write::InsertRun(r);
            keep[i] = false;
        }
    }
    let mut flags = keep.into_iter();
    writes.retain(|_| flags.next().unwrap_or(true));
    writes
}
