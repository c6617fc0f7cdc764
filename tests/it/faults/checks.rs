//! The invariants, as pure checks over what the store holds (and what the executors saw).
//! They describe what a durable engine must guarantee, not what this engine happens to do.

use jiff::Timestamp;
use serde_json::Value;
use stepwise::model::{RunStatus, StepStatus};
use stepwise::store::{
    EventRecord, HookRecord, RunRecord, SignalRecord, StepRecord, Store, TimerKind, TimerRecord,
};

use super::model::{Kind, Workflow, options_of, signal_of, step_id};

/// The names the report and the known-defect list use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invariant {
    /// A step completes at most once, and its record and its event agree.
    CompletionOnce,
    /// What was committed finished stays as it was: no completion is lost or rewritten.
    CompletionKept,
    /// A step starts only after every step it needs was committed finished.
    NeedsFirst,
    /// An executor is called only after the step's start was committed.
    StartCommittedFirst,
    /// An executor runs at most once per attempt (plus once per crash), never after the
    /// step's completion was committed.
    ExecutedOnce,
    /// A signal, hook or approval completes its target step and no other.
    ResumeTarget,
    /// Commands succeed when the state allows them, are refused otherwise, a refused command
    /// changes nothing, and an acknowledged one is durable.
    CommandOutcome,
    /// The run's status (and pending action) is what its steps imply.
    StatusDerivable,
    /// Every waiting step waits on something real (a pending hook, a timer); an idle engine
    /// leaves no step running and no ready step unstarted.
    WaitingOnSomething,
    /// Once every wait is resolved and every timer due, every run ends.
    Terminates,
    /// No wait, deadline or retry fires before its time.
    TimersOnTime,
    /// Each attempt of a run gives a failing step its full `retry` budget.
    RetryBudget,
    /// Commands answer (during a store outage: fail at once); the engine settles.
    Responsive,
}

#[derive(Debug, Default)]
pub struct Violations(pub Vec<(Invariant, String)>);

