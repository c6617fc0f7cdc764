//! The runner: every case of a suite as a run on the real engine (same scheduler, same
//! `transform`/`log`/`workflow` executors), on a throwaway SQLite store and a virtual clock.
//!
//! All cases of a suite start together at the suite's start time and share the clock: runs
//! are independent, so one engine and its group commits serve them all. When the engine is
//! idle, due events are delivered; otherwise the clock jumps to the next thing that can
//! happen (an event's `at`, a `wait`, a retry's backoff, or a deadline that a case lets
//! pass), so waits of days take no real time.
//!
//! What keeps 1,000 cases under 2 s (`cargo bench --bench testing`): the clock jumps
//! straight to the earliest thing any case waits for, and every case's due event is
//! delivered in the same round (one group commit for all); retry backoff has no jitter
//! (`EngineConfig::jitter`), so the cases' retries share their times instead of each
//! needing its own round; the throwaway store does not fsync (`Synchronous::Off`).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::files::Suite;
use super::mocks::{CaseMocks, Mocks};
use super::model::{Event, EventKind};
use crate::clock::{Clock, ManualClock};
use crate::engine::{CreateRun, Engine, EngineConfig, Interceptor, Resume};
use crate::model::RunStatus;
use crate::store::{
    DEFAULT_WORKSPACE, EventRecord, RunRecord, SqliteStore, StepRecord, Store, Synchronous,
    TimerKind,
};

/// What one case's run did.
#[derive(Debug, Clone, Default)]
pub struct Actual {
    /// `REJECTED` when the run was not created (its input was refused).
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub run: Option<RunRecord>,
    /// Every attempt of every step, of the run and its child runs (the run's first).
    pub steps: Vec<StepRecord>,
    pub events: Vec<EventRecord>,
    /// Problems of the case itself: unmocked steps, events that could not be delivered.
    pub problems: Vec<Problem>,
}

/// A problem found while running a case, with the test-file pointer it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub pointer: String,
    pub message: String,
}

struct CaseState {
    root: Option<String>,
    events: VecDeque<Event>,
    /// The clock may run to here for this case's deadlines.
    horizon: Option<Timestamp>,
    problems: Vec<Problem>,
    /// What the run looked like when nothing more could happen to it within the case.
    done: Option<Actual>,
}

