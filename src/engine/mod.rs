//! The durable run engine: a handle the API and CLI call, and one scheduler that alone
//! changes run state, committing the changes of many runs in one transaction.

mod compiled;
mod config;
mod definitions;
mod error;
pub mod intercept;
mod scheduler;
pub mod secrets;
mod signals;
mod state;
mod tools;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use compiled::{Compiled, violations};
pub use config::{EngineConfig, PlanLoader, env_flag, parse_sandbox};
pub use error::{EngineError, Result};
pub use intercept::{Intercepted, Interceptor, ModelTurnCall, StepCall, StepIntercept};
pub use scheduler::AlertOutcome;
pub use signals::{
    DELIVERY_WINDOW, MAX_CORRELATION, MAX_DELIVERY_ID, SendSignal, SignalOutcome, valid_signal_type,
};

use crate::clock::SharedClock;
use crate::diagnostics::{Diagnostic, SourceFile};
use crate::model::{RUN_PREFIX, RunStatus, is_id};
use crate::store::{RunRecord, Store};

/// How often a wait for a run re-reads it on a shared store (where another process may
/// execute it): the most a `?wait=` answer lags behind the run there.
const SHARED_REREAD: Duration = Duration::from_millis(250);

/// A request to start a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CreateRun {
    pub workspace_id: String,
    /// A slug (latest version) or an exact `wfdef_…` id.
    pub definition: String,
    pub input: Value,
    pub idempotency_key: Option<String>,
    /// `{kind, label, …}`: how the run started.
    pub trigger: Value,
}

/// A new definition version was stored (MCP clients hear that their tool list changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionChange {
    pub workspace_id: String,
    pub slug: String,
}

/// What resumes a suspended run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Resume {
    /// A WAITING run at an `external_event` step.
    Signal { signal_type: String, payload: Value },
    /// A PAUSED run at an `approval` step; `input` must be one of its options.
    Approval { step: String, input: Value },
    /// Through a hook token: exactly the hook's step, once. `payload` is the approval's
    /// option (or `{option|choice|decision|input: …}`) or the external event's payload.
    Hook { token: String, payload: Value },
}

/// A change the scheduler committed, for waiters and progress displays.
#[derive(Debug, Clone)]
pub struct Update {
    pub run_id: String,
    /// The run's status. Authoritative on run-level updates (`step` is `None`); on step
    /// updates it is the status when the step changed, before the run was re-evaluated.
    pub status: RunStatus,
    /// Set when a step changed: its id and new status.
    pub step: Option<(String, crate::model::StepStatus)>,
}