impl Violations {
    pub fn add(&mut self, inv: Invariant, msg: impl Into<String>) {
        self.0.push((inv, msg.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Everything the store holds about one run.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run: RunRecord,
    pub steps: Vec<StepRecord>,
    pub events: Vec<EventRecord>,
    pub hooks: Vec<HookRecord>,
    pub signals: Vec<SignalRecord>,
    pub timers: Vec<TimerRecord>,
}

impl RunView {
    pub fn latest(&self, i: usize) -> Option<&StepRecord> {
        let id = step_id(i);
        self.steps
            .iter()
            .filter(|r| r.step_id == id)
            .max_by_key(|r| r.attempt)
    }

    pub fn timer(&self, i: usize, kind: TimerKind) -> bool {
        let id = step_id(i);
        self.timers
            .iter()
            .any(|t| t.step_id == id && t.kind == kind)
    }

    /// Each step's status as the engine must treat it: a failed attempt with a retry timer
    /// is a pending step.
    pub fn effective(&self, wf: &Workflow) -> Vec<StepStatus> {
        (0..wf.steps.len())
            .map(|i| match self.latest(i) {
                None => StepStatus::Pending,
                Some(r) if r.status == StepStatus::Failed && self.timer(i, TimerKind::Retry) => {
                    StepStatus::Pending
                }
                Some(r) => r.status,
            })
            .collect()
    }

    pub fn status_of(&self, i: usize) -> Option<StepStatus> {
        self.latest(i).map(|r| r.status)
    }
}

pub fn load(store: &dyn Store, ids: &[String]) -> Result<Vec<RunView>, String> {
    let far = Timestamp::MAX;
    let all_timers = store
        .timers_due(far, 1_000_000)
        .map_err(|e| e.to_string())?;
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        let run = store
            .run(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("run {id} is not in the store"))?;
        views.push(RunView {
            run,
            steps: store.steps(id).map_err(|e| e.to_string())?,
            events: store.events(id).map_err(|e| e.to_string())?,
            hooks: store.hooks_for_run(id).map_err(|e| e.to_string())?,
            signals: store.signals(id).map_err(|e| e.to_string())?,
            timers: all_timers
                .iter()
                .filter(|t| &t.run_id == id)
                .cloned()
                .collect(),
        });
    }
    Ok(views)
}

pub fn done(s: StepStatus) -> bool {
    matches!(s, StepStatus::Completed | StepStatus::Skipped)
}

pub fn index_of(step: &str) -> Option<usize> {
    step.strip_prefix('s').and_then(|n| n.parse().ok())
}

/// The engine's rule for a run's status, restated over stored steps.
pub fn derive(wf: &Workflow, eff: &[StepStatus]) -> RunStatus {
    if eff.iter().all(|&s| done(s)) {
        return RunStatus::Completed;
    }
    let mut blocked = vec![false; eff.len()];
    for i in 0..eff.len() {
        blocked[i] = wf.steps[i].needs.iter().any(|&d| {
            matches!(
                eff[d],
                StepStatus::Waiting | StepStatus::Failed | StepStatus::Cancelled
            ) || (eff[d] == StepStatus::Pending && blocked[d])
        });
    }
    let busy = (0..eff.len())
        .any(|i| eff[i] == StepStatus::Running || (eff[i] == StepStatus::Pending && !blocked[i]));
    if busy {
        return RunStatus::Running;
    }
    let waiting: Vec<usize> = (0..eff.len())
        .filter(|&i| eff[i] == StepStatus::Waiting)
        .collect();
    if waiting.is_empty() {
        return RunStatus::Running;
    }
    if waiting
        .iter()
        .any(|&i| matches!(wf.steps[i].kind, Kind::Approval { .. }))
    {
        RunStatus::Paused
    } else {
        RunStatus::Waiting
    }
}

/// Which checks to run besides the always-true ones.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// The engine is idle and the store healthy: nothing may be left in between.
    pub settled: bool,
    /// Check that retries waited their backoff.
    pub retry_spacing: bool,
    /// Check deadline and wake times on runs retried as a whole, too.
    pub timers_after_retry: bool,
    pub retry_budget: bool,
    pub max_suspended_secs: i64,
}

/// The checks that hold for every committed state.
pub fn check_run(wf: &Workflow, v: &RunView, scope: Scope, out: &mut Violations) {
    let eff = v.effective(wf);
    check_completions(wf, v, out);
    check_status(wf, v, &eff, out);
    check_waits(wf, v, &eff, scope, out);
    check_resumes(wf, v, out);
    super::history::check_timing(wf, v, scope, out);
    if scope.retry_budget {
        super::history::check_retry_budget(wf, v, out);
    }
}

/// CompletionOnce: records and events agree, one completion per step.
fn check_completions(wf: &Workflow, v: &RunView, out: &mut Violations) {
    let id = &v.run.id;
    let name = |i: usize| step_id(i);
    for i in 0..wf.steps.len() {
        let sid = name(i);
        let completed: Vec<&StepRecord> = v
            .steps
            .iter()
            .filter(|r| r.step_id == sid && r.status == StepStatus::Completed)
            .collect();
        let events: Vec<&EventRecord> = v
            .events
            .iter()
            .filter(|e| e.kind == "step.completed" && e.step_id.as_deref() == Some(&sid))
            .collect();
        if completed.len() > 1 || events.len() > 1 {
            out.add(
                Invariant::CompletionOnce,
                format!(
                    "{id} {sid}: {} COMPLETED records, {} step.completed events",
                    completed.len(),
                    events.len()
                ),
            );
        } else if completed.len() != events.len()
            || completed.first().map(|r| r.attempt)
                != events.first().and_then(|e| e.data["attempt"].as_i64())
        {
            out.add(
                Invariant::CompletionOnce,
                format!("{id} {sid}: the COMPLETED record and the step.completed event disagree"),
            );
        }
    }
}

/// StatusDerivable: the run's status and pending action follow from its steps.
fn check_status(wf: &Workflow, v: &RunView, eff: &[StepStatus], out: &mut Violations) {
    let id = &v.run.id;
    let status = v.run.status;
    let name = |i: usize| step_id(i);
    let has_failed = eff.contains(&StepStatus::Failed);
    let open = eff
        .iter()
        .any(|s| matches!(s, StepStatus::Running | StepStatus::Waiting));
    match status {
        RunStatus::Completed if !eff.iter().all(|&s| done(s)) => out.add(
            Invariant::StatusDerivable,
            format!("{id} is COMPLETED but its steps are {eff:?}"),
        ),
        RunStatus::Failed if open || !has_failed => out.add(
            Invariant::StatusDerivable,
            format!("{id} is FAILED but its steps are {eff:?}"),
        ),
        RunStatus::Cancelled if open => out.add(
            Invariant::StatusDerivable,
            format!("{id} is CANCELLED but its steps are {eff:?}"),
        ),
        s if !s.is_terminal() => {
            if let Some(i) = eff
                .iter()
                .position(|s| matches!(s, StepStatus::Failed | StepStatus::Cancelled))
            {
                out.add(
                    Invariant::StatusDerivable,
                    format!(
                        "{id} is {s} but step {} is {} with no retry pending (steps {eff:?})",
                        name(i),
                        eff[i]
                    ),
                );
            } else {
                let d = derive(wf, eff);
                let ok = if s == RunStatus::Pending {
                    d == RunStatus::Running && eff.iter().all(|&e| e == StepStatus::Pending)
                } else {
                    s == d
                };
                if !ok {
                    out.add(
                        Invariant::StatusDerivable,
                        format!("{id} is {s} but its steps {eff:?} make it {d}"),
                    );
                }
            }
        }
        _ => {}
    }
    let pending_step = v
        .run
        .pending_action
        .as_ref()
        .and_then(|p| p["step"].as_str())
        .and_then(index_of);
    if status.is_suspended() != pending_step.is_some()
        || pending_step.is_some_and(|i| eff.get(i) != Some(&StepStatus::Waiting))
    {
        out.add(
            Invariant::StatusDerivable,
            format!(
                "{id} is {status} with pendingAction {:?} (steps {eff:?})",
                v.run.pending_action
            ),
        );
    }
}

/// WaitingOnSomething: hooks and timers match the steps that wait.
fn check_waits(wf: &Workflow, v: &RunView, eff: &[StepStatus], scope: Scope, out: &mut Violations) {
    let id = &v.run.id;
    let status = v.run.status;
    let name = |i: usize| step_id(i);
    if status.is_terminal() {
        if v.hooks.iter().any(|h| h.status == "pending") || !v.timers.is_empty() {
            out.add(
                Invariant::WaitingOnSomething,
                format!(
                    "{id} is {status} but keeps pending hooks or timers: {:?} {:?}",
                    v.hooks, v.timers
                ),
            );
        }
    } else {
        for (i, step) in wf.steps.iter().enumerate() {
            let pending = v
                .hooks
                .iter()
                .filter(|h| h.step_id == name(i) && h.status == "pending")
                .count();
            let waits = eff[i] == StepStatus::Waiting;
            let fine = match step.kind {
                Kind::Approval { .. } | Kind::Event { .. } => {
                    pending == usize::from(waits) && (!waits || v.timer(i, TimerKind::Deadline))
                }
                Kind::Wait { .. } => waits == v.timer(i, TimerKind::Wake),
                _ => true,
            };
            if !fine {
                out.add(
                    Invariant::WaitingOnSomething,
                    format!(
                        "{id} {}: {:?} with {pending} pending hooks, timers {:?}",
                        name(i),
                        v.status_of(i),
                        v.timers
                    ),
                );
            }
        }
        for t in &v.timers {
            let Some(i) = index_of(&t.step_id) else {
                continue;
            };
            let latest = v.status_of(i);
            let fine = match t.kind {
                TimerKind::Wake | TimerKind::Deadline => latest == Some(StepStatus::Waiting),
                TimerKind::Retry => latest == Some(StepStatus::Failed),
            };
            if !fine {
                out.add(
                    Invariant::WaitingOnSomething,
                    format!(
                        "{id}: a {} timer for {} which is {latest:?}",
                        t.kind.as_str(),
                        t.step_id
                    ),
                );
            }
        }
        if scope.settled {
            for i in 0..eff.len() {
                let ready = eff[i] == StepStatus::Pending
                    && !v.timer(i, TimerKind::Retry)
                    && wf.steps[i].needs.iter().all(|&d| done(eff[d]));
                if eff[i] == StepStatus::Running || ready {
                    out.add(
                        Invariant::WaitingOnSomething,
                        format!(
                            "{id} {}: {} while the engine is idle (steps {eff:?})",
                            name(i),
                            if ready {
                                "ready but not started"
                            } else {
                                "RUNNING"
                            }
                        ),
                    );
                }
            }
        }
    }
    for h in &v.hooks {
        let kind_ok = index_of(&h.step_id)
            .and_then(|i| wf.steps.get(i))
            .is_some_and(|s| match s.kind {
                Kind::Approval { .. } => h.kind == "approval",
                Kind::Event { .. } => h.kind == "external_event",
                _ => false,
            });
        if !kind_ok {
            out.add(
                Invariant::ResumeTarget,
                format!("{id}: hook of kind {} for step {}", h.kind, h.step_id),
            );
        }
    }
}

/// ResumeTarget: each resumed step carries what was sent to it.
fn check_resumes(wf: &Workflow, v: &RunView, out: &mut Violations) {
    let id = &v.run.id;
    let name = |i: usize| step_id(i);
    for r in v.steps.iter().filter(|r| r.status == StepStatus::Completed) {
        let Some(i) = index_of(&r.step_id) else {
            continue;
        };
        let out_v = r.output.clone().unwrap_or(Value::Null);
        match &wf.steps[i].kind {
            Kind::Event { .. } if out_v["for"] != Value::String(r.step_id.clone()) => out.add(
                Invariant::ResumeTarget,
                format!(
                    "{id} {} completed with a payload sent to {}",
                    r.step_id, out_v["for"]
                ),
            ),
            Kind::Approval { .. }
                if !options_of(i)
                    .iter()
                    .any(|o| out_v == Value::String(o.clone())) =>
            {
                out.add(
                    Invariant::ResumeTarget,
                    format!(
                        "{id} {} was decided with {out_v}, not one of its options",
                        r.step_id
                    ),
                )
            }
            Kind::Transform => {
                for &n in &wf.steps[i].needs {
                    let seen = out_v["needs"][name(n)].as_str().unwrap_or_default();
                    if seen != "COMPLETED" && seen != "SKIPPED" {
                        out.add(
                            Invariant::NeedsFirst,
                            format!(
                                "{id} {} ran while its need {} was `{seen}`",
                                r.step_id,
                                name(n)
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    for s in &v.signals {
        let expected = index_of(&s.step_id).map(signal_of);
        if s.payload["for"] != Value::String(s.step_id.clone())
            || expected.as_deref() != Some(s.signal_type.as_str())
        {
            out.add(
                Invariant::ResumeTarget,
                format!(
                    "{id}: signal {} for {:?} recorded on {}",
                    s.signal_type,
                    s.payload.get("for"),
                    s.step_id
                ),
            );
        }
    }
}
