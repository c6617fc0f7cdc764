//! The scheduler: the only writer of run state.
//!
//! It runs on its own thread. Each turn it takes every queued command (new runs, executor
//! outcomes, signals, timers), applies them to the in-memory state of the runs involved and
//! collects the resulting writes in a [`Batch`]. The batch is committed in one transaction
//! (group commit); only then are callers answered and the steps it started handed to their
//! executors. Runs that wait (on a person, a signal or a timer) are dropped from memory: they
//! are rows, not tasks.
//!
//! Files: `batch` (what one commit carries), `commit` (flush, store failures), `load`
//! (loading, recovery, eviction), `commands` and `resume` (what callers ask), `start` (one
//! starter per step kind), `signals` (routing by correlation, buffered signals), `finish`
//! (outcomes, run status), `children` (`workflow` steps), `timers` (the timer queue),
//! `policy` (retries, backoff, limits), `limits` (concurrency and rate limits: queues of
//! PENDING runs and of steps waiting for a slot), `observe` (metrics of what a batch
//! committed), `alerts` (failure alert rows and their attempts' results).

mod agent;
mod agent_files;
mod alerts;
mod batch;
mod children;
mod commands;
mod commit;
mod finish;
mod inbox;
mod limits;
mod load;
mod observe;
mod policy;
mod resume;
mod signals;
mod start;
mod timers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

pub use self::alerts::AlertOutcome;
use self::batch::Batch;
use self::commit::{Failing, FailureLog};
use self::inbox::Forwarded;
use self::timers::TimerQueue;
use super::secrets::Secrets;
use super::state::Active;
use super::{Command, Engine, EngineError};
use crate::exec::{Produced, StepError};
use crate::store::Store;

/// An executor's result, kept until the batch it produced commits: after a failed commit
/// the runs are reloaded and these applied again, so no finished work is lost or redone.
struct Outcome {
    run_id: String,
    step: usize,
    attempt: i64,
    result: Result<Produced, StepError>,
}

pub(super) fn spawn(engine: Engine, rx: mpsc::UnboundedReceiver<Command>) -> super::Result<()> {
    let exec = tokio::runtime::Handle::try_current().map_err(|_| {
        EngineError::Internal("Engine::start must be called inside a tokio runtime".into())
    })?;
    let http = crate::http_client::build(&crate::http_client::ClientOptions::default())
        .map_err(|e| EngineError::Internal(format!("cannot build the HTTP client: {e}")))?;
    std::thread::Builder::new()
        .name("stepwise-scheduler".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("cannot start the scheduler runtime: {e}");
                    return;
                }
            };
            let secrets = engine.inner.secrets.clone();
            let s = Scheduler {
                store: engine.inner.store.clone(),
                engine,
                rx,
                exec,
                http,
                active: HashMap::new(),
                batch: Batch::default(),
                outcomes: Vec::new(),
                timers: TimerQueue::default(),
                failing: None,
                failure_log: FailureLog::default(),
                shutdown: None,
                idle: Vec::new(),
                secrets,
                limits: limits::Limits::default(),
                elsewhere: false,
                next_reclaim: std::time::Instant::now() + RECLAIM_EVERY,
                inbox: inbox::Inbox::default(),
            };
            rt.block_on(s.run());
        })
        .map_err(|e| EngineError::Internal(format!("cannot start the scheduler thread: {e}")))?;
    Ok(())
}

/// How often a process on a shared store looks for runs to take over.
const RECLAIM_EVERY: Duration = Duration::from_millis(500);

struct Scheduler {
    engine: Engine,
    store: Arc<dyn Store>,
    rx: mpsc::UnboundedReceiver<Command>,
    /// Executors (HTTP, agents) run on the caller's runtime.
    exec: tokio::runtime::Handle,
    http: reqwest::Client,
    active: HashMap<String, Active>,
    /// What the next commit carries.
    batch: Batch,
    /// Executor results of the uncommitted batch.
    outcomes: Vec<Outcome>,
    timers: TimerQueue,
    /// Set while the store refuses commits.
    failing: Option<Failing>,
    failure_log: FailureLog,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// Callers of `Engine::until_idle`.
    idle: Vec<tokio::sync::oneshot::Sender<()>>,
    secrets: Arc<Secrets>,
    limits: limits::Limits,
    /// The last `get_or_load` found the run held by another process.
    elsewhere: bool,
    /// On a shared store: when to look for runs whose owner's lease expired next.
    next_reclaim: std::time::Instant,
    /// Commands forwarded to (and from) other processes sharing the store.
    inbox: inbox::Inbox,
}

impl Scheduler {
    fn now(&self) -> Timestamp {
        self.engine.now()
    }

