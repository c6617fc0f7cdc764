//! The scheduler: the only writer of run state.
//!
//! It runs on its own thread. Each turn it takes every queued command (new runs, executor
//! outcomes, signals, timers), applies them to the in-memory state of the runs involved,
//! commits all resulting writes in one transaction (group commit), and only then answers
//! callers and starts the steps whose dependencies are now durably finished. Runs that wait
//! (on a person, a signal or a timer) are dropped from memory: they are rows, not tasks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::compiled::{Compiled, violations};
use super::state::Active;
use super::{Command, CreateRun, Engine, EngineError, Resume, Update};
use crate::definition::{Backoff, Retry, StepKind};
use crate::exec::{self, StepError, Success};
use crate::model::{RUN_PREFIX, RunStatus, StepStatus, new_id, new_token};
use crate::store::{
    EventRecord, HookRecord, RunRecord, RunUpdate, StepRecord, Store, StoreError, TimerKind,
    TimerRecord, Write,
};
use crate::template;

/// Timers due within this window are kept in memory; later ones stay rows until then.
const TIMER_WINDOW: Duration = Duration::from_secs(60);

type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct TimerEntry {
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

pub(super) fn spawn(engine: Engine, rx: mpsc::UnboundedReceiver<Command>) -> super::Result<()> {
    let exec = tokio::runtime::Handle::try_current().map_err(|_| {
        EngineError::Internal("Engine::start must be called inside a tokio runtime".into())
    })?;
    // reqwest is built without a default crypto provider; ring is ours (fast to build).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .user_agent(concat!("stepwise/", env!("CARGO_PKG_VERSION")))
        .build()
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
            let engine_secrets = engine.config().secrets.clone();
            let s = Scheduler {
                store: engine.inner.store.clone(),
                engine,
                rx,
                exec,
                http,
                active: HashMap::new(),
                writes: Vec::new(),
                touched: HashSet::new(),
                replies: Vec::new(),
                updates: Vec::new(),
                pending_keys: HashMap::new(),
                child_done: Vec::new(),
                timers: BinaryHeap::new(),
                timer_keys: HashSet::new(),
                next_refresh: Timestamp::UNIX_EPOCH,
                shutdown: None,
                idle: Vec::new(),
                secrets_mj: template::context(&json!(engine_secrets)),
            };
            rt.block_on(s.run());
        })
        .map_err(|e| EngineError::Internal(format!("cannot start the scheduler thread: {e}")))?;
    Ok(())
}

struct Scheduler {
    engine: Engine,
    store: Arc<dyn Store>,
    rx: mpsc::UnboundedReceiver<Command>,
    /// Executors (HTTP, agents) run on the caller's runtime.
    exec: tokio::runtime::Handle,
    http: reqwest::Client,
    active: HashMap<String, Active>,
    writes: Vec<Write>,
    touched: HashSet<String>,
    replies: Vec<Reply>,
    updates: Vec<Update>,
    /// Idempotency keys of runs created in the uncommitted batch.
    pending_keys: HashMap<(String, String), String>,
    /// Children that finished in this batch: (parent run, parent step, the child as it ended).
    child_done: Vec<(String, String, RunRecord)>,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    timer_keys: HashSet<(String, String, u8)>,
    next_refresh: Timestamp,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// Callers of `Engine::until_idle`.
    idle: Vec<tokio::sync::oneshot::Sender<()>>,
    /// `secrets` as a template value, converted once.
    secrets_mj: minijinja::Value,
}

fn snapshot_reply<T: Send + 'static>(
    tx: tokio::sync::oneshot::Sender<super::Result<T>>,
    value: super::Result<T>,
) -> Reply {
    Box::new(move |err: Option<&StoreError>| {
        let v = match err {
            None => value,
            Some(e) => Err(EngineError::Internal(format!(
                "the change could not be saved: {e}"
            ))),
        };
        let _ = tx.send(v);
    })
}

impl Scheduler {
    fn now(&self) -> Timestamp {
        self.engine.now()
    }

