//! Checks over a run's history: when timers fired, how attempts were spent, and the order in
//! which batches became durable.

use std::collections::{HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use stepwise::model::StepStatus;
use stepwise::store::Write;

use super::checks::{Invariant, RunView, Scope, Violations, done, index_of};
use super::model::{Kind, RETRY_DELAY_SECS, Workflow, step_id};

fn after(t: Option<Timestamp>, secs: i64) -> Option<Timestamp> {
    t.and_then(|t| t.checked_add(SignedDuration::from_secs(secs)).ok())
}

pub fn check_timing(wf: &Workflow, v: &RunView, scope: Scope, out: &mut Violations) {
    let id = &v.run.id;
    if !scope.timers_after_retry && v.run.attempt > 1 {
        return;
    }
    for r in &v.steps {
        let Some(i) = index_of(&r.step_id) else {
            continue;
        };
        let kind = &wf.steps[i].kind;
        let finished = r.finished_at;
        if r.status == StepStatus::Completed && matches!(kind, Kind::Wait { .. }) {
            let due = r
                .input
                .as_ref()
                .and_then(|x| x["until"].as_str())
                .and_then(|u| u.parse::<Timestamp>().ok());
            if due.is_none() || finished < due {
                out.add(
                    Invariant::TimersOnTime,
                    format!(
                        "{id} {}: the wait due {due:?} ended at {finished:?}",
                        r.step_id
                    ),
                );
            }
        }
        let timed_out = r.status == StepStatus::Failed
            && r.error.as_ref().is_some_and(|e| e["kind"] == "timeout");
        if timed_out && (kind.hooked() || matches!(kind, Kind::Wait { .. })) {
            let limit = kind.timeout().map_or(scope.max_suspended_secs, |t| {
                i64::from(t).min(scope.max_suspended_secs)
            });
            if finished < after(r.started_at, limit) {
                out.add(
                    Invariant::TimersOnTime,
                    format!(
                        "{id} {}: timed out at {finished:?}, started {:?}, limit {limit}s",
                        r.step_id, r.started_at
                    ),
                );
            }
        }
    }
    if !scope.retry_spacing {
        return;
    }
    for (n, e) in v.events.iter().enumerate() {
        if e.kind != "step.retrying" {
            continue;
        }
        let (Some(sid), Some(k)) = (e.step_id.as_deref(), e.data["attempt"].as_i64()) else {
            continue;
        };
        // A retry of the whole run starts the next attempt at once, by design.
        let run_retried = v.events[n + 1..]
            .iter()
            .take_while(|x| !(x.kind == "step.started" && x.step_id.as_deref() == Some(sid)))
            .any(|x| x.kind == "run.retried");
        if run_retried {
            continue;
        }
        let rec = |a: i64| v.steps.iter().find(|r| r.step_id == sid && r.attempt == a);
        if let (Some(failed), Some(next)) = (rec(k), rec(k + 1))
            && next.started_at.is_some()
            && next.started_at < after(failed.finished_at, RETRY_DELAY_SECS / 2)
        {
            out.add(
                Invariant::TimersOnTime,
                format!("{id} {sid}: attempt {} started {:?}, before the backoff after attempt {k} ({:?}) was over", k + 1, next.started_at, failed.finished_at),
            );
        }
    }
}

/// Within each attempt of the run, a step that failed for good used all its attempts.
pub fn check_retry_budget(wf: &Workflow, v: &RunView, out: &mut Violations) {
    let mut segment = 0;
    let mut retrying: HashMap<(usize, String), i64> = HashMap::new();
    for e in &v.events {
        if e.kind == "run.retried" {
            segment += 1;
            continue;
        }
        let Some(sid) = e.step_id.clone() else {
            continue;
        };
        match e.kind.as_str() {
            "step.retrying" => *retrying.entry((segment, sid)).or_default() += 1,
            "step.failed" => {
                let retryable = matches!(
                    e.data["error"]["kind"].as_str(),
                    Some("http_status" | "agent")
                );
                let budget = index_of(&sid).and_then(|i| wf.steps[i].kind.attempts());
                let used = retrying.get(&(segment, sid.clone())).copied().unwrap_or(0) + 1;
                if let Some(n) = budget
                    && retryable
                    && used != i64::from(n)
                {
                    out.add(
                        Invariant::RetryBudget,
                        format!("{} {sid}: failed after {used} attempts in run attempt {}, its retry allows {n}", v.run.id, segment + 1),
                    );
                }
            }
            _ => {}
        }
    }
}

/// Replay the committed batches: nothing starts before its needs were committed finished,
/// and nothing finished is written again.
pub fn check_journal(
    wf: &Workflow,
    runs: &HashSet<String>,
    journal: &[Vec<Write>],
    out: &mut Violations,
) -> HashMap<(String, String, i64), StepStatus> {
    let mut finished: HashMap<(String, String), i64> = HashMap::new();
    let mut committed = HashMap::new();
    for (n, batch) in journal.iter().enumerate() {
        let before = finished.clone();
        for w in batch {
            let Write::PutStep(s) = w else {
                continue;
            };
            if !runs.contains(&s.run_id) {
                continue;
            }
            let key = (s.run_id.clone(), s.step_id.clone());
            if let Some(a) = before.get(&key) {
                out.add(
                    Invariant::CompletionOnce,
                    format!(
                        "batch {n}: {} {} attempt {} written {} after attempt {a} finished",
                        s.run_id, s.step_id, s.attempt, s.status
                    ),
                );
            }
            let started = matches!(
                s.status,
                StepStatus::Running
                    | StepStatus::Waiting
                    | StepStatus::Completed
                    | StepStatus::Failed
                    | StepStatus::Skipped
            );
            if let Some(i) = index_of(&s.step_id)
                && started
            {
                for &d in &wf.steps[i].needs {
                    if !before.contains_key(&(s.run_id.clone(), step_id(d))) {
                        out.add(
                            Invariant::NeedsFirst,
                            format!("batch {n}: {} {} written {} before its need {} was committed finished", s.run_id, s.step_id, s.status, step_id(d)),
                        );
                    }
                }
            }
            if done(s.status) {
                finished.insert(key, s.attempt);
                committed.insert((s.run_id.clone(), s.step_id.clone(), s.attempt), s.status);
            }
        }
    }
    committed
}