/// A throwaway database directory, removed when dropped.
struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_db() -> Result<TempDb, String> {
    let dir = std::env::temp_dir().join(format!("stepwise-test-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(TempDb(dir))
}

fn at(start: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|s| start.checked_add(s).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Run every case of a suite; the results keep the cases' order.
pub async fn run_suite(
    suite: &Suite,
    scripts: Option<&crate::exec::script::ScriptConfig>,
) -> Result<Vec<Actual>, String> {
    let db = temp_db()?;
    let store: Arc<dyn Store> = Arc::new(
        // Nobody reopens this store after a crash: no fsync.
        SqliteStore::open(&db.0.join("test.db"), Synchronous::Off)
            .map_err(|e| format!("cannot open the test store: {e}"))?,
    );
    let start = suite.test.start;
    let clock = ManualClock::new(start);
    let mocks = Arc::new(Mocks::new(
        suite.test.cases.iter().map(CaseMocks::of).collect(),
    ));
    let mut config = EngineConfig {
        intercept: Some(Interceptor(mocks.clone())),
        jitter: false,
        ..EngineConfig::from_env().unwrap_or_default()
    };
    if let Some(scripts) = scripts {
        config.scripts = scripts.clone();
    }
    // `live` script steps run in a workspace of the throwaway database's.
    config.workspaces.root = Some(db.0.join("workspaces"));
    // Secrets the workflows read get a placeholder unless the environment sets them, so
    // templates render (and a test can check where the placeholder went).
    for w in std::iter::once(&suite.workflow).chain(&suite.children) {
        for name in secret_names(&w.source) {
            config
                .secrets
                .entry(name.clone())
                .or_insert_with(|| format!("test-secret-{name}"));
        }
    }
    let engine = Engine::start(store.clone(), Arc::new(clock.clone()), config)
        .map_err(|e| format!("cannot start the engine: {e}"))?;
    let result = drive(suite, &engine, &store, &clock, &mocks, start).await;
    engine.shutdown().await;
    result
}

/// Names after `secrets.` in a workflow's text.
fn secret_names(source: &str) -> Vec<String> {
    source
        .split("secrets.")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

async fn apply(engine: &Engine, path: &Path, source: &str) -> Result<String, String> {
    match engine
        .apply_definition(DEFAULT_WORKSPACE, &path.display().to_string(), source)
        .await
    {
        Ok(Ok((rec, _))) => Ok(rec.version_id),
        Ok(Err(r)) => Err(format!(
            "{} does not lint: {}",
            path.display(),
            r.diagnostics.first().map_or("", |d| d.message.as_str())
        )),
        Err(e) => Err(format!("cannot store {}: {e}", path.display())),
    }
}

async fn drive(
    suite: &Suite,
    engine: &Engine,
    store: &Arc<dyn Store>,
    clock: &ManualClock,
    mocks: &Mocks,
    start: Timestamp,
) -> Result<Vec<Actual>, String> {
    // Tools before the agents that call them: applying checks an agent's tools.
    let children = crate::validate::tools::dependency_order(suite.children.iter().collect(), |c| {
        Some(&c.definition)
    });
    for c in children {
        apply(engine, &c.path, &c.source).await?;
    }
    let version = apply(engine, &suite.workflow.path, &suite.workflow.source).await?;
    // Every run is created before any time passes; creations share group commits.
    let mut creating = tokio::task::JoinSet::new();
    for (i, case) in suite.test.cases.iter().enumerate() {
        let (engine, version) = (engine.clone(), version.clone());
        let req = CreateRun {
            workspace_id: DEFAULT_WORKSPACE.into(),
            definition: version,
            input: case.input.clone(),
            idempotency_key: None,
            trigger: json!({"kind": "test", "label": case.name, "case": i}),
        };
        creating.spawn(async move { (i, engine.create_run(req).await) });
    }
    let mut states: Vec<CaseState> = suite
        .test
        .cases
        .iter()
        .map(|c| {
            let last_at = c.events.iter().filter_map(|e| e.at).max();
            let horizon = [last_at, c.run_for].into_iter().flatten().max();
            CaseState {
                root: None,
                events: c.events.iter().cloned().collect(),
                horizon: horizon.map(|d| at(start, d)),
                problems: Vec::new(),
                done: None,
            }
        })
        .collect();
    let mut rejected: HashMap<usize, String> = HashMap::new();
    while let Some(joined) = creating.join_next().await {
        let (i, r) = joined.map_err(|e| format!("a run creation failed: {e}"))?;
        match r {
            Ok((run, _)) => states[i].root = Some(run.id),
            Err(e) => {
                rejected.insert(i, e.to_string());
            }
        }
    }
    let root_case: HashMap<String, usize> = states
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.root.clone().map(|r| (r, i)))
        .collect();

    loop {
        engine
            .until_idle()
            .await
            .map_err(|e| format!("the engine stopped: {e}"))?;
        let now = clock.now();
        // Every case's due event at once: each resume waits for a commit, and one group
        // commit serves them all. A case gets one event per round, so its run reacts to
        // each before the next.
        let mut delivering = tokio::task::JoinSet::new();
        for (i, st) in states.iter().enumerate() {
            let Some(root) = st.root.clone().filter(|_| st.done.is_none()) else {
                continue;
            };
            let Some(ev) = st.events.front().cloned() else {
                continue;
            };
            if ev.at.is_some_and(|d| at(start, d) > now) {
                continue;
            }
            let (engine, store) = (engine.clone(), store.clone());
            delivering.spawn(async move {
                let r = deliver(&engine, &store, &root, &ev).await;
                (i, ev, r)
            });
        }
        let mut delivered = false;
        while let Some(joined) = delivering.join_next().await {
            let (i, ev, r) = joined.map_err(|e| format!("an event delivery failed: {e}"))?;
            let st = &mut states[i];
            match r {
                Ok(()) => {
                    st.events.pop_front();
                    delivered = true;
                }
                // An event due at a time its run cannot take is a problem of the case;
                // the case's next event gets its turn in the next round.
                Err(why) if ev.at.is_some() => {
                    st.events.pop_front();
                    delivered = true;
                    st.problems.push(Problem {
                        pointer: ev.pointer.clone(),
                        message: format!(
                            "event #{} ({}) could not be delivered at {}: {why}",
                            event_number(&ev.pointer),
                            ev.kind.describe(),
                            offset(start, now)
                        ),
                    });
                }
                // Without `at`: delivered once its step waits.
                Err(_) => {}
            }
        }
        if delivered {
            continue;
        }
        // What can still happen to each case: its next event, or a timer it lets fire. A case
        // with neither is over: its run is recorded as it is now, before the shared clock
        // moves on (and, say, times out the approval it is meant to leave waiting).
        let per_case = case_timers(store, mocks, &root_case, &states)?;
        let mut next: Option<Timestamp> = None;
        for (i, st) in states.iter_mut().enumerate() {
            let Some(root) = st.root.clone().filter(|_| st.done.is_none()) else {
                continue;
            };
            let event = st
                .events
                .front()
                .and_then(|e| e.at)
                .map(|d| at(start, d).max(now));
            let soonest = [event, per_case.get(&i).copied()]
                .into_iter()
                .flatten()
                .min();
            match soonest {
                Some(t) => next = Some(next.map_or(t, |n: Timestamp| n.min(t))),
                None => st.done = Some(collect(store, &root)?),
            }
        }
        let Some(next) = next else {
            break;
        };
        clock.set(next.max(now));
    }

    let mut out = Vec::with_capacity(states.len());
    for (i, st) in states.into_iter().enumerate() {
        let mut actual = match (st.done, &st.root) {
            (Some(a), _) => a,
            (None, Some(root)) => collect(store, root)?,
            (None, None) => Actual {
                status: "REJECTED".into(),
                error: Some(
                    json!({"kind": "input", "message": rejected.get(&i).cloned().unwrap_or_default()}),
                ),
                ..Actual::default()
            },
        };
        actual.problems = st.problems;
        let case_ptr = &suite.test.cases[i].pointer;
        for m in mocks.unmocked(i) {
            actual.problems.push(Problem {
                pointer: case_ptr.clone(),
                message: m,
            });
        }
        for ev in st.events {
            let state = match &actual.run {
                Some(r) if r.status.is_terminal() => format!("the run ended {}", r.status),
                Some(r) => format!(
                    "the run is {}{}",
                    r.status,
                    r.pending_action
                        .as_ref()
                        .and_then(|p| p.get("stepId").or_else(|| p.get("step")))
                        .and_then(Value::as_str)
                        .map(|s| format!(" at `{s}`"))
                        .unwrap_or_default()
                ),
                None => "the run was not created".into(),
            };
            actual.problems.push(Problem {
                pointer: ev.pointer.clone(),
                message: format!(
                    "event #{} ({}) was never delivered: {state}",
                    event_number(&ev.pointer),
                    ev.kind.describe()
                ),
            });
        }
        out.push(actual);
    }
    Ok(out)
}

fn event_number(pointer: &str) -> usize {
    pointer
        .rsplit('/')
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n + 1)
}

/// `+2h`, `+1d 3h`: a time as an offset from the start.
pub fn offset(start: Timestamp, t: Timestamp) -> String {
    let secs = t.as_second() - start.as_second();
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    let mut out = String::from("+");
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n != 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.len() == 1 {
        out.push_str("0s");
    }
    out
}

/// Per case, the earliest timer the clock may jump to: wakes and retries always; a
/// deadline only when its case lets time run that far (an event or `runFor` after it).
fn case_timers(
    store: &Arc<dyn Store>,
    mocks: &Mocks,
    roots: &HashMap<String, usize>,
    states: &[CaseState],
) -> Result<HashMap<usize, Timestamp>, String> {
    let timers = store
        .timers_due(Timestamp::MAX, 1_000_000)
        .map_err(|e| format!("cannot read timers: {e}"))?;
    let mut out: HashMap<usize, Timestamp> = HashMap::new();
    for t in timers {
        let Some(case) = roots
            .get(&t.run_id)
            .copied()
            .or_else(|| mocks.case_of(&t.run_id))
            .or_else(|| case_by_parent(store, roots, &t.run_id))
        else {
            continue;
        };
        if out.contains_key(&case) || states[case].done.is_some() {
            continue;
        }
        let counts =
            t.kind != TimerKind::Deadline || states[case].horizon.is_some_and(|h| t.due_at <= h);
        if counts {
            out.insert(case, t.due_at);
        }
    }
    Ok(out)
}

fn case_by_parent(
    store: &Arc<dyn Store>,
    roots: &HashMap<String, usize>,
    run_id: &str,
) -> Option<usize> {
    let mut id = run_id.to_string();
    for _ in 0..32 {
        if let Some(c) = roots.get(&id) {
            return Some(*c);
        }
        id = store.run(&id).ok()??.parent_run_id?;
    }
    None
}

/// The run and its descendants, the run first, then each generation in the order it was
/// started (steps that start at the same virtual instant are ordered by their run's place).
fn family(store: &Arc<dyn Store>, root: &str) -> Result<Vec<RunRecord>, String> {
    let mut out = Vec::new();
    let mut queue = VecDeque::from([root.to_string()]);
    while let Some(id) = queue.pop_front() {
        if let Some(r) = store.run(&id).map_err(|e| e.to_string())? {
            let mut children = store.child_runs(&id).map_err(|e| e.to_string())?;
            // Run ids are time-ordered (UUID v7): creation order.
            children.sort_by(|a, b| a.id.cmp(&b.id));
            queue.extend(children.into_iter().map(|c| c.id));
            out.push(r);
        }
    }
    Ok(out)
}

async fn deliver(
    engine: &Engine,
    store: &Arc<dyn Store>,
    root: &str,
    ev: &Event,
) -> Result<(), String> {
    let runs = family(store, root)?;
    let mut why = match runs.first() {
        Some(r) if r.status.is_terminal() => return Err(format!("the run ended {}", r.status)),
        Some(r) => format!("the run is {}", r.status),
        None => return Err("the run is gone".into()),
    };
    for run in runs
        .iter()
        .filter(|r| matches!(r.status, RunStatus::Paused | RunStatus::Waiting))
    {
        let r = match &ev.kind {
            EventKind::Approve { step, option } => {
                engine
                    .resume(
                        DEFAULT_WORKSPACE,
                        &run.id,
                        Resume::Approval {
                            step: step.clone(),
                            input: Value::String(option.clone()),
                        },
                        "stepwise test",
                    )
                    .await
            }
            EventKind::Signal { signal, payload } => {
                engine
                    .resume(
                        DEFAULT_WORKSPACE,
                        &run.id,
                        Resume::Signal {
                            signal_type: signal.clone(),
                            payload: payload.clone(),
                        },
                        "stepwise test",
                    )
                    .await
            }
            EventKind::Hook { step, payload } => {
                let hooks = store.hooks_for_run(&run.id).map_err(|e| e.to_string())?;
                let Some(h) = hooks
                    .iter()
                    .find(|h| h.step_id == *step && h.status == crate::store::HookStatus::Pending)
                else {
                    why = format!("step `{step}` has no pending hook");
                    continue;
                };
                engine
                    .resume_hook(&h.token, payload.clone(), "stepwise test")
                    .await
            }
        };
        match r {
            Ok(_) => return Ok(()),
            Err(e) => why = e.to_string(),
        }
    }
    Err(why)
}

fn collect(store: &Arc<dyn Store>, root: &str) -> Result<Actual, String> {
    let runs = family(store, root)?;
    let Some(run) = runs.first().cloned() else {
        return Err(format!("run {root} is gone"));
    };
    let mut steps = Vec::new();
    let mut events = Vec::new();
    for r in &runs {
        steps.extend(store.steps(&r.id).map_err(|e| e.to_string())?);
        events.extend(store.events(&r.id).map_err(|e| e.to_string())?);
    }
    Ok(Actual {
        status: run.status.to_string(),
        output: run.output.clone(),
        error: run.error.clone(),
        run: Some(run),
        steps,
        events,
        problems: Vec::new(),
    })
}
