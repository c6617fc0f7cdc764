//! Routing correlated signals and consuming buffered ones. The store finds waiting steps
//! and buffered signals through indexes; what this turn's batch has not committed yet (a
//! step that just started waiting, a signal just buffered or consumed) is read from the
//! batch itself, so a signal and a step start in the same turn still meet.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::Scheduler;
use super::policy::add;
use super::resume::check_payload;
use crate::engine::compiled::Compiled;
use crate::engine::signals::DELIVERY_WINDOW;
use crate::engine::state::Active;
use crate::engine::{EngineError, Result, SendSignal, SignalOutcome};
use crate::model::StepStatus;
use crate::store::{BufferedSignal, HookStatus, RunRecord, SignalDelivery, Write};

impl Scheduler {
    /// A signal with a delivery id handled before answers what the first did; otherwise
    /// what it does is committed together with its id.
    pub(super) fn route_signal(
        &mut self,
        req: SendSignal,
        buffer: Option<Duration>,
        compiled: Option<Arc<Compiled>>,
    ) -> Result<SignalOutcome> {
        let Some(key) = req.delivery.clone() else {
            return self.route(req, buffer, compiled);
        };
        let ws = req.workspace_id.clone();
        if let Some(first) = self.delivered(&ws, &key)? {
            return Ok(self.replayed(&first));
        }
        let out = self.route(req, buffer, compiled)?;
        let now = self.now();
        let ids = |runs: &[RunRecord]| runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        self.write(Write::SignalDelivery(Box::new(SignalDelivery {
            workspace_id: ws,
            key,
            outcome: json!({
                "reached": ids(&out.reached),
                "buffered": out.buffered,
                "started": out.started.as_ref().map(|(r, _)| r.id.clone()),
            }),
            received_at: now,
            expires_at: add(now, DELIVERY_WINDOW).unwrap_or(now),
        })));
        Ok(out)
    }

    /// What a delivery with this id did, committed or in this batch.
    fn delivered(&self, ws: &str, key: &str) -> Result<Option<Value>> {
        let pending = self.batch.writes.iter().rev().find_map(|w| match w {
            Write::SignalDelivery(d) if d.workspace_id == ws && d.key == key => {
                Some(d.outcome.clone())
            }
            _ => None,
        });
        if pending.is_some() {
            return Ok(pending);
        }
        Ok(self
            .store
            .signal_delivery(ws, key, self.now())?
            .map(|d| d.outcome))
    }

