//! `FaultStore`: any `Store`, with commits that fail when a test says so.
//!
//! Reads always pass through: the faults modelled are those of a database that stops
//! accepting transactions (disk full, lost connection, failover), which is what the engine
//! must survive without losing or repeating work. Every batch that did commit is kept in a
//! journal, so checks can replay exactly what became durable and in which order. A Postgres
//! backend is wrapped the same way: `FaultStore::new(Arc::new(PgStore::…))`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use serde_json::Value;
use stepwise::model::EventKind;
use stepwise::model::RunStatus;
use stepwise::store::{
    ApiKeyInfo, ApiKeyRecord, DefinitionRecord, EventRecord, HookRecord, Result, RunQuery,
    RunRecord, SignalRecord, StepRecord, Store, StoreError, TimerKind, TimerRecord, Write,
};

/// Which commits fail.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Every commit reaches the inner store.
    Healthy,
    /// Let `skip` commits through, fail the `fail` after them, then heal.
    FailNext { skip: u32, fail: u32 },
    /// Fail each of the next `left` commits with probability `p`, drawn from a seeded
    /// generator (reproducible), then heal.
    Random {
        p: f64,
        left: u32,
        rng: fastrand::Rng,
    },
    /// Fail everything until `heal`.
    Down,
}

/// Commit counters, for reports and for tests that want "the engine did try".
#[derive(Debug, Default)]
pub struct Counts {
    pub committed: AtomicU64,
    pub failed: AtomicU64,
}

pub struct FaultStore {
    inner: Arc<dyn Store>,
    plan: Mutex<Plan>,
    /// Batches that committed, in commit order (only while recording).
    journal: Mutex<Option<Vec<Vec<Write>>>>,
    pub counts: Counts,
}

/// What a refused commit returns: the shape of an I/O failure of the real store.
pub fn injected() -> StoreError {
    StoreError::Database("disk I/O error (injected by FaultStore)".into())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A check that panicked while holding the lock must not hide the next failure.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FaultStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            plan: Mutex::new(Plan::Healthy),
            journal: Mutex::new(None),
            counts: Counts::default(),
        }
    }

    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    pub fn set_plan(&self, plan: Plan) {
        *lock(&self.plan) = plan;
    }

    pub fn fail_next(&self, skip: u32, fail: u32) {
        self.set_plan(Plan::FailNext { skip, fail });
    }

    pub fn fail_randomly(&self, p: f64, left: u32, seed: u64) {
        self.set_plan(Plan::Random {
            p,
            left,
            rng: fastrand::Rng::with_seed(seed),
        });
    }

    pub fn go_down(&self) {
        self.set_plan(Plan::Down);
    }

    pub fn heal(&self) {
        self.set_plan(Plan::Healthy);
    }

    pub fn failed_commits(&self) -> u64 {
        self.counts.failed.load(Ordering::SeqCst)
    }

    /// Whether a commit might fail now.
    pub fn is_faulty(&self) -> bool {
        !matches!(*lock(&self.plan), Plan::Healthy)
    }

    /// Whether commits keep failing until `heal` (not just a few of them).
    pub fn is_unreliable(&self) -> bool {
        matches!(*lock(&self.plan), Plan::Down | Plan::Random { .. })
    }

    /// Whether every commit fails.
    pub fn is_down(&self) -> bool {
        matches!(*lock(&self.plan), Plan::Down)
    }

    /// Start keeping committed batches (drops what was kept before).
    pub fn record(&self) {
        *lock(&self.journal) = Some(Vec::new());
    }

    /// The batches committed since `record`, in order; recording goes on with an empty log.
    pub fn take_journal(&self) -> Vec<Vec<Write>> {
        lock(&self.journal)
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Decide the fate of one commit and advance the plan.
    fn refuse(&self) -> bool {
        let mut plan = lock(&self.plan);
        match &mut *plan {
            Plan::Healthy => false,
            Plan::Down => true,
            Plan::Random { p, left, rng } => {
                let fail = rng.f64() < *p;
                *left = left.saturating_sub(1);
                if *left == 0 {
                    *plan = Plan::Healthy;
                }
                fail
            }
            Plan::FailNext { skip, fail } => {
                if *skip > 0 {
                    *skip -= 1;
                    false
                } else {
                    *fail = fail.saturating_sub(1);
                    if *fail == 0 {
                        *plan = Plan::Healthy;
                    }
                    true
                }
            }
        }
    }
}

