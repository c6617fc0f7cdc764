//! Prometheus metrics: what the engine, the store and triggers count, rendered by
//! `GET /metrics` in the Prometheus text format (0.0.4).
//!
//! Each engine owns its registry (no global recorder), so several engines in one process
//! (tests, the CLI's embedded engine) never mix their figures. Counters and histograms are
//! updated where the fact becomes true: run and step figures only once their batch
//! committed (`Metrics::committed`), so a rolled-back batch counts nothing. Gauges that
//! describe stored state (waiting runs, due timers) are read from the store when scraped.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `name="value"` pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

type Hist = Family<Labels, Histogram, fn() -> Histogram>;

/// The media type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

fn seconds_hist() -> Histogram {
    // 1 ms … ~9 h: steps that call APIs and runs that wait for people share one scale.
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

fn batch_hist() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 9))
}

/// Gauges read from the store at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredGauges {
    /// WAITING and PAUSED runs by what they wait for (`approval`, `external_event`, `wait`…).
    pub waiting_by_kind: Vec<(String, u64)>,
    /// Timers whose due time has passed (fired timers are deleted: a growing figure means
    /// the scheduler is behind).
    pub timers_due: u64,
}

pub struct Metrics {
    registry: Registry,
    /// Renders one at a time: gauges are reset and set just before encoding.
    render: Mutex<()>,
    pub runs_started: Family<Labels, Counter>,
    pub runs_finished: Family<Labels, Counter>,
    pub runs_retried: Family<Labels, Counter>,
    pub run_duration: Hist,
    pub run_queue: Hist,
    pub step_attempts: Family<Labels, Counter>,
    pub step_failures: Family<Labels, Counter>,
    pub step_duration: Hist,
    pub commit_batch: Histogram,
    pub commit_latency: Histogram,
    pub store_errors: Counter,
    pub trigger_firings: Family<Labels, Counter>,
    pub trigger_errors: Family<Labels, Counter>,
    pub alerts: Family<Labels, Counter>,
    pub bulk_runs: Family<Labels, Counter>,
    waiting_runs: Family<Labels, Gauge>,
    timers_due: Gauge,
    active_runs: Gauge,
    store_up: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("stepwise");
        let m = Metrics {
            render: Mutex::new(()),
            runs_started: Family::default(),
            runs_finished: Family::default(),
            runs_retried: Family::default(),
            run_duration: Family::new_with_constructor(seconds_hist),
            run_queue: Family::new_with_constructor(seconds_hist),
            step_attempts: Family::default(),
            step_failures: Family::default(),
            step_duration: Family::new_with_constructor(seconds_hist),
            commit_batch: batch_hist(),
            commit_latency: seconds_hist(),
            store_errors: Counter::default(),
            trigger_firings: Family::default(),
            trigger_errors: Family::default(),
            alerts: Family::default(),
            bulk_runs: Family::default(),
            waiting_runs: Family::default(),
            timers_due: Gauge::default(),
            active_runs: Gauge::default(),
            store_up: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "runs_started",
            "Runs created, by workflow and trigger kind",
            m.runs_started.clone(),
        );
        r.register(
            "runs_finished",
            "Runs that reached COMPLETED, FAILED or CANCELLED, by workflow and status",
            m.runs_finished.clone(),
        );
        r.register(
            "runs_retried",
            "Runs retried from their failed step, by workflow",
            m.runs_retried.clone(),
        );
        r.register(
            "run_duration_seconds",
            "From a run's creation to its end, by workflow and status",
            m.run_duration.clone(),
        );
        r.register(
            "run_queue_seconds",
            "From a run's creation to its first step's start, by workflow",
            m.run_queue.clone(),
        );
        r.register(
            "step_attempts",
            "Step attempts started, by workflow and step type",
            m.step_attempts.clone(),
        );
        r.register(
            "step_failures",
            "Step attempts that failed (retried or not), by workflow, step type and error kind",
            m.step_failures.clone(),
        );
        r.register(
            "step_duration_seconds",
            "Duration of finished step attempts, by step type and status",
            m.step_duration.clone(),
        );
        r.register(
            "commit_batch_writes",
            "Writes per committed batch",
            m.commit_batch.clone(),
        );
        r.register(
            "commit_seconds",
            "Latency of one store commit (successful or not)",
            m.commit_latency.clone(),
        );
        r.register(
            "store_errors",
            "Commits the store refused",
            m.store_errors.clone(),
        );
        r.register(
            "trigger_firings",
            "Runs started by triggers, by trigger and kind (a redelivery that found its run counts too)",
            m.trigger_firings.clone(),
        );
        r.register(
            "trigger_errors",
            "Trigger events that started no run (refused webhook deliveries included), and failed polls, by trigger and kind",
            m.trigger_errors.clone(),
        );
        r.register(
            "alerts",
            "Failure alerts by kind (webhook, workflow) and outcome (delivered, retrying, failed)",
            m.alerts.clone(),
        );
        r.register(
            "bulk_runs",
            "Runs acted on by bulk operations, by action and outcome",
            m.bulk_runs.clone(),
        );
        r.register(
            "waiting_runs",
            "WAITING and PAUSED runs by what they wait for",
            m.waiting_runs.clone(),
        );
        r.register(
            "timers_due",
            "Stored timers whose due time has passed",
            m.timers_due.clone(),
        );
        r.register(
            "active_runs",
            "Runs the scheduler holds in memory (running or being changed)",
            m.active_runs.clone(),
        );
        r.register(
            "store_up",
            "1 while the store accepts commits, 0 while it refuses them",
            m.store_up.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The text format, with the gauges set from what was read just now.
    pub fn render(&self, gauges: &StoredGauges, active_runs: usize, store_up: bool) -> String {
        let _one = self
            .render
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.waiting_runs.clear();
        for (kind, n) in &gauges.waiting_by_kind {
            self.waiting_runs
                .get_or_create(&vec![("kind", kind.clone())])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.timers_due
            .set(i64::try_from(gauges.timers_due).unwrap_or(i64::MAX));
        self.active_runs
            .set(i64::try_from(active_runs).unwrap_or(i64::MAX));
        self.store_up.set(i64::from(store_up));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }

    pub fn inc(family: &Family<Labels, Counter>, labels: Labels) {
        family.get_or_create(&labels).inc();
    }

    pub fn observe(family: &Hist, labels: Labels, d: Duration) {
        family.get_or_create(&labels).observe(d.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_prometheus_text_format() {
        let m = Metrics::new();
        Metrics::inc(&m.runs_started, vec![("workflow", "a\"b".into())]);
        Metrics::observe(
            &m.run_duration,
            vec![("workflow", "a".into()), ("status", "COMPLETED".into())],
            Duration::from_millis(5),
        );
        let text = m.render(
            &StoredGauges {
                waiting_by_kind: vec![("approval".into(), 3)],
                timers_due: 2,
            },
            1,
            true,
        );
        assert!(
            text.contains("stepwise_runs_started_total{workflow=\"a\\\"b\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stepwise_waiting_runs{kind=\"approval\"} 3"),
            "{text}"
        );
        assert!(text.contains("stepwise_timers_due 2"), "{text}");
        assert!(
            text.contains("# TYPE stepwise_run_duration_seconds histogram"),
            "{text}"
        );
    }
}