pub(crate) enum Command {
    Create {
        compiled: Arc<Compiled>,
        req: CreateRun,
        reply: oneshot::Sender<Result<(RunRecord, bool)>>,
    },
    Cancel {
        workspace_id: String,
        run_id: String,
        /// Who asked, recorded in the run's trace.
        by: Option<String>,
        reply: oneshot::Sender<Result<RunRecord>>,
    },
    Resume {
        /// `None` when the caller holds a hook token instead of an API key.
        workspace_id: Option<String>,
        run_id: String,
        resume: Resume,
        actor: String,
        reply: oneshot::Sender<Result<RunRecord>>,
    },
    Retry {
        workspace_id: String,
        run_id: String,
        by: Option<String>,
        reply: oneshot::Sender<Result<RunRecord>>,
    },
    Signal {
        req: Box<SendSignal>,
        /// How long to keep it if no step waits (the longest `buffer:` for its type).
        buffer: Option<Duration>,
        /// The definition signal-with-start would start.
        compiled: Option<Arc<Compiled>>,
        reply: oneshot::Sender<Result<SignalOutcome>>,
    },
    Done {
        run_id: String,
        step: usize,
        attempt: i64,
        result: std::result::Result<crate::exec::Produced, crate::exec::StepError>,
    },
    /// A failure alert's delivery attempt finished (answered once its result committed).
    AlertDone {
        alert: Box<crate::store::AlertRecord>,
        outcome: AlertOutcome,
        reply: oneshot::Sender<Result<()>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Answered once no step executes and every change is committed.
    Idle {
        reply: oneshot::Sender<()>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
}

/// What the scheduler holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Runs in memory: running, or being changed.
    pub active_runs: usize,
    /// Timers queued in memory (due within the next minute).
    pub queued_timers: usize,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: SharedClock,
    cache: compiled::Cache,
    tx: mpsc::UnboundedSender<Command>,
    updates: broadcast::Sender<Update>,
    definitions: broadcast::Sender<DefinitionChange>,
    config: EngineConfig,
    secrets: Arc<secrets::Secrets>,
    /// Why the store refuses commits, while it does.
    store_error: std::sync::Mutex<Option<String>>,
    metrics: Arc<crate::metrics::Metrics>,
    buffers: signals::BufferPolicy,
}

/// The engine handle: cheap to clone, safe to share.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A definition could not be applied: its diagnostics.
#[derive(Debug)]
pub struct Rejected {
    pub file: SourceFile,
    pub diagnostics: Vec<Diagnostic>,
}

impl Engine {
    /// Start the scheduler (on its own thread) and recover every unfinished run.
    /// Must be called from within a tokio runtime: executors run on it.
    pub fn start(
        store: Arc<dyn Store>,
        clock: SharedClock,
        config: EngineConfig,
    ) -> Result<Engine> {
        let (tx, rx) = mpsc::unbounded_channel();
        let engine = Engine::with_channel(store, clock, config, tx, 8_192);
        scheduler::spawn(engine.clone(), rx)?;
        crate::alerts::spawn(engine.clone());
        if engine.config().workspaces.root.is_some() {
            crate::workspace::spawn_sweeper(engine.clone());
        }
        Ok(engine)
    }

    /// An engine that reads but never schedules: no recovery, no steps, no timers. Commands
    /// that change a run fail. For read-only CLI commands on a database no server runs on.
    pub fn read_only(store: Arc<dyn Store>, clock: SharedClock, config: EngineConfig) -> Engine {
        let (tx, _) = mpsc::unbounded_channel();
        Engine::with_channel(store, clock, config, tx, 16)
    }

    fn with_channel(
        store: Arc<dyn Store>,
        clock: SharedClock,
        config: EngineConfig,
        tx: mpsc::UnboundedSender<Command>,
        update_capacity: usize,
    ) -> Engine {
        let (updates, _) = broadcast::channel(update_capacity);
        let (definitions, _) = broadcast::channel(64);
        Engine {
            inner: Arc::new(Inner {
                store,
                clock,
                cache: compiled::Cache::default(),
                tx,
                updates,
                definitions,
                secrets: Arc::new(secrets::Secrets::new(
                    &config.secrets,
                    &config.secret_grants,
                )),
                config,
                store_error: std::sync::Mutex::default(),
                metrics: Arc::default(),
                buffers: signals::BufferPolicy::default(),
            }),
        }
    }

    /// Wait until no step is executing and every change is committed. Steps that wait
    /// (timers, approvals, events) do not keep the engine busy: their state is durable.
    pub async fn until_idle(&self) -> Result<()> {
        self.call_plain(|reply| Command::Idle { reply }).await
    }