impl Store for FaultStore {
    fn commit(&self, writes: &[Write]) -> Result<()> {
        // An empty batch changes nothing, so like the real store it cannot fail.
        if writes.is_empty() {
            return self.inner.commit(writes);
        }
        if self.refuse() {
            self.counts.failed.fetch_add(1, Ordering::SeqCst);
            return Err(injected());
        }
        // The journal lock is held across the commit so the log order is the commit order.
        let mut journal = lock(&self.journal);
        self.inner.commit(writes)?;
        self.counts.committed.fetch_add(1, Ordering::SeqCst);
        if let Some(j) = journal.as_mut() {
            j.push(writes.to_vec());
        }
        Ok(())
    }

    // ----- everything else passes through: keep this block a plain delegation -------------

    fn put_definition(
        &self,
        workspace_id: &str,
        slug: &str,
        label: Option<&str>,
        source: &str,
        now: Timestamp,
    ) -> Result<(DefinitionRecord, bool)> {
        self.inner
            .put_definition(workspace_id, slug, label, source, now)
    }
    fn definition(&self, workspace_id: &str, id: &str) -> Result<Option<DefinitionRecord>> {
        self.inner.definition(workspace_id, id)
    }
    fn definition_versions(&self, workspace_id: &str, slug: &str) -> Result<Vec<DefinitionRecord>> {
        self.inner.definition_versions(workspace_id, slug)
    }
    fn list_definitions(&self, workspace_id: &str) -> Result<Vec<DefinitionRecord>> {
        self.inner.list_definitions(workspace_id)
    }
    fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.inner.run(id)
    }
    fn run_by_key(&self, workspace_id: &str, key: &str) -> Result<Option<RunRecord>> {
        self.inner.run_by_key(workspace_id, key)
    }
    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        self.inner.steps(run_id)
    }
    fn events(&self, run_id: &str) -> Result<Vec<EventRecord>> {
        self.inner.events(run_id)
    }
    fn signals(&self, run_id: &str) -> Result<Vec<SignalRecord>> {
        self.inner.signals(run_id)
    }
    fn list_runs(&self, q: &RunQuery) -> Result<(Vec<RunRecord>, u64)> {
        self.inner.list_runs(q)
    }
    fn run_ids_with_status(&self, statuses: &[RunStatus]) -> Result<Vec<String>> {
        self.inner.run_ids_with_status(statuses)
    }
    fn child_runs(&self, parent_run_id: &str) -> Result<Vec<RunRecord>> {
        self.inner.child_runs(parent_run_id)
    }
    fn timers_due(&self, before: Timestamp, limit: usize) -> Result<Vec<TimerRecord>> {
        self.inner.timers_due(before, limit)
    }
    fn hook(&self, token: &str) -> Result<Option<HookRecord>> {
        self.inner.hook(token)
    }
    fn trigger_state(&self, workspace_id: &str, name: &str) -> Result<Option<Value>> {
        self.inner.trigger_state(workspace_id, name)
    }
    fn put_trigger_state(&self, workspace_id: &str, name: &str, state: &Value) -> Result<()> {
        self.inner.put_trigger_state(workspace_id, name, state)
    }
    fn delete_finished_before(&self, before: Timestamp, limit: usize) -> Result<usize> {
        self.inner.delete_finished_before(before, limit)
    }
    fn hooks_for_run(&self, run_id: &str) -> Result<Vec<HookRecord>> {
        self.inner.hooks_for_run(run_id)
    }
    fn hooks_by_correlation(
        &self,
        workspace_id: &str,
        signal_type: &str,
        correlation: &str,
    ) -> Result<Vec<HookRecord>> {
        self.inner
            .hooks_by_correlation(workspace_id, signal_type, correlation)
    }
    fn run_starts_since(
        &self,
        workspace_id: &str,
        slug: &str,
        since: Timestamp,
    ) -> Result<Vec<Timestamp>> {
        self.inner.run_starts_since(workspace_id, slug, since)
    }
    fn buffered_signals(
        &self,
        workspace_id: &str,
        signal_type: &str,
        correlation: &str,
        now: Timestamp,
    ) -> Result<Vec<stepwise::store::BufferedSignal>> {
        self.inner
            .buffered_signals(workspace_id, signal_type, correlation, now)
    }
    fn claim_alert(
        &self,
        id: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<stepwise::store::AlertRecord>> {
        self.inner.claim_alert(id, now, until)
    }
    fn signal_delivery(
        &self,
        workspace_id: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<stepwise::store::SignalDelivery>> {
        self.inner.signal_delivery(workspace_id, key, now)
    }
    fn probe(&self) -> Result<()> {
        if self.is_down() {
            Err(injected())
        } else {
            self.inner.probe()
        }
    }
    fn timer(&self, run_id: &str, step_id: &str, kind: TimerKind) -> Result<Option<TimerRecord>> {
        self.inner.timer(run_id, step_id, kind)
    }
    fn put_named_api_key(&self, key: &ApiKeyRecord, name: Option<&str>) -> Result<()> {
        self.inner.put_named_api_key(key, name)
    }
    fn api_key_info(&self, hash: &str) -> Result<Option<ApiKeyInfo>> {
        self.inner.api_key_info(hash)
    }
    fn api_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        self.inner.api_keys()
    }
    fn revoke_api_key(&self, hash: &str, at: Timestamp) -> Result<bool> {
        self.inner.revoke_api_key(hash, at)
    }
    fn gauges(&self, now: Timestamp) -> Result<stepwise::metrics::StoredGauges> {
        self.inner.gauges(now)
    }
    fn ready(&self) -> Result<()> {
        self.inner.ready()
    }
    fn count_runs(&self, s: &stepwise::store::RunSelection) -> Result<u64> {
        self.inner.count_runs(s)
    }
    fn select_runs(
        &self,
        s: &stepwise::store::RunSelection,
        after: Option<&(Timestamp, String)>,
        limit: usize,
    ) -> Result<Vec<(Timestamp, String)>> {
        self.inner.select_runs(s, after, limit)
    }
    fn put_bulk(&self, op: &stepwise::store::BulkRecord) -> Result<()> {
        self.inner.put_bulk(op)
    }
    fn bulk(&self, id: &str) -> Result<Option<stepwise::store::BulkRecord>> {
        self.inner.bulk(id)
    }
    fn unfinished_bulks(&self) -> Result<Vec<stepwise::store::BulkRecord>> {
        self.inner.unfinished_bulks()
    }
    fn alerts_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<stepwise::store::AlertRecord>> {
        self.inner.alerts_due(now, limit)
    }
    fn alert(&self, id: &str) -> Result<Option<stepwise::store::AlertRecord>> {
        self.inner.alert(id)
    }
}