    /// The first delivery's outcome, with its runs as they are now.
    fn replayed(&self, first: &Value) -> SignalOutcome {
        let run = |id: &Value| {
            let id = id.as_str()?;
            match self.active.get(id) {
                Some(r) => Some(r.rec.clone()),
                None => self.store.run(id).ok().flatten(),
            }
        };
        SignalOutcome {
            reached: first["reached"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(run)
                .collect(),
            buffered: first["buffered"].as_bool().unwrap_or(false),
            started: run(&first["started"]).map(|r| (r, false)),
            duplicate: true,
        }
    }

    fn route(
        &mut self,
        req: SendSignal,
        buffer: Option<Duration>,
        compiled: Option<Arc<Compiled>>,
    ) -> Result<SignalOutcome> {
        let ws = req.workspace_id.as_str();
        let mut targets: Vec<(Active, usize)> = Vec::new();
        for (run_id, step_id) in self.waiting_steps(ws, &req.signal_type, &req.correlate)? {
            let run = match self.lookup(Some(ws), &run_id) {
                Ok(run) => run,
                // The whole signal goes to that run's process (`inbox`), so every reached
                // step still takes it or none does.
                Err(e @ EngineError::HeldElsewhere(_)) => {
                    for (run, _) in targets {
                        self.restore(run);
                    }
                    return Err(e);
                }
                Err(_) => continue,
            };
            match run.def.step_index(&step_id) {
                Some(i) if run.slots[i].status == StepStatus::Waiting => targets.push((run, i)),
                _ => self.restore(run),
            }
        }
        // Every reached step accepts the payload, or none is completed.
        let refused = targets.iter().find_map(|(run, i)| {
            check_payload(run, *i, &req.payload)
                .err()
                .map(|e| with_run(e, &run.rec.id))
        });
        if let Some(e) = refused {
            for (run, _) in targets {
                self.restore(run);
            }
            return Err(e);
        }
        let mut reached = Vec::new();
        for (mut run, i) in targets {
            let r = self.deliver(&mut run, i, req.payload.clone(), &req.via);
            if r.is_ok() {
                self.refresh(&mut run);
                reached.push(run.rec.clone());
            }
            self.restore(run);
        }
        let mut out = SignalOutcome {
            reached,
            buffered: false,
            started: None,
            duplicate: false,
        };
        if !out.reached.is_empty() {
            return Ok(out);
        }
        let now = self.now();
        if let (Some(compiled), Some(create)) = (compiled, &req.start) {
            let existing = match &create.idempotency_key {
                Some(key) => self.existing_by_key(ws, key)?,
                None => None,
            };
            let (run, created) = match existing {
                Some(r) => (r, false),
                None => (self.new_run(&compiled, create, None), true),
            };
            // The run it started takes the signal when its step starts, whatever its
            // `buffer`; one that already ended takes nothing.
            if !run.status.is_terminal() {
                let ttl = self.engine.config().max_suspended;
                self.buffer(&req, Some(run.id.clone()), now, ttl);
                out.buffered = true;
            }
            out.started = Some((run, created));
        } else if let Some(ttl) = buffer {
            self.buffer(&req, None, now, ttl);
            out.buffered = true;
        }
        Ok(out)
    }

    fn buffer(&mut self, req: &SendSignal, run_id: Option<String>, now: Timestamp, ttl: Duration) {
        let expires_at = add(now, ttl).unwrap_or(now);
        self.write(Write::BufferSignal(Box::new(BufferedSignal {
            id: crate::model::new_id("sig_"),
            workspace_id: req.workspace_id.clone(),
            signal_type: req.signal_type.clone(),
            correlation: req.correlate.clone(),
            payload: req.payload.clone(),
            run_id,
            received_at: now,
            expires_at,
            via: req.via.clone(),
        })));
    }

    /// (run, step) of every hook waiting for this signal, committed or in this batch.
    fn waiting_steps(
        &self,
        ws: &str,
        signal_type: &str,
        correlation: &str,
    ) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = self
            .store
            .hooks_by_correlation(ws, signal_type, correlation)?
            .into_iter()
            .map(|h| (h.run_id, h.step_id))
            .collect();
        for w in &self.batch.writes {
            if let Write::PutHook(h) = w
                && h.status == HookStatus::Pending
                && h.workspace_id == ws
                && h.signal_type.as_deref() == Some(signal_type)
                && h.correlation.as_deref() == Some(correlation)
            {
                out.push((h.run_id.clone(), h.step_id.clone()));
            }
        }
        // One step per run: a run reached twice would be taken out of memory twice.
        let mut seen = HashSet::new();
        out.retain(|(run, _)| seen.insert(run.clone()));
        Ok(out)
    }

    /// The oldest buffered signal step `i` of `run` may consume: one addressed to this run,
    /// or one that arrived at most `window` before `now`. It must satisfy the step's schema.
    pub(super) fn take_buffered(
        &mut self,
        run: &Active,
        i: usize,
        signal_type: &str,
        correlation: &str,
        window: Option<Duration>,
        now: Timestamp,
    ) -> Option<BufferedSignal> {
        let ws = run.rec.workspace_id.as_str();
        let mut found = match self
            .store
            .buffered_signals(ws, signal_type, correlation, now)
        {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("cannot read buffered signals: {e}");
                Vec::new()
            }
        };
        let mut consumed = HashSet::new();
        for w in &self.batch.writes {
            match w {
                Write::BufferSignal(b)
                    if b.workspace_id == ws
                        && b.signal_type == signal_type
                        && b.correlation == correlation =>
                {
                    found.push((**b).clone());
                }
                Write::ConsumeSignal { id, .. } => {
                    consumed.insert(id.clone());
                }
                _ => {}
            }
        }
        let since = window.and_then(|w| {
            jiff::SignedDuration::try_from(w)
                .ok()
                .and_then(|w| now.checked_sub(w).ok())
        });
        let pick = found
            .into_iter()
            .filter(|b| !consumed.contains(&b.id) && b.expires_at > now)
            .filter(|b| match &b.run_id {
                Some(r) => *r == run.rec.id,
                None => since.is_some_and(|s| b.received_at >= s),
            })
            .filter(|b| check_payload(run, i, &b.payload).is_ok())
            .min_by_key(|b| b.received_at)?;
        self.write(Write::ConsumeSignal {
            id: pick.id.clone(),
            run_id: run.rec.id.clone(),
            at: now,
        });
        Some(pick)
    }
}

fn with_run(e: EngineError, run_id: &str) -> EngineError {
    match e {
        EngineError::Validation { message, details } => {
            let mut details = details;
            if let Value::Object(m) = &mut details {
                m.insert("runId".into(), json!(run_id));
            }
            EngineError::Validation {
                message: format!("run `{run_id}`: {message}"),
                details,
            }
        }
        other => other,
    }
}