    async fn call_plain<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(make(reply))
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)
    }

    /// What the scheduler holds in memory (for health reports and tests).
    pub async fn stats(&self) -> Result<Stats> {
        self.call_plain(|reply| Command::Stats { reply }).await
    }

    /// Why the store refuses commits, while it does (`/healthz` reports it).
    pub fn store_error(&self) -> Option<String> {
        self.inner
            .store_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_store_error(&self, e: Option<String>) {
        *self
            .inner
            .store_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = e;
    }

    /// The secrets of every workspace; `redact` hides their values.
    pub fn secrets(&self) -> &secrets::Secrets {
        &self.inner.secrets
    }

    /// What `/metrics` renders.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.inner.updates.subscribe()
    }

    /// New definition versions, as they are stored.
    pub fn subscribe_definitions(&self) -> broadcast::Receiver<DefinitionChange> {
        self.inner.definitions.subscribe()
    }

    /// Create a run; with an idempotency key already used, the existing run comes back
    /// (`false`: nothing was created).
    pub async fn create_run(&self, req: CreateRun) -> Result<(RunRecord, bool)> {
        let compiled = self.checked_create(&req).await?;
        self.call(|reply| Command::Create {
            compiled,
            req,
            reply,
        })
        .await
    }

    /// Check a request to create a run; its definition version when it may be created.
    async fn checked_create(&self, req: &CreateRun) -> Result<Arc<Compiled>> {
        if let Some(k) = &req.idempotency_key
            && (k.is_empty() || k.chars().count() > 255)
        {
            return Err(EngineError::validation(
                "idempotencyKey must be 1 to 255 characters",
                json!({"field": "idempotencyKey", "length": k.chars().count()}),
            ));
        }
        if let Some(k) = &req.idempotency_key
            && let Some(p) = crate::model::RESERVED_KEY_PREFIXES
                .iter()
                .find(|p| k.starts_with(*p))
            && req.trigger["kind"].as_str() != p.strip_suffix(':')
        {
            return Err(EngineError::validation(
                format!(
                    "idempotencyKey may not start with `{p}`: keys starting with {} are reserved for the keys triggers and failure alerts make",
                    crate::model::RESERVED_KEY_PREFIXES
                        .map(|p| format!("`{p}`"))
                        .join(", ")
                ),
                json!({"field": "idempotencyKey"}),
            ));
        }
        if !req.input.is_object() {
            return Err(EngineError::validation(
                "input must be an object",
                json!({"field": "input"}),
            ));
        }
        let compiled = self.compiled(&req.workspace_id, &req.definition).await?;
        if self.refuses_scripts()
            && let Some(step) = compiled.plan.definition.first_script()
        {
            return Err(EngineError::validation(
                format!(
                    "workflow `{}` has a script step (`{}`), and this server does not run scripts: start it with --allow-scripts (STEPWISE_ALLOW_SCRIPTS=1)",
                    compiled.record.slug, step.id
                ),
                json!({"field": "definitionId", "step": step.id, "reason": "scripts_not_allowed"}),
            ));
        }
        if let Some(v) = &compiled.input {
            let problems = violations(v, &req.input);
            if !problems.is_empty() {
                return Err(EngineError::validation(
                    format!(
                        "input does not match the input schema of `{}`",
                        compiled.record.slug
                    ),
                    json!({"field": "input", "problems": problems}),
                ));
            }
        }
        Ok(compiled)
    }

    pub async fn cancel(&self, workspace_id: &str, run_id: &str) -> Result<RunRecord> {
        self.cancel_by(workspace_id, run_id, None).await
    }

    /// Cancel, recording who asked (`by`) in the run's trace.
    pub async fn cancel_by(
        &self,
        workspace_id: &str,
        run_id: &str,
        by: Option<&str>,
    ) -> Result<RunRecord> {
        check_run_id(run_id)?;
        let (workspace_id, run_id) = (workspace_id.to_string(), run_id.to_string());
        let by = by.map(str::to_string);
        self.call(|reply| Command::Cancel {
            workspace_id,
            run_id,
            by,
            reply,
        })
        .await
    }

    pub async fn resume(
        &self,
        workspace_id: &str,
        run_id: &str,
        resume: Resume,
        actor: &str,
    ) -> Result<RunRecord> {
        check_run_id(run_id)?;
        let (workspace_id, run_id, actor) = (
            Some(workspace_id.to_string()),
            run_id.to_string(),
            actor.to_string(),
        );
        self.call(|reply| Command::Resume {
            workspace_id,
            run_id,
            resume,
            actor,
            reply,
        })
        .await
    }

    /// Resume through a hook token: the token is the credential. The payload is the value of
    /// the step (an approval's option, or an external event's payload).
    pub async fn resume_hook(&self, token: &str, payload: Value, actor: &str) -> Result<RunRecord> {
        // The row only routes the request to its run; the scheduler checks it again, with
        // the step, in the same turn as the completion.
        let store = self.inner.store.clone();
        let t = token.to_string();
        let hook = blocking(move || store.hook(&t))
            .await??
            .ok_or_else(|| EngineError::NotFound("hook not found".into()))?;
        let resume = Resume::Hook {
            token: token.to_string(),
            payload,
        };
        let (run_id, actor) = (hook.run_id, actor.to_string());
        self.call(|reply| Command::Resume {
            workspace_id: None,
            run_id,
            resume,
            actor,
            reply,
        })
        .await
    }

    pub async fn retry(&self, workspace_id: &str, run_id: &str) -> Result<RunRecord> {
        self.retry_by(workspace_id, run_id, None).await
    }

    /// Retry, recording who asked (`by`) in the run's trace.
    pub async fn retry_by(
        &self,
        workspace_id: &str,
        run_id: &str,
        by: Option<&str>,
    ) -> Result<RunRecord> {
        check_run_id(run_id)?;
        let (workspace_id, run_id) = (workspace_id.to_string(), run_id.to_string());
        let by = by.map(str::to_string);
        self.call(|reply| Command::Retry {
            workspace_id,
            run_id,
            by,
            reply,
        })
        .await
    }

    /// A run of this workspace (404 for another workspace's).
    pub async fn run(&self, workspace_id: &str, run_id: &str) -> Result<RunRecord> {
        check_run_id(run_id)?;
        let store = self.inner.store.clone();
        let id = run_id.to_string();
        match blocking(move || store.run(&id)).await?? {
            Some(r) if r.workspace_id == workspace_id => Ok(r),
            _ => Err(EngineError::NotFound(format!("run `{run_id}` not found"))),
        }
    }

    /// Wait until `done(status)` holds or `timeout` passes; returns the run as it is then.
    pub async fn wait_for(
        &self,
        workspace_id: &str,
        run_id: &str,
        timeout: Duration,
        done: impl Fn(RunStatus) -> bool,
    ) -> Result<RunRecord> {
        let mut updates = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        // On a shared store another process may execute the run, and its updates are
        // broadcast there: the stored run is read again now and then.
        let shared = self.inner.store.shared();
        let mut run = self.run(workspace_id, run_id).await?;
        loop {
            if done(run.status) {
                return Ok(run);
            }
            let changed = loop {
                let wake = if shared {
                    deadline.min(tokio::time::Instant::now() + SHARED_REREAD)
                } else {
                    deadline
                };
                match tokio::time::timeout_at(wake, updates.recv()).await {
                    Err(_) if wake < deadline => break true,
                    Err(_) => return Ok(run),
                    Ok(Ok(u)) if u.run_id == run_id => break true,
                    Ok(Ok(_)) => {}
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => break true,
                    Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(run),
                }
            };
            if changed {
                run = self.run(workspace_id, run_id).await?;
            }
        }
    }

    /// Record a failure alert's delivery attempt (the scheduler writes it with its event).
    pub(crate) async fn alert_done(
        &self,
        alert: crate::store::AlertRecord,
        outcome: AlertOutcome,
    ) -> Result<()> {
        self.call(|reply| Command::AlertDone {
            alert: Box::new(alert),
            outcome,
            reply,
        })
        .await
    }

    /// Whether the scheduler stopped (background tasks end with it).
    pub(crate) fn stopped(&self) -> bool {
        self.inner.tx.is_closed()
    }

    /// Finish committing, stop the scheduler; in-flight steps are left resumable.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    /// A command whose answer is itself a result.
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        self.call_plain(make).await?
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The engine's clock, for history sweeps that must agree with it.
    pub fn now_for_history(&self) -> Timestamp {
        self.inner.clock.now()
    }
}

/// A hook payload for an approval: the option itself, or `{option|choice|decision|input: …}`.
pub(crate) fn approval_choice(payload: Value) -> Value {
    if let Value::Object(map) = &payload {
        for key in ["option", "choice", "decision", "input"] {
            if let Some(v) = map.get(key) {
                return v.clone();
            }
        }
    }
    payload
}

fn check_run_id(run_id: &str) -> Result<()> {
    if is_id(run_id, RUN_PREFIX) {
        Ok(())
    } else {
        Err(EngineError::NotFound(format!("run `{run_id}` not found")))
    }
}

/// Run blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("store task failed: {e}")))
}