    async fn run(mut self) {
        self.recover();
        loop {
            self.flush();
            if let Some(reply) = self.shutdown.take() {
                for run in self.active.values() {
                    for t in run.tasks.values() {
                        t.abort();
                    }
                }
                let _ = reply.send(());
                return;
            }
            if !self.idle.is_empty()
                && self.writes.is_empty()
                && self.active.values().all(|r| r.tasks.is_empty())
            {
                for reply in self.idle.drain(..) {
                    let _ = reply.send(());
                }
            }
            let sleep = self.until_next_timer();
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(c) => self.handle(c),
                    None => return,
                },
                _ = tokio::time::sleep(sleep) => {}
            }
            while self.writes.len() < self.engine.config().max_batch {
                match self.rx.try_recv() {
                    Ok(c) => self.handle(c),
                    Err(_) => break,
                }
            }
            self.fire_timers();
        }
    }

    fn until_next_timer(&mut self) -> Duration {
        let now = self.now().as_microsecond();
        let refresh = self.next_refresh.as_microsecond();
        let next = self
            .timers
            .peek()
            .map_or(refresh, |Reverse(t)| t.due.min(refresh));
        // Wake at least every second so an injected clock that jumps is noticed.
        Duration::from_micros(u64::try_from(next - now).unwrap_or(0)).min(Duration::from_secs(1))
    }

    /// Commit the batch, then answer, notify and advance; repeat while that made new writes.
    fn flush(&mut self) {
        loop {
            self.process_children();
            if self.writes.is_empty() && self.replies.is_empty() && self.touched.is_empty() {
                return;
            }
            let writes = coalesce(std::mem::take(&mut self.writes));
            let result = self.store.commit(&writes);
            let touched: Vec<String> = self.touched.drain().collect();
            self.pending_keys.clear();
            let replies = std::mem::take(&mut self.replies);
            let updates = std::mem::take(&mut self.updates);
            match result {
                Ok(()) => {
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
                    for id in &touched {
                        self.advance(id);
                    }
                    self.evict(&touched);
                }
                Err(e) => {
                    tracing::error!("commit failed, reloading the runs involved: {e}");
                    for r in replies {
                        r(Some(&e));
                    }
                    for id in &touched {
                        if let Some(run) = self.active.remove(id) {
                            for t in run.tasks.values() {
                                t.abort();
                            }
                        }
                    }
                    // Back off a little so a full disk does not spin.
                    std::thread::sleep(Duration::from_millis(50));
                    for id in &touched {
                        if let Some(run) = self.get_or_load(id)
                            && !run.rec.status.is_terminal()
                            && !run.rec.status.is_suspended()
                        {
                            self.prepare_recovered(id);
                            self.touched.insert(id.clone());
                        }
                    }
                }
            }
        }
    }

    fn evict(&mut self, ids: &[String]) {
        for id in ids {
            let idle = self.active.get(id).is_some_and(|r| {
                (r.rec.status.is_terminal() || r.rec.status.is_suspended())
                    && r.tasks.is_empty()
                    && r.slots
                        .iter()
                        .all(|s| !s.backoff && s.status != StepStatus::Running)
            });
            if idle {
                self.active.remove(id);
            }
        }
    }

    // ----- loading and recovery -------------------------------------------------------------

    fn get_or_load(&mut self, id: &str) -> Option<&mut Active> {
        if !self.active.contains_key(id) {
            let rec = match self.store.run(id) {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!("cannot load run {id}: {e}");
                    return None;
                }
            };
            let def = match self
                .store
                .definition(&rec.workspace_id, &rec.definition_id)
                .map_err(|e| e.to_string())
                .and_then(|d| d.ok_or_else(|| "its definition version is missing".to_string()))
                .and_then(|d| self.engine.compiled_record(d).map_err(|e| e.to_string()))
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!("cannot load the definition of run {id}: {e}");
                    return None;
                }
            };
            let steps = match self.store.steps(id) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot load the steps of run {id}: {e}");
                    return None;
                }
            };
            self.active
                .insert(id.to_string(), Active::load(rec, def, steps));
        }
        self.active.get_mut(id)
    }

    /// Steps in flight when the process stopped run again (same attempt, same
    /// Idempotency-Key); failed attempts with retries left get their next attempt.
    fn prepare_recovered(&mut self, id: &str) {
        let Some(run) = self.active.get_mut(id) else {
            return;
        };
        let steps = run.def.plan.definition.steps.clone();
        for (i, slot) in run.slots.iter_mut().enumerate() {
            match slot.status {
                StepStatus::Running => slot.status = StepStatus::Pending,
                StepStatus::Failed
                    if run.rec.status == RunStatus::Running
                        && slot.attempt < max_attempts(&steps[i].retry) =>
                {
                    slot.status = StepStatus::Pending;
                    slot.attempt += 1;
                }
                _ => {}
            }
        }
    }

    fn recover(&mut self) {
        let ids = match self
            .store
            .run_ids_with_status(&[RunStatus::Pending, RunStatus::Running])
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("cannot list runs to recover: {e}");
                Vec::new()
            }
        };
        if !ids.is_empty() {
            tracing::info!("recovering {} unfinished runs", ids.len());
        }
        for id in ids {
            if self.get_or_load(&id).is_some() {
                self.prepare_recovered(&id);
                self.advance(&id);
            }
        }
        self.refresh_timers();
    }

    // ----- commands -------------------------------------------------------------------------

    fn handle(&mut self, cmd: Command) {
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
            } => self.done(&run_id, step, attempt, result),
            Command::Cancel {
                workspace_id,
                run_id,
                reply,
            } => {
                let r = self.cancel(Some(&workspace_id), &run_id);
                self.replies.push(snapshot_reply(reply, r));
            }
            Command::Resume {
                workspace_id,
                run_id,
                resume,
                actor,
                reply,
            } => {
                let r = self.resume(workspace_id.as_deref(), &run_id, resume, &actor);
                self.replies.push(snapshot_reply(reply, r));
            }
            Command::Retry {
                workspace_id,
                run_id,
                reply,
            } => {
                let r = self.retry(&workspace_id, &run_id);
                self.replies.push(snapshot_reply(reply, r));
            }
            Command::Shutdown { reply } => self.shutdown = Some(reply),
            Command::Idle { reply } => self.idle.push(reply),
        }
        self.process_children();
    }

    fn event(&mut self, run_id: &str, kind: &str, step_id: Option<&str>, data: Value) {
        self.writes.push(Write::Event(EventRecord {
            run_id: run_id.to_string(),
            at: self.now(),
            kind: kind.to_string(),
            step_id: step_id.map(str::to_string),
            data,
        }));
    }

    fn create(
        &mut self,
        compiled: Arc<Compiled>,
        req: CreateRun,
        reply: tokio::sync::oneshot::Sender<super::Result<(RunRecord, bool)>>,
    ) {
        if let Some(key) = &req.idempotency_key {
            match self.existing_by_key(&req.workspace_id, key) {
                Ok(Some(existing)) => {
                    self.replies
                        .push(snapshot_reply(reply, Ok((existing, false))));
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    return;
                }
            }
        }
        let rec = self.new_run(&compiled, &req, None);
        self.replies.push(snapshot_reply(reply, Ok((rec, true))));
    }

    fn existing_by_key(
        &mut self,
        workspace_id: &str,
        key: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        if let Some(id) = self
            .pending_keys
            .get(&(workspace_id.to_string(), key.to_string()))
            && let Some(run) = self.active.get(id)
        {
            return Ok(Some(run.rec.clone()));
        }
        self.store.run_by_key(workspace_id, key)
    }

    fn new_run(
        &mut self,
        compiled: &Arc<Compiled>,
        req: &CreateRun,
        parent: Option<(&str, &str)>,
    ) -> RunRecord {
        let now = self.now();
        let rec = RunRecord {
            id: new_id(RUN_PREFIX),
            workspace_id: req.workspace_id.clone(),
            definition_id: compiled.record.version_id.clone(),
            definition_slug: compiled.record.slug.clone(),
            status: RunStatus::Pending,
            input: req.input.clone(),
            output: None,
            error: None,
            idempotency_key: req.idempotency_key.clone(),
            current_step_index: 0,
            attempt: 1,
            parent_run_id: parent.map(|p| p.0.to_string()),
            parent_step_id: parent.map(|p| p.1.to_string()),
            trigger: req.trigger.clone(),
            pending_action: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        };
        if let Some(key) = &rec.idempotency_key {
            self.pending_keys
                .insert((rec.workspace_id.clone(), key.clone()), rec.id.clone());
        }
        self.writes.push(Write::insert_run(rec.clone()));
        self.event(
            &rec.id,
            "run.created",
            None,
            json!({"trigger": rec.trigger, "definitionVersion": compiled.record.version}),
        );
        self.updates.push(Update {
            run_id: rec.id.clone(),
            status: rec.status,
            step: None,
        });
        self.touched.insert(rec.id.clone());
        self.active
            .insert(rec.id.clone(), Active::new(rec.clone(), compiled.clone()));
        rec
    }

    fn done(&mut self, run_id: &str, i: usize, attempt: i64, result: Result<Success, StepError>) {
        let Some(mut run) = self.active.remove(run_id) else {
            return;
        };
        let current = run
            .slots
            .get(i)
            .is_some_and(|s| s.status == StepStatus::Running && s.attempt == attempt);
        if current {
            run.tasks.remove(&i);
            match result {
                Ok(s) => self.complete(&mut run, i, s.output, s.usage, None),
                Err(e) => self.fail_attempt(&mut run, i, e),
            }
            self.refresh(&mut run);
        }
        self.active.insert(run_id.to_string(), run);
    }

    fn lookup(&mut self, workspace_id: Option<&str>, run_id: &str) -> super::Result<Active> {
        let found = self
            .get_or_load(run_id)
            .is_some_and(|r| workspace_id.is_none_or(|ws| ws == r.rec.workspace_id));
        if !found {
            return Err(EngineError::NotFound(format!("run `{run_id}` not found")));
        }
        self.active
            .remove(run_id)
            .ok_or_else(|| EngineError::NotFound(format!("run `{run_id}` not found")))
    }

    fn cancel(&mut self, workspace_id: Option<&str>, run_id: &str) -> super::Result<RunRecord> {
        let mut run = self.lookup(workspace_id, run_id)?;
        let result = if run.rec.status.can_cancel() {
            self.cancel_run(&mut run);
            Ok(run.rec.clone())
        } else {
            Err(EngineError::Conflict(format!(
                "run `{run_id}` is {} and cannot be cancelled",
                run.rec.status
            )))
        };
        self.active.insert(run_id.to_string(), run);
        if result.is_ok() {
            // Children started by `workflow` steps go with their parent.
            if let Ok(children) = self.store.child_runs(run_id) {
                for c in children.into_iter().filter(|c| !c.status.is_terminal()) {
                    let _ = self.cancel(None, &c.id);
                }
            }
        }
        result
    }

    fn cancel_run(&mut self, run: &mut Active) {
        self.stop_open_steps(run);
        self.end_run(run, RunStatus::Cancelled, None, "run.cancelled");
    }

    /// Abort in-flight steps and mark every started, waiting or retrying step CANCELLED.
    fn stop_open_steps(&mut self, run: &mut Active) {
        let now = self.now();
        for (_, t) in run.tasks.drain() {
            t.abort();
        }
        for i in 0..run.slots.len() {
            let slot = &mut run.slots[i];
            if !(matches!(slot.status, StepStatus::Running | StepStatus::Waiting) || slot.backoff) {
                continue;
            }
            slot.status = StepStatus::Cancelled;
            slot.backoff = false;
            let step_id = &run.def.plan.definition.steps[i].id;
            let mut rec = slot.record.clone().unwrap_or_else(|| {
                blank_step(&run.rec.id, step_id, run.def.plan.position[i], slot.attempt)
            });
            rec.status = StepStatus::Cancelled;
            rec.finished_at = Some(now);
            slot.record = Some(rec.clone());
            self.writes.push(Write::put_step(rec));
        }
    }

    /// Give a run its terminal status and close what it held: timers, hooks.
    fn end_run(&mut self, run: &mut Active, status: RunStatus, error: Option<Value>, event: &str) {
        let now = self.now();
        run.rec.status = status;
        run.rec.error.clone_from(&error);
        run.rec.pending_action = None;
        run.rec.finished_at = Some(now);
        run.rec.updated_at = now;
        run.rec.current_step_index = run.current_step_index();
        self.writes.push(Write::UpdateRun(RunUpdate::of(&run.rec)));
        self.writes.push(Write::DeleteRunTimers {
            run_id: run.rec.id.clone(),
        });
        self.writes.push(Write::CloseHooks {
            run_id: run.rec.id.clone(),
            step_id: None,
            status: "closed".into(),
            at: now,
        });
        let data = error.map_or_else(|| json!({}), |e| json!({"error": e}));
        self.event(&run.rec.id, event, None, data);
        self.finished(run);
    }

    fn resume(
        &mut self,
        workspace_id: Option<&str>,
        run_id: &str,
        resume: Resume,
        actor: &str,
    ) -> super::Result<RunRecord> {
        let mut run = self.lookup(workspace_id, run_id)?;
        let r = self.apply_resume(&mut run, resume, actor);
        if r.is_ok() {
            if actor == "hook" {
                self.event(&run.rec.id, "hook.resumed", None, json!({}));
            }
            self.refresh(&mut run);
        }
        let out = r.map(|()| run.rec.clone());
        self.active.insert(run_id.to_string(), run);
        out
    }

    fn apply_resume(&mut self, run: &mut Active, resume: Resume, actor: &str) -> super::Result<()> {
        let status = run.rec.status;
        let waiting = |run: &Active, pred: &dyn Fn(&StepKind) -> bool| -> Vec<usize> {
            (0..run.slots.len())
                .filter(|&i| {
                    run.slots[i].status == StepStatus::Waiting
                        && pred(&run.def.plan.definition.steps[i].kind)
                })
                .collect()
        };
        match resume {
            Resume::Signal {
                signal_type,
                payload,
            } => {
                let candidates = waiting(run, &|k| matches!(k, StepKind::ExternalEvent(_)));
                if candidates.is_empty() || status != RunStatus::Waiting && !signal_type.is_empty()
                {
                    return Err(EngineError::Conflict(format!(
                        "run `{}` is {}, not waiting for a signal",
                        run.rec.id, status
                    )));
                }
                let signal_of = |i: usize| match &run.def.plan.definition.steps[i].kind {
                    StepKind::ExternalEvent(e) => e.signal.clone(),
                    _ => String::new(),
                };
                let i = if signal_type.is_empty() {
                    candidates[0]
                } else {
                    *candidates
                        .iter()
                        .find(|&&i| signal_of(i) == signal_type)
                        .ok_or_else(|| {
                            let expected: Vec<String> = candidates
                                .iter()
                                .map(|&i| format!("`{}`", signal_of(i)))
                                .collect();
                            EngineError::Conflict(format!(
                                "run `{}` waits for {}, not `{signal_type}`",
                                run.rec.id,
                                expected.join(" or ")
                            ))
                        })?
                };
                if !payload.is_object() {
                    return Err(EngineError::validation(
                        "payload must be an object",
                        json!({"field": "payload"}),
                    ));
                }
                if let Some(v) = &run.def.payload[i] {
                    let problems = violations(v, &payload);
                    if !problems.is_empty() {
                        return Err(EngineError::validation(
                            format!(
                                "payload does not match the schema of step `{}`",
                                run.def.plan.definition.steps[i].id
                            ),
                            json!({"field": "payload", "problems": problems}),
                        ));
                    }
                }
                let step_id = run.def.plan.definition.steps[i].id.clone();
                let signal = signal_of(i);
                let now = self.now();
                self.writes.push(Write::Signal(crate::store::SignalRecord {
                    run_id: run.rec.id.clone(),
                    step_id: step_id.clone(),
                    signal_type: signal.clone(),
                    payload: payload.clone(),
                    received_at: now,
                    via: actor.to_string(),
                }));
                self.close_wait(run, &step_id, now);
                self.event(
                    &run.rec.id,
                    "signal.received",
                    Some(&step_id),
                    json!({"signalType": signal, "via": actor}),
                );
                let meta =
                    json!({"signalType": signal, "receivedAt": now.to_string(), "via": actor});
                self.complete(run, i, payload, None, Some(meta));
                Ok(())
            }
            Resume::Approval { step, input } => {
                let Some(i) = run.def.step_index(&step) else {
                    return Err(EngineError::Conflict(format!(
                        "run `{}` has no step `{step}`",
                        run.rec.id
                    )));
                };
                let StepKind::Approval(a) = &run.def.plan.definition.steps[i].kind else {
                    return Err(EngineError::Conflict(format!(
                        "step `{step}` is not an approval"
                    )));
                };
                if run.slots[i].status != StepStatus::Waiting {
                    return Err(EngineError::Conflict(format!(
                        "run `{}` is {}, not paused at step `{step}`",
                        run.rec.id, status
                    )));
                }
                let options = a.options.clone();
                let choice = match &input {
                    Value::String(s) if options.contains(s) => s.clone(),
                    _ => {
                        return Err(EngineError::validation(
                            format!(
                                "input must be one of the options of `{step}`: {}",
                                options.join(", ")
                            ),
                            json!({"field": "input", "options": options, "got": input}),
                        ));
                    }
                };
                let now = self.now();
                self.close_wait(run, &step, now);
                self.event(
                    &run.rec.id,
                    "approval.decided",
                    Some(&step),
                    json!({"option": choice, "by": actor}),
                );
                let meta = json!({"decidedBy": actor, "decidedAt": now.to_string()});
                self.complete(run, i, Value::String(choice), None, Some(meta));
                Ok(())
            }
        }
    }

    fn close_wait(&mut self, run: &Active, step_id: &str, now: Timestamp) {
        self.writes.push(Write::CloseHooks {
            run_id: run.rec.id.clone(),
            step_id: Some(step_id.to_string()),
            status: "resumed".into(),
            at: now,
        });
        self.writes.push(Write::DeleteTimer {
            run_id: run.rec.id.clone(),
            step_id: step_id.to_string(),
            kind: TimerKind::Deadline,
        });
    }

    fn retry(&mut self, workspace_id: &str, run_id: &str) -> super::Result<RunRecord> {
        let mut run = self.lookup(Some(workspace_id), run_id)?;
        if run.rec.status != RunStatus::Failed {
            let status = run.rec.status;
            self.active.insert(run_id.to_string(), run);
            return Err(EngineError::Conflict(format!(
                "only a FAILED run can be retried; run `{run_id}` is {status}"
            )));
        }
        for slot in &mut run.slots {
            if matches!(slot.status, StepStatus::Failed | StepStatus::Cancelled) {
                slot.status = StepStatus::Pending;
                slot.attempt += 1;
                slot.committed = false;
                slot.backoff = false;
            }
        }
        let now = self.now();
        run.rec.status = RunStatus::Running;
        run.rec.attempt += 1;
        run.rec.error = None;
        run.rec.finished_at = None;
        run.rec.updated_at = now;
        run.rec.current_step_index = run.current_step_index();
        self.writes.push(Write::UpdateRun(RunUpdate::of(&run.rec)));
        self.event(
            run_id,
            "run.retried",
            None,
            json!({"attempt": run.rec.attempt}),
        );
        self.updates.push(Update {
            run_id: run_id.to_string(),
            status: run.rec.status,
            step: None,
        });
        self.touched.insert(run_id.to_string());
        let rec = run.rec.clone();
        self.active.insert(run_id.to_string(), run);
        Ok(rec)
    }

    // ----- stepping -------------------------------------------------------------------------

    fn advance(&mut self, id: &str) {
        let Some(mut run) = self.active.remove(id) else {
            return;
        };
        if !run.rec.status.is_terminal() {
            for i in run.ready() {
                if run.rec.status.is_terminal() {
                    break;
                }
                self.start(&mut run, i);
            }
            self.refresh(&mut run);
        }
        self.active.insert(id.to_string(), run);
    }

    fn start(&mut self, run: &mut Active, i: usize) {
        let def = run.def.clone();
        let step = &def.plan.definition.steps[i];
        let engine = self.engine.clone();
        let secrets = &engine.config().secrets;
        let ctx = run.mj_context(&self.secrets_mj);
        let now = self.now();
        self.touched.insert(run.rec.id.clone());
        if let Some(when) = &step.when {
            match template::eval_condition(when, &ctx, &step.field("when")) {
                Ok(true) => {}
                Ok(false) => {
                    let slot = &mut run.slots[i];
                    slot.status = StepStatus::Skipped;
                    slot.output = None;
                    slot.committed = false;
                    let mut rec = blank_step(
                        &run.rec.id,
                        &step.id,
                        run.def.plan.position[i],
                        slot.attempt,
                    );
                    rec.status = StepStatus::Skipped;
                    rec.started_at = Some(now);
                    rec.finished_at = Some(now);
                    slot.record = Some(rec.clone());
                    self.writes.push(Write::put_step(rec));
                    self.event(&run.rec.id, "step.skipped", Some(&step.id), json!({}));
                    self.step_update(run, i);
                    return;
                }
                Err(e) => {
                    self.begin(run, i, None, now);
                    self.fail_attempt(run, i, StepError::new("template", e.to_string()));
                    return;
                }
            }
        }
        let rendered = |v: &Value, field: &str| template::render_value(v, &ctx, &step.field(field));
        match &step.kind {
            StepKind::Action(a) => {
                let with = match rendered(&Value::Object(a.with.clone()), "with") {
                    Ok(Value::Object(m)) => m,
                    Ok(_) => serde_json::Map::new(),
                    Err(e) => {
                        self.begin(run, i, None, now);
                        self.fail_attempt(run, i, StepError::new("template", e.to_string()));
                        return;
                    }
                };
                let recorded = redact(&Value::Object(with.clone()), secrets);
                self.begin(run, i, Some(recorded), now);
                match a.uses.as_str() {
                    "transform" => {
                        let value = with.get("value").cloned().unwrap_or(Value::Null);
                        self.complete(run, i, value, None, None);
                    }
                    "log" => {
                        let message = with.get("message").map_or_else(String::new, |m| match m {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        });
                        let level = with
                            .get("level")
                            .and_then(Value::as_str)
                            .unwrap_or("info")
                            .to_string();
                        match level.as_str() {
                            "error" => {
                                tracing::error!(run = %run.rec.id, step = %step.id, "{message}")
                            }
                            "warn" => {
                                tracing::warn!(run = %run.rec.id, step = %step.id, "{message}")
                            }
                            "debug" => {
                                tracing::debug!(run = %run.rec.id, step = %step.id, "{message}")
                            }
                            _ => tracing::info!(run = %run.rec.id, step = %step.id, "{message}"),
                        }
                        self.event(
                            &run.rec.id,
                            "log",
                            Some(&step.id),
                            json!({"level": level, "message": redact_str(&message, secrets)}),
                        );
                        self.complete(run, i, Value::Null, None, None);
                    }
                    "http" => {
                        let timeout = self.attempt_timeout(
                            &step.timeout,
                            with.get("timeout").and_then(Value::as_str),
                        );
                        let key = format!("{}:{}", run.rec.id, step.id);
                        let client = self.http.clone();
                        self.spawn(run, i, async move {
                            exec::http::run(
                                &client,
                                exec::http::HttpCall {
                                    with: &with,
                                    idempotency_key: &key,
                                    timeout,
                                },
                            )
                            .await
                        });
                    }
                    "workflow" => self.start_child(run, i, &with),
                    other => {
                        let e = StepError::permanent(
                            "action",
                            format!("`{other}` is not a built-in action"),
                        );
                        self.fail_attempt(run, i, e);
                    }
                }
            }
            StepKind::Agent(a) => {
                let render = |t: &str, f: &str| template::render_string(t, &ctx, &step.field(f));
                let prompt = render(&a.prompt, "prompt");
                let system = a.system.as_deref().map(|s| render(s, "system")).transpose();
                let (prompt, system) = match (prompt, system) {
                    (Ok(p), Ok(s)) => (as_text(p), s.map(as_text)),
                    (Err(e), _) | (_, Err(e)) => {
                        self.begin(run, i, None, now);
                        self.fail_attempt(run, i, StepError::new("template", e.to_string()));
                        return;
                    }
                };
                let recorded = redact(
                    &json!({"prompt": prompt, "system": system, "model": a.model}),
                    secrets,
                );
                self.begin(run, i, Some(recorded), now);
                let timeout = self.attempt_timeout(&step.timeout, None);
                let client = self.http.clone();
                let llm = self.engine.config().llm.clone();
                let a = a.clone();
                self.spawn(run, i, async move {
                    exec::agent::run(
                        &client,
                        &llm,
                        exec::agent::AgentCall {
                            prompt: &prompt,
                            system: system.as_deref(),
                            model: a.model.as_deref(),
                            temperature: a.temperature,
                            max_tokens: a.max_tokens,
                            output_schema: a.output.as_ref(),
                            timeout,
                        },
                    )
                    .await
                });
            }
            StepKind::Approval(a) => {
                let message =
                    match template::render_string(&a.message, &ctx, &step.field("message")) {
                        Ok(m) => as_text(m),
                        Err(e) => {
                            self.begin(run, i, None, now);
                            self.fail_attempt(run, i, StepError::new("template", e.to_string()));
                            return;
                        }
                    };
                self.begin(
                    run,
                    i,
                    Some(json!({"message": message, "options": a.options})),
                    now,
                );
                self.suspend(run, i, "approval", step.timeout.as_deref(), now);
            }
            StepKind::ExternalEvent(e) => {
                self.begin(run, i, Some(json!({"signalType": e.signal})), now);
                self.suspend(run, i, "external_event", step.timeout.as_deref(), now);
            }
            StepKind::Wait(w) => {
                let due = match (&w.duration, &w.until) {
                    (Some(d), _) => crate::duration::parse(d)
                        .map_err(|e| e.to_string())
                        .and_then(|d| add(now, d)),
                    (None, Some(u)) => template::render_string(u, &ctx, &step.field("until"))
                        .map_err(|e| e.to_string())
                        .and_then(|v| {
                            let text = as_text(v);
                            text.trim().parse::<Timestamp>().map_err(|e| {
                                format!(
                                    "`until` rendered `{text}`, which is not an RFC 3339 time: {e}"
                                )
                            })
                        }),
                    (None, None) => Err("a wait needs `duration` or `until`".to_string()),
                };
                let due = match due {
                    Ok(d) => d,
                    Err(e) => {
                        self.begin(run, i, None, now);
                        self.fail_attempt(run, i, StepError::permanent("wait", e));
                        return;
                    }
                };
                self.begin(run, i, Some(json!({"until": due.to_string()})), now);
                if due <= now {
                    self.complete(run, i, Value::Null, None, None);
                } else {
                    run.slots[i].status = StepStatus::Waiting;
                    if let Some(rec) = run.slots[i].record.as_mut() {
                        rec.status = StepStatus::Waiting;
                        self.writes.push(Write::put_step(rec.clone()));
                    }
                    self.add_timer(&run.rec.id, &step.id, TimerKind::Wake, due);
                    // The maximum lifetime of a suspended run applies to sleeps too.
                    if let Ok(deadline) = add(now, self.engine.config().max_suspended)
                        && deadline < due
                    {
                        self.add_timer(&run.rec.id, &step.id, TimerKind::Deadline, deadline);
                    }
                    self.event(
                        &run.rec.id,
                        "step.waiting",
                        Some(&step.id),
                        json!({"until": due.to_string()}),
                    );
                    self.step_update(run, i);
                }
            }
            StepKind::Invalid => {
                self.begin(run, i, None, now);
                self.fail_attempt(
                    run,
                    i,
                    StepError::permanent("definition", "the step is not valid"),
                );
            }
        }
    }

    /// Mark a step RUNNING and remember its rendered input.
    fn begin(&mut self, run: &mut Active, i: usize, input: Option<Value>, now: Timestamp) {
        if run.rec.status == RunStatus::Pending {
            run.rec.status = RunStatus::Running;
            run.rec.started_at = Some(now);
            run.dirty = true;
            self.event(&run.rec.id, "run.started", None, json!({}));
        }
        let step_id = run.def.plan.definition.steps[i].id.clone();
        let slot = &mut run.slots[i];
        slot.status = StepStatus::Running;
        let mut rec = blank_step(
            &run.rec.id,
            &step_id,
            run.def.plan.position[i],
            slot.attempt,
        );
        rec.status = StepStatus::Running;
        rec.input = input;
        rec.started_at = Some(now);
        slot.record = Some(rec);
    }

    fn spawn<F>(&mut self, run: &mut Active, i: usize, fut: F)
    where
        F: std::future::Future<Output = Result<Success, StepError>> + Send + 'static,
    {
        if let Some(rec) = run.slots[i].record.clone() {
            self.writes.push(Write::put_step(rec));
        }
        let step_id = run.def.plan.definition.steps[i].id.clone();
        self.event(
            &run.rec.id,
            "step.started",
            Some(&step_id),
            json!({"attempt": run.slots[i].attempt}),
        );
        self.step_update(run, i);
        let tx = self.engine.inner.tx.clone();
        let (run_id, attempt) = (run.rec.id.clone(), run.slots[i].attempt);
        let handle = self.exec.spawn(async move {
            let result = fut.await;
            let _ = tx.send(Command::Done {
                run_id,
                step: i,
                attempt,
                result,
            });
        });
        run.tasks.insert(i, handle.abort_handle());
    }

    /// An approval or external event: the run waits, with a hook token and a deadline.
    fn suspend(
        &mut self,
        run: &mut Active,
        i: usize,
        kind: &str,
        timeout: Option<&str>,
        now: Timestamp,
    ) {
        let step_id = run.def.plan.definition.steps[i].id.clone();
        run.slots[i].status = StepStatus::Waiting;
        if let Some(rec) = run.slots[i].record.as_mut() {
            rec.status = StepStatus::Waiting;
            self.writes.push(Write::put_step(rec.clone()));
        }
        self.writes.push(Write::PutHook(HookRecord {
            token: new_token(),
            workspace_id: run.rec.workspace_id.clone(),
            run_id: run.rec.id.clone(),
            step_id: step_id.clone(),
            kind: kind.to_string(),
            status: "pending".into(),
            created_at: now,
            resumed_at: None,
        }));
        let max = self.engine.config().max_suspended;
        let limit = timeout
            .and_then(|t| crate::duration::parse(t).ok())
            .map_or(max, |t| t.min(max));
        if let Ok(deadline) = add(now, limit) {
            self.add_timer(&run.rec.id, &step_id, TimerKind::Deadline, deadline);
        }
        self.event(
            &run.rec.id,
            "step.waiting",
            Some(&step_id),
            json!({"kind": kind}),
        );
        self.step_update(run, i);
    }

    fn start_child(&mut self, run: &mut Active, i: usize, with: &serde_json::Map<String, Value>) {
        let step_id = run.def.plan.definition.steps[i].id.clone();
        let Some(def_id) = with
            .get("definition")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            self.fail_attempt(
                run,
                i,
                StepError::permanent("workflow", "`definition` must be a definition id"),
            );
            return;
        };
        let compiled = match self.store.definition(&run.rec.workspace_id, &def_id) {
            Ok(Some(rec)) => match self.engine.compiled_record(rec) {
                Ok(c) => c,
                Err(e) => {
                    self.fail_attempt(run, i, StepError::permanent("workflow", e.to_string()));
                    return;
                }
            },
            Ok(None) => {
                self.fail_attempt(
                    run,
                    i,
                    StepError::permanent(
                        "workflow",
                        format!("workflow definition `{def_id}` not found"),
                    ),
                );
                return;
            }
            Err(e) => {
                self.fail_attempt(run, i, StepError::new("workflow", e.to_string()));
                return;
            }
        };
        let input = with.get("input").cloned().unwrap_or_else(|| json!({}));
        if let Some(v) = &compiled.input {
            let problems = violations(v, &input);
            if !problems.is_empty() {
                let e = StepError::permanent(
                    "workflow",
                    format!("the input does not match the input schema of `{def_id}`"),
                )
                .with_details(json!({"problems": problems}));
                self.fail_attempt(run, i, e);
                return;
            }
        }
        if let Some(rec) = run.slots[i].record.clone() {
            self.writes.push(Write::put_step(rec));
        }
        self.step_update(run, i);
        let key = format!("{}:{}:{}", run.rec.id, step_id, run.slots[i].attempt);
        match self.existing_by_key(&run.rec.workspace_id, &key) {
            Ok(Some(child)) => {
                if child.status.is_terminal() {
                    self.child_done.push((run.rec.id.clone(), step_id, child));
                }
            }
            Ok(None) => {
                let req = CreateRun {
                    workspace_id: run.rec.workspace_id.clone(),
                    definition: def_id,
                    input,
                    idempotency_key: Some(key),
                    trigger: json!({"kind": "workflow", "label": format!("child of run {}", run.rec.id), "parentRunId": run.rec.id, "parentStepId": step_id}),
                };
                let child = self.new_run(&compiled, &req, Some((&run.rec.id, &step_id)));
                self.event(
                    &run.rec.id,
                    "child.started",
                    Some(&step_id),
                    json!({"childRunId": child.id}),
                );
            }
            Err(e) => self.fail_attempt(run, i, StepError::new("workflow", e.to_string())),
        }
    }

    fn process_children(&mut self) {
        while let Some((parent_id, step_id, child)) = self.child_done.pop() {
            let Some(mut parent) = self
                .get_or_load(&parent_id)
                .map(|_| ())
                .and_then(|()| self.active.remove(&parent_id))
            else {
                continue;
            };
            if let Some(i) = parent.def.step_index(&step_id)
                && parent.slots[i].status == StepStatus::Running
            {
                let meta = json!({"childRunId": child.id});
                match child.status {
                    RunStatus::Completed => {
                        self.complete(
                            &mut parent,
                            i,
                            child.output.clone().unwrap_or(Value::Null),
                            None,
                            Some(meta),
                        );
                    }
                    status => {
                        let e = StepError::new(
                            "workflow",
                            format!("child run {} ended {status}", child.id),
                        )
                        .with_details(json!({"childRunId": child.id, "error": child.error}));
                        self.fail_attempt(&mut parent, i, e);
                    }
                }
                self.refresh(&mut parent);
            }
            self.touched.insert(parent_id.clone());
            self.active.insert(parent_id, parent);
        }
    }

    fn complete(
        &mut self,
        run: &mut Active,
        i: usize,
        output: Value,
        usage: Option<Value>,
        meta: Option<Value>,
    ) {
        let now = self.now();
        let step_id = run.def.plan.definition.steps[i].id.clone();
        let slot = &mut run.slots[i];
        slot.status = StepStatus::Completed;
        slot.mj_output = Some(template::context(&output));
        slot.output = Some(output.clone());
        slot.committed = false;
        let mut rec = slot.record.clone().unwrap_or_else(|| {
            blank_step(
                &run.rec.id,
                &step_id,
                run.def.plan.position[i],
                slot.attempt,
            )
        });
        rec.status = StepStatus::Completed;
        rec.output = Some(output);
        rec.usage = usage;
        if meta.is_some() {
            rec.meta = meta;
        }
        rec.started_at.get_or_insert(now);
        rec.finished_at = Some(now);
        slot.record = Some(rec.clone());
        self.writes.push(Write::put_step(rec));
        self.event(
            &run.rec.id,
            "step.completed",
            Some(&step_id),
            json!({"attempt": run.slots[i].attempt}),
        );
        self.step_update(run, i);
        self.touched.insert(run.rec.id.clone());
    }

    fn fail_attempt(&mut self, run: &mut Active, i: usize, err: StepError) {
        let now = self.now();
        let step = run.def.plan.definition.steps[i].clone();
        run.tasks.remove(&i);
        let slot = &mut run.slots[i];
        let attempt = slot.attempt;
        let mut rec = slot.record.clone().unwrap_or_else(|| {
            blank_step(&run.rec.id, &step.id, run.def.plan.position[i], attempt)
        });
        rec.status = StepStatus::Failed;
        rec.error = Some(err.to_json());
        rec.started_at.get_or_insert(now);
        rec.finished_at = Some(now);
        slot.record = Some(rec.clone());
        self.writes.push(Write::put_step(rec));
        self.touched.insert(run.rec.id.clone());
        let retries_left =
            err.retryable && attempt < max_attempts(&step.retry) && !run.rec.status.is_terminal();
        if retries_left {
            let delay = backoff_delay(&step.retry, attempt);
            let slot = &mut run.slots[i];
            slot.status = StepStatus::Pending;
            slot.backoff = true;
            slot.attempt += 1;
            self.event(
                &run.rec.id,
                "step.retrying",
                Some(&step.id),
                json!({"attempt": attempt, "error": err.to_json(), "nextAttempt": attempt + 1, "delayMs": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)}),
            );
            let due = add(now, delay).unwrap_or(now);
            self.add_timer(&run.rec.id, &step.id, TimerKind::Retry, due);
            self.step_update(run, i);
            return;
        }
        run.slots[i].status = StepStatus::Failed;
        self.event(
            &run.rec.id,
            "step.failed",
            Some(&step.id),
            json!({"attempt": attempt, "error": err.to_json()}),
        );
        self.step_update(run, i);
        let mut error = err.to_json();
        error["step"] = json!(step.id);
        error["attempt"] = json!(attempt);
        self.fail_run(run, error);
    }

    fn fail_run(&mut self, run: &mut Active, error: Value) {
        self.stop_open_steps(run);
        self.end_run(run, RunStatus::Failed, Some(error), "run.failed");
    }

    /// A run reached a terminal status: tell waiters, and its parent if it has one.
    fn finished(&mut self, run: &Active) {
        self.touched.insert(run.rec.id.clone());
        self.updates.push(Update {
            run_id: run.rec.id.clone(),
            status: run.rec.status,
            step: None,
        });
        if let (Some(p), Some(s)) = (&run.rec.parent_run_id, &run.rec.parent_step_id) {
            self.child_done
                .push((p.clone(), s.clone(), run.rec.clone()));
        }
    }

    fn step_update(&mut self, run: &Active, i: usize) {
        self.updates.push(Update {
            run_id: run.rec.id.clone(),
            status: run.rec.status,
            step: Some((
                run.def.plan.definition.steps[i].id.clone(),
                run.slots[i].status,
            )),
        });
    }

    /// Recompute the run's status, index, pending action and result after its steps changed.
    fn refresh(&mut self, run: &mut Active) {
        if run.rec.status.is_terminal() {
            return;
        }
        let now = self.now();
        let status = run.derived_status();
        if status == RunStatus::Completed {
            let result = run.result(&self.engine.config().secrets);
            let output = match result {
                Ok(v) => v,
                Err(e) => {
                    self.fail_run(run, json!({"kind": "result", "message": e.to_string()}));
                    return;
                }
            };
            if let Some(v) = &run.def.output {
                let problems = violations(v, &output);
                if !problems.is_empty() {
                    self.fail_run(
                        run,
                        json!({"kind": "output", "message": "the result does not match the output schema", "details": {"problems": problems, "result": output}}),
                    );
                    return;
                }
            }
            run.rec.status = RunStatus::Completed;
            run.rec.output = Some(output);
            run.rec.pending_action = None;
            run.rec.finished_at = Some(now);
            run.rec.started_at.get_or_insert(now);
            run.rec.current_step_index = run.current_step_index();
            run.rec.updated_at = now;
            self.writes.push(Write::UpdateRun(RunUpdate::of(&run.rec)));
            self.writes.push(Write::DeleteRunTimers {
                run_id: run.rec.id.clone(),
            });
            self.event(&run.rec.id, "run.completed", None, json!({}));
            self.finished(run);
            return;
        }
        let status = if run.rec.status == RunStatus::Pending
            && status == RunStatus::Running
            && run.slots.iter().all(|s| s.status == StepStatus::Pending)
        {
            RunStatus::Pending
        } else {
            status
        };
        let index = run.current_step_index();
        let pending = if status.is_suspended() {
            run.pending_action()
        } else {
            None
        };
        if run.dirty
            || status != run.rec.status
            || index != run.rec.current_step_index
            || pending != run.rec.pending_action
        {
            run.dirty = false;
            run.rec.status = status;
            run.rec.current_step_index = index;
            run.rec.pending_action = pending;
            run.rec.updated_at = now;
            self.writes.push(Write::UpdateRun(RunUpdate::of(&run.rec)));
            self.updates.push(Update {
                run_id: run.rec.id.clone(),
                status,
                step: None,
            });
            self.touched.insert(run.rec.id.clone());
        }
    }

    fn attempt_timeout(
        &self,
        step_timeout: &Option<String>,
        http_timeout: Option<&str>,
    ) -> Duration {
        let parse = |t: Option<&str>| t.and_then(|t| crate::duration::parse(t).ok());
        let mut t =
            parse(step_timeout.as_deref()).unwrap_or(self.engine.config().default_step_timeout);
        if let Some(h) = parse(http_timeout) {
            t = t.min(h);
        }
        t
    }

    // ----- timers ---------------------------------------------------------------------------

    fn add_timer(&mut self, run_id: &str, step_id: &str, kind: TimerKind, due: Timestamp) {
        self.writes.push(Write::PutTimer(TimerRecord {
            run_id: run_id.to_string(),
            step_id: step_id.to_string(),
            kind,
            due_at: due,
        }));
        let horizon = add(self.now(), TIMER_WINDOW).unwrap_or(due);
        if due <= horizon {
            self.push_timer(run_id, step_id, kind, due);
        }
    }

    fn push_timer(&mut self, run_id: &str, step_id: &str, kind: TimerKind, due: Timestamp) {
        let key = (run_id.to_string(), step_id.to_string(), kind_code(kind));
        if self.timer_keys.insert(key) {
            self.timers.push(Reverse(TimerEntry {
                due: due.as_microsecond(),
                run_id: run_id.to_string(),
                step_id: step_id.to_string(),
                kind: kind_code(kind),
            }));
        }
    }

    fn refresh_timers(&mut self) {
        let now = self.now();
        let horizon = add(now, TIMER_WINDOW).unwrap_or(now);
        match self.store.timers_due(horizon, 100_000) {
            Ok(timers) => {
                for t in timers {
                    self.push_timer(&t.run_id, &t.step_id, t.kind, t.due_at);
                }
            }
            Err(e) => tracing::error!("cannot load timers: {e}"),
        }
        self.next_refresh = add(now, TIMER_WINDOW / 2).unwrap_or(now);
    }

    fn fire_timers(&mut self) {
        let now = self.now();
        if now >= self.next_refresh {
            self.refresh_timers();
        }
        while let Some(Reverse(t)) = self.timers.peek() {
            if t.due > now.as_microsecond() {
                break;
            }
            let Some(Reverse(t)) = self.timers.pop() else {
                break;
            };
            self.timer_keys
                .remove(&(t.run_id.clone(), t.step_id.clone(), t.kind));
            self.fire(&t.run_id, &t.step_id, code_kind(t.kind));
        }
        self.process_children();
    }

    fn fire(&mut self, run_id: &str, step_id: &str, kind: TimerKind) {
        self.writes.push(Write::DeleteTimer {
            run_id: run_id.to_string(),
            step_id: step_id.to_string(),
            kind,
        });
        self.touched.insert(run_id.to_string());
        if self.get_or_load(run_id).is_none() {
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
                        "timer.fired",
                        Some(step_id),
                        json!({"kind": "wake"}),
                    );
                    self.writes.push(Write::DeleteTimer {
                        run_id: run_id.to_string(),
                        step_id: step_id.to_string(),
                        kind: TimerKind::Deadline,
                    });
                    self.complete(&mut run, i, Value::Null, None, None);
                    self.refresh(&mut run);
                }
                TimerKind::Deadline if slot.status == StepStatus::Waiting => {
                    self.event(
                        run_id,
                        "timer.fired",
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
                    self.start(&mut run, i);
                    self.refresh(&mut run);
                }
                _ => {}
            }
        }
        self.active.insert(run_id.to_string(), run);
    }
}

