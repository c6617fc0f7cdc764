//! Metrics of what the scheduler decides. Each fact is noted with the batch that writes it
//! and applied only once that batch commits: a batch that rolls back counts nothing (its
//! work is redone, and counted, by the batch that commits it).

use std::time::Duration;

use jiff::Timestamp;

use super::Scheduler;
use crate::definition::StepKind;
use crate::engine::state::Active;
use crate::metrics::{Labels, Metrics};
use crate::model::StepStatus;
use crate::store::{RunRecord, StepRecord};

/// A metric update waiting for its batch to commit.
pub(in crate::engine) type Fact = Box<dyn FnOnce(&Metrics) + Send>;

fn span(from: Timestamp, to: Timestamp) -> Duration {
    let micros = to.as_microsecond().saturating_sub(from.as_microsecond());
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// The `type` label of a step: an action's `uses` (http, transform, log, workflow…),
/// otherwise the step type (agent, approval, external_event, wait).
fn step_type(run: &Active, i: usize) -> String {
    match run.def.plan.definition.steps.get(i).map(|s| &s.kind) {
        Some(StepKind::Action(a)) => a.uses.clone(),
        Some(k) => k.type_name().into(),
        None => "unknown".into(),
    }
}

fn workflow(run: &Active) -> (&'static str, String) {
    ("workflow", run.rec.definition_slug.clone())
}

impl Scheduler {
    fn fact(&mut self, f: impl FnOnce(&Metrics) + Send + 'static) {
        self.batch.facts.push(Box::new(f));
    }

    /// The batch committed: its size, and the facts it carried.
    pub(super) fn count_committed(&self, writes: usize, facts: Vec<Fact>) {
        let m = self.engine.metrics();
        m.commit_batch.observe(writes as f64);
        for f in facts {
            f(m);
        }
    }

    pub(super) fn count_run_created(&mut self, rec: &RunRecord) {
        let labels: Labels = vec![
            ("workflow", rec.definition_slug.clone()),
            (
                "trigger",
                rec.trigger["kind"].as_str().unwrap_or("unknown").into(),
            ),
        ];
        self.fact(move |m| Metrics::inc(&m.runs_started, labels));
    }

    pub(super) fn count_run_started(&mut self, run: &Active, now: Timestamp) {
        let (labels, d) = (vec![workflow(run)], span(run.rec.created_at, now));
        self.fact(move |m| Metrics::observe(&m.run_queue, labels, d));
    }

    pub(super) fn count_run_finished(&mut self, run: &Active) {
        let labels = vec![workflow(run), ("status", run.rec.status.as_str().into())];
        let d = span(
            run.rec.created_at,
            run.rec.finished_at.unwrap_or_else(|| self.now()),
        );
        self.fact(move |m| {
            Metrics::inc(&m.runs_finished, labels.clone());
            Metrics::observe(&m.run_duration, labels, d);
        });
    }

    pub(super) fn count_run_retried(&mut self, run: &Active) {
        let labels = vec![workflow(run)];
        self.fact(move |m| Metrics::inc(&m.runs_retried, labels));
    }

    pub(super) fn count_step_attempt(&mut self, run: &Active, i: usize) {
        let labels = vec![workflow(run), ("type", step_type(run, i))];
        self.fact(move |m| Metrics::inc(&m.step_attempts, labels));
    }

    /// A step attempt finished (`rec` is its final record).
    pub(super) fn count_step_done(&mut self, run: &Active, i: usize, rec: &StepRecord) {
        let kind = step_type(run, i);
        let failed = rec.status == StepStatus::Failed;
        let failure = failed.then(|| {
            let error = rec
                .error
                .as_ref()
                .and_then(|e| e["kind"].as_str())
                .unwrap_or("unknown")
                .to_string();
            vec![workflow(run), ("type", kind.clone()), ("error", error)]
        });
        let duration = rec.started_at.zip(rec.finished_at).map(|(a, b)| span(a, b));
        let status = if failed { "FAILED" } else { "COMPLETED" };
        self.fact(move |m| {
            if let Some(labels) = failure {
                Metrics::inc(&m.step_failures, labels);
            }
            if let Some(d) = duration {
                Metrics::observe(
                    &m.step_duration,
                    vec![("type", kind), ("status", status.into())],
                    d,
                );
            }
        });
    }
}