    async fn run(mut self) {
        self.recover(true);
        let wake = self.store.inbox_wake();
        loop {
            self.flush();
            if let Some(reply) = self.shutdown.take() {
                for run in self.active.values() {
                    for t in run.tasks.values() {
                        t.abort();
                    }
                }
                // Its steps stopped: on a shared store another process may go on with its
                // runs now rather than after the lease (in-flight steps run again there,
                // with the same Idempotency-Key, as after a crash).
                match self.store.release_all() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("released {n} runs to the other processes"),
                    Err(e) => tracing::warn!("could not release runs at stop: {e}"),
                }
                let _ = reply.send(());
                return;
            }
            if self.failing.is_none() {
                self.reclaim();
                self.inbox_turn();
                // Timers fire only on a committed state, so a stored row can vouch for each.
                self.fire_timers();
                // Rate windows open with time, not with commits.
                self.drain_limits();
                if self.batch.is_empty()
                    && !self.idle.is_empty()
                    && self.active.values().all(|r| r.tasks.is_empty())
                {
                    for reply in self.idle.drain(..) {
                        let _ = reply.send(());
                    }
                }
            }
            // With firings to commit, take what is queued into the same batch and go on;
            // while the store fails, wait for the retry time.
            if self.batch.is_empty() || self.failing.is_some() {
                let sleep = self.until_next_wake();
                let notified = async {
                    match &wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    cmd = self.rx.recv() => match cmd {
                        Some(c) => self.handle(c),
                        None => return,
                    },
                    () = notified => self.inbox.poll_now(),
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
            while self.batch.writes.len() < self.engine.config().max_batch {
                match self.rx.try_recv() {
                    Ok(c) => self.handle(c),
                    Err(_) => break,
                }
            }
        }
    }

    /// On a shared store, take over runs whose owner stopped renewing its lease (every
    /// [`RECLAIM_EVERY`]; the lease is seconds long, so this bounds takeover time).
    fn reclaim(&mut self) {
        if !self.store.shared() || std::time::Instant::now() < self.next_reclaim {
            return;
        }
        self.next_reclaim = std::time::Instant::now() + RECLAIM_EVERY;
        self.recover(false);
    }

    /// Until the next timer (or, while the store fails, the next retry), a second at most
    /// (so an injected clock that jumps is noticed).
    fn until_next_wake(&mut self) -> Duration {
        let next = match &self.failing {
            // Timers wait for the store; only the retry time matters.
            Some(f) => f.retry_in(),
            None if self.store.shared() => self
                .timers
                .next_due(self.now())
                .min(self.inbox.until_next()),
            None => self.timers.next_due(self.now()),
        };
        next.min(Duration::from_secs(1))
    }

    fn handle(&mut self, cmd: Command) {
        let Some(cmd) = self.refuse_while_failing(cmd) else {
            return;
        };
        match cmd {
            Command::Create {
                compiled,
                req,
                reply,
            } => self.create(compiled, req, reply),
            Command::Done {
                run_id,
                step,
                attempt,
                result,
            } => self.done(Outcome {
                run_id,
                step,
                attempt,
                result,
            }),
            Command::Cancel {
                workspace_id,
                run_id,
                by,
                reply,
            } => {
                let r = self.cancel(Some(&workspace_id), &run_id, by.as_deref());
                self.answer_run(reply, r, || {
                    Some(Forwarded::Cancel {
                        workspace_id: Some(workspace_id),
                        run_id,
                        by,
                    })
                });
            }
            Command::Resume {
                workspace_id,
                run_id,
                resume,
                actor,
                reply,
            } => {
                // Kept for the inbox: the command is forwarded as it came.
                let copy = self.store.shared().then(|| resume.clone());
                let r = self.resume(workspace_id.as_deref(), &run_id, resume, &actor);
                self.answer_run(reply, r, || {
                    copy.map(|resume| Forwarded::Resume {
                        workspace_id,
                        run_id,
                        resume,
                        actor,
                    })
                });
            }
            Command::Retry {
                workspace_id,
                run_id,
                by,
                reply,
            } => {
                let r = self.retry(&workspace_id, &run_id, by.as_deref());
                self.answer_run(reply, r, || {
                    Some(Forwarded::Retry {
                        workspace_id,
                        run_id,
                        by,
                    })
                });
            }
            Command::Signal {
                req,
                buffer,
                compiled,
                reply,
            } => {
                let copy = self.store.shared().then(|| req.clone());
                let start = compiled.as_ref().map(|c| c.record.version_id.clone());
                let r = self.route_signal(*req, buffer, compiled);
                self.answer_signal(reply, r, || {
                    copy.map(|req| Forwarded::Signal {
                        req,
                        buffer_ms: buffer.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX)),
                        start,
                    })
                });
            }
            Command::AlertDone {
                alert,
                outcome,
                reply,
            } => {
                self.alert_done(&alert, outcome);
                self.batch.reply(reply, Ok(()));
            }
            Command::Shutdown { reply } => self.shutdown = Some(reply),
            Command::Idle { reply } => self.idle.push(reply),
            Command::Stats { reply } => {
                let _ = reply.send(super::Stats {
                    active_runs: self.active.len(),
                    queued_timers: self.timers.len(),
                });
            }
        }
        self.process_children();
    }
}
