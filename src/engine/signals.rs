//! Correlated signals: a signal names a type and a correlation value instead of a run, and
//! reaches every run whose `external_event` step waits for exactly that pair. With no step
//! waiting it may be buffered (steps with `buffer:`), or start a run (signal-with-start).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Command, CreateRun, Engine, EngineError, Result, blocking};
use crate::definition::StepKind;
use crate::store::RunRecord;

/// Longest correlation value accepted (it is stored and indexed).
pub const MAX_CORRELATION: usize = 255;

/// How long a signal delivery's id is remembered: a redelivery within it delivers nothing
/// again (webhook providers retry for up to a few days).
pub const DELIVERY_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest delivery id accepted (it is stored and indexed).
pub const MAX_DELIVERY_ID: usize = 255;

/// A signal to route by correlation value.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SendSignal {
    pub workspace_id: String,
    pub signal_type: String,
    pub correlate: String,
    pub payload: Value,
    /// Who sent it, recorded with the delivery: `api`, `webhook <trigger>`.
    pub via: String,
    /// Signal-with-start: when no step waits, start this run (or find the one its
    /// idempotency key already started) and address the signal to it.
    pub start: Option<CreateRun>,
    /// The delivery's id, scoped by its sender (`webhook:<trigger>:<id>`, `api:<key>`): a
    /// signal whose id was handled within [`DELIVERY_WINDOW`] does nothing again and is
    /// answered with what the first did (`duplicate`). Recorded in the commit of what the
    /// signal did, so a crash cannot separate the two.
    pub delivery: Option<String>,
}

/// What a signal did.
#[derive(Debug, Clone)]
pub struct SignalOutcome {
    /// The runs whose waiting step it completed, as they are after that.
    pub reached: Vec<RunRecord>,
    /// Kept for a step that has not started yet.
    pub buffered: bool,
    /// The run signal-with-start started (`true`) or found by its key (`false`).
    pub started: Option<(RunRecord, bool)>,
    /// A delivery handled before: the runs are those the first reached or started, as
    /// they are now; nothing was delivered this time.
    pub duplicate: bool,
}

/// Per workspace: signal type → the longest `buffer:` of a step waiting for it, over the
/// latest version of every definition. Rebuilt after a definition is applied.
#[derive(Default)]
pub(super) struct BufferPolicy {
    by_workspace: std::sync::Mutex<HashMap<String, Arc<HashMap<String, Duration>>>>,
}

impl BufferPolicy {
    pub fn forget(&self, workspace_id: &str) {
        self.lock().remove(workspace_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<HashMap<String, Duration>>>> {
        self.by_workspace
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A signal type as the workflow schema allows it in `signal:`.
pub fn valid_signal_type(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

impl Engine {
    /// Route a signal to the runs waiting for its type and correlation value.
    pub async fn signal(&self, req: SendSignal) -> Result<SignalOutcome> {
        if !valid_signal_type(&req.signal_type) {
            return Err(EngineError::validation(
                "signalType must be 1 to 128 letters, digits or `_ . : -`",
                json!({"field": "signalType"}),
            ));
        }
        if req.correlate.is_empty() || req.correlate.chars().count() > MAX_CORRELATION {
            return Err(EngineError::validation(
                format!("correlate must be 1 to {MAX_CORRELATION} characters"),
                json!({"field": "correlate"}),
            ));
        }
        if req
            .delivery
            .as_ref()
            .is_some_and(|d| d.is_empty() || d.chars().count() > MAX_DELIVERY_ID)
        {
            return Err(EngineError::validation(
                format!("a delivery id must be 1 to {MAX_DELIVERY_ID} characters"),
                json!({"field": "delivery"}),
            ));
        }
        if !req.payload.is_object() {
            return Err(EngineError::validation(
                "payload must be an object",
                json!({"field": "payload"}),
            ));
        }
        let compiled = match &req.start {
            Some(create) => Some(self.checked_create(create).await?),
            None => None,
        };
        let buffer = self
            .buffer_policy(&req.workspace_id)
            .await?
            .get(&req.signal_type)
            .copied();
        self.call(|reply| Command::Signal {
            req: Box::new(req),
            buffer,
            compiled,
            reply,
        })
        .await
    }

    async fn buffer_policy(&self, workspace_id: &str) -> Result<Arc<HashMap<String, Duration>>> {
        if let Some(p) = self.inner.buffers.lock().get(workspace_id) {
            return Ok(p.clone());
        }
        let store = self.inner.store.clone();
        let ws = workspace_id.to_string();
        let defs = blocking(move || store.list_definitions(&ws)).await??;
        let mut policy: HashMap<String, Duration> = HashMap::new();
        for rec in defs {
            let Ok(c) = self.compiled_record(rec) else {
                continue;
            };
            for step in &c.plan.definition.steps {
                if let StepKind::ExternalEvent(e) = &step.kind
                    && let Some(d) = e.buffer.as_deref()
                    && let Ok(d) = crate::duration::parse(d)
                {
                    let slot = policy.entry(e.signal.clone()).or_default();
                    *slot = (*slot).max(d);
                }
            }
        }
        let policy = Arc::new(policy);
        self.inner
            .buffers
            .lock()
            .insert(workspace_id.to_string(), policy.clone());
        Ok(policy)
    }
}