#[test]
fn commits_fail_by_plan_and_reads_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let inner = stepwise::store::SqliteStore::open(
        &dir.path().join("f.db"),
        stepwise::store::Synchronous::Normal,
    )
    .unwrap();
    let store = FaultStore::new(Arc::new(inner));
    store.record();
    let event = |kind: &str| {
        let kind = match kind {
            "a" => EventKind::RunCreated,
            "d" => EventKind::RunStarted,
            _ => EventKind::Log,
        };
        vec![Write::Event(EventRecord {
            run_id: "wfrun_x".into(),
            at: Timestamp::UNIX_EPOCH,
            kind,
            step_id: None,
            data: Value::Null,
        })]
    };
    store.fail_next(1, 2);
    assert!(store.commit(&event("a")).is_ok());
    assert!(store.commit(&event("b")).is_err());
    assert!(store.commit(&[]).is_ok(), "an empty batch cannot fail");
    assert!(store.commit(&event("c")).is_err());
    assert!(!store.is_faulty(), "the plan heals after its failures");
    assert!(store.commit(&event("d")).is_ok());
    store.go_down();
    assert!(store.commit(&event("e")).is_err());
    store.heal();
    store.fail_randomly(0.5, 40, 7);
    let outcomes: Vec<bool> = (0..40).map(|_| store.commit(&event("r")).is_ok()).collect();
    assert!(outcomes.contains(&true) && outcomes.contains(&false));
    assert!(!store.is_faulty(), "the random plan ends after its commits");
    let kinds: Vec<String> = store
        .events("wfrun_x")
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(&kinds[..2], ["run.created", "run.started"]);
    let ok = outcomes.iter().filter(|&&o| o).count();
    assert_eq!(store.take_journal().len(), 2 + ok);
    assert_eq!(
        store.counts.failed.load(Ordering::SeqCst),
        3 + 40 - ok as u64
    );
}