/// Keep only the last write of each run row and step attempt; order is otherwise kept.
/// An update of a run inserted in the same batch folds into the insert.
fn coalesce(mut writes: Vec<Write>) -> Vec<Write> {
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

fn blank_step(run_id: &str, step_id: &str, index: usize, attempt: i64) -> StepRecord {
    StepRecord {
        run_id: run_id.to_string(),
        step_id: step_id.to_string(),
        step_index: i64::try_from(index).unwrap_or(i64::MAX),
        attempt,
        status: StepStatus::Pending,
        input: None,
        output: None,
        error: None,
        usage: None,
        meta: None,
        started_at: None,
        finished_at: None,
    }
}

fn max_attempts(retry: &Option<Retry>) -> i64 {
    match retry {
        None => 1,
        Some(Retry::Attempts(n)) => i64::from(*n).max(1),
        Some(Retry::Policy(p)) => i64::from(p.max_attempts.unwrap_or(3)).max(1),
    }
}

/// Delay before attempt `attempt + 1`: exponential (or fixed) with equal jitter.
fn backoff_delay(retry: &Option<Retry>, attempt: i64) -> Duration {
    let (kind, initial, max) = match retry {
        Some(Retry::Policy(p)) => (
            p.backoff.unwrap_or(Backoff::Exponential),
            p.initial_delay
                .as_deref()
                .and_then(|d| crate::duration::parse(d).ok())
                .unwrap_or(Duration::from_secs(1)),
            p.max_delay
                .as_deref()
                .and_then(|d| crate::duration::parse(d).ok())
                .unwrap_or(Duration::from_secs(300)),
        ),
        _ => (
            Backoff::Exponential,
            Duration::from_secs(1),
            Duration::from_secs(300),
        ),
    };
    let base = match kind {
        Backoff::Fixed => initial,
        Backoff::Exponential => {
            let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
            initial.saturating_mul(2u32.saturating_pow(exp))
        }
    };
    let base = base.min(max);
    // Equal jitter: half fixed, half random, so retries of many runs spread out.
    let half = base / 2;
    half + half.mul_f64(fastrand::f64())
}

fn add(t: Timestamp, d: Duration) -> Result<Timestamp, String> {
    let span = jiff::SignedDuration::try_from(d).map_err(|e| e.to_string())?;
    t.checked_add(span).map_err(|e| e.to_string())
}

fn as_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Secret values never reach history: replace them wherever they appear.
fn redact(v: &Value, secrets: &HashMap<String, String>) -> Value {
    if secrets.is_empty() {
        return v.clone();
    }
    match v {
        Value::String(s) => Value::String(redact_str(s, secrets)),
        Value::Array(a) => Value::Array(a.iter().map(|x| redact(x, secrets)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), redact(x, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn redact_str(s: &str, secrets: &HashMap<String, String>) -> String {
    let mut out = s.to_string();
    for secret in secrets.values().filter(|v| v.len() >= 4) {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = Some(Retry::Policy(crate::definition::RetryPolicy {
            max_attempts: Some(10),
            backoff: Some(Backoff::Exponential),
            initial_delay: Some("100ms".into()),
            max_delay: Some("1s".into()),
        }));
        let d1 = backoff_delay(&policy, 1);
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
            "{d1:?}"
        );
        let d3 = backoff_delay(&policy, 3);
        assert!(
            d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
            "{d3:?}"
        );
        let d9 = backoff_delay(&policy, 9);
        assert!(d9 <= Duration::from_secs(1), "{d9:?}");
        assert_eq!(max_attempts(&None), 1);
        assert_eq!(max_attempts(&Some(Retry::Attempts(4))), 4);
    }

    #[test]
    fn redaction_hides_secret_values() {
        let secrets = HashMap::from([("TOKEN".to_string(), "s3cr3t-value".to_string())]);
        let v = json!({"headers": {"Authorization": "Bearer s3cr3t-value"}});
        assert_eq!(
            redact(&v, &secrets),
            json!({"headers": {"Authorization": "Bearer ***"}})
        );
    }
}
