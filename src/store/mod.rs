//! The store: the one narrow interface through which runs become durable.
//!
//! The engine hands the store batches of [`Write`]s, one transaction each (group commit), and
//! reads back records. Nothing outside `store/` knows SQL: `sqlite/` (one process, the
//! default) and `postgres/` (several processes sharing one database) implement the trait.

mod history;
pub mod migrate;
mod postgres;
mod records;
mod sqlite;
#[doc(hidden)]
pub mod test_backends;

pub use history::{HISTORY_COUNT_BOUND, HISTORY_SEARCH_WINDOW, HistoryFilter, HistoryPage};
pub use postgres::{PgOptions, PgStore, is_postgres_url};
pub use records::*;
pub use sqlite::{SqliteStore, Synchronous};

use jiff::Timestamp;
use serde_json::Value;

use crate::model::RunStatus;

/// The workspace used until API keys assign one (issue: HTTP API).
pub const DEFAULT_WORKSPACE: &str = "ws_default";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("a run with idempotency key `{0}` already exists")]
    DuplicateKey(String),
    /// A shared store refused a batch: another process took these runs over (their epoch
    /// moved on). Nothing of the batch was written.
    #[error("ownership of {} run(s) passed to another process", .0.len())]
    Fenced(Vec<String>),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store interface. Implementations must make each `commit` atomic and durable.
///
/// A store that several processes share (Postgres) also keeps who runs each run: a process
/// claims a run before it loads it, every commit is fenced by the epochs of the runs it
/// touches, and its leases are kept alive by the store. The defaults are one process's
/// (SQLite): every claim succeeds.
pub trait Store: Send + Sync + 'static {
    /// Several processes share this store: runs are claimed and writes fenced.
    fn shared(&self) -> bool {
        false
    }
    /// Claim a run for this process before loading it into memory; `false` when another
    /// live process holds it (its lease has not expired).
    fn claim_run(&self, _id: &str) -> Result<bool> {
        Ok(true)
    }
    /// Runs with one of these statuses that no live process holds, claimed for this one,
    /// oldest first (recovery at start, and takeover of a dead process's runs). `mine_too`
    /// (a scheduler starting on this store): also those this store's process held, which
    /// no scheduler has in memory now.
    fn claim_orphans(
        &self,
        statuses: &[RunStatus],
        _limit: usize,
        _mine_too: bool,
    ) -> Result<Vec<String>> {
        self.run_ids_with_status(statuses)
    }
    /// Whether this process still holds a run it has in memory (its epoch is current):
    /// false once another process took it over (a lapsed lease), so an answer derived
    /// from the copy in memory would be stale.
    fn holds(&self, _id: &str) -> Result<bool> {
        Ok(true)
    }
    /// The run left this process's memory: its next load claims it again. A shared store
    /// lets go of it soon after if it is waiting or finished and still held by this process
    /// (a command refused on it changed nothing, so nothing released it).
    fn forget_run(&self, _id: &str) {}
    /// Let go of every run this process holds (a graceful stop): other processes take them
    /// at once instead of after the lease. Returns how many.
    fn release_all(&self) -> Result<u64> {
        Ok(0)
    }

    /// Hold a schedule or poll trigger for this process (asking again renews the hold):
    /// on a shared store one process at a time fires it, and another takes it over once
    /// its holder stops asking for a lease's time. `false`: another live process holds it.
    fn claim_trigger(&self, _workspace_id: &str, _name: &str) -> Result<bool> {
        Ok(true)
    }
    /// Inbox commands (oldest first) that this process may apply now: their run is held
    /// by it, by no process, or by one whose lease expired, or the run is gone.
    fn inbox_open(&self, _limit: usize) -> Result<Vec<InboxRecord>> {
        Ok(Vec::new())
    }
    /// Take the answers given to these inbox commands: answered rows are returned as
    /// (id, answer) and deleted; the others stay.
    fn inbox_answers(&self, _ids: &[String]) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    /// Delete answers nobody took (their caller stopped waiting) older than `before`.
    fn sweep_inbox(&self, _before: Timestamp) -> Result<u64> {
        Ok(0)
    }
    /// Notified when an inbox row was written or answered by any process (sooner than the
    /// next poll); `None` when the store cannot tell.
    fn inbox_wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    fn commit(&self, writes: &[Write]) -> Result<()>;
    /// A small durable write: after commits failed, tells whether the store takes writes
    /// again when there is nothing else to commit.
    fn probe(&self) -> Result<()>;

    /// Store a definition version. The same source under the same slug returns the version
    /// already stored (`false`: nothing was created); a different one becomes the next version.
    fn put_definition(
        &self,
        workspace_id: &str,
        slug: &str,
        label: Option<&str>,
        source: &str,
        now: Timestamp,
    ) -> Result<(DefinitionRecord, bool)>;
    /// A slug (its latest version) or an exact `wfdef_…` id.
    fn definition(&self, workspace_id: &str, id: &str) -> Result<Option<DefinitionRecord>>;
    fn definition_versions(&self, workspace_id: &str, slug: &str) -> Result<Vec<DefinitionRecord>>;
    /// The latest version of every definition.
    fn list_definitions(&self, workspace_id: &str) -> Result<Vec<DefinitionRecord>>;

    fn run(&self, id: &str) -> Result<Option<RunRecord>>;
    fn run_by_key(&self, workspace_id: &str, key: &str) -> Result<Option<RunRecord>>;
    /// Every attempt of every step, ordered by step index then attempt.
    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>>;
    /// Runs with their steps (each list ordered as `steps` orders it), to load many into
    /// memory at once; ids not found are left out.
    fn runs_with_steps(&self, ids: &[String]) -> Result<Vec<(RunRecord, Vec<StepRecord>)>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(run) = self.run(id)? {
                let steps = self.steps(id)?;
                out.push((run, steps));
            }
        }
        Ok(out)
    }
    fn events(&self, run_id: &str) -> Result<Vec<EventRecord>>;
    fn signals(&self, run_id: &str) -> Result<Vec<SignalRecord>>;
    fn list_runs(&self, q: &RunQuery) -> Result<(Vec<RunRecord>, u64)>;
    /// Ids of runs with one of these statuses, oldest first (recovery after a restart).
    fn run_ids_with_status(&self, statuses: &[RunStatus]) -> Result<Vec<String>>;
    /// Children of a run (started by `workflow` steps).
    fn child_runs(&self, parent_run_id: &str) -> Result<Vec<RunRecord>>;

    /// Timers due at or before `before`, earliest first.
    fn timers_due(&self, before: Timestamp, limit: usize) -> Result<Vec<TimerRecord>>;
    fn hook(&self, token: &str) -> Result<Option<HookRecord>>;
    /// The stored timer of a step and kind, if any (a fired in-memory timer checks it).
    fn timer(&self, run_id: &str, step_id: &str, kind: TimerKind) -> Result<Option<TimerRecord>>;
    /// Store a new key without a name.
    fn put_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.put_named_api_key(key, None)
    }

    /// A trigger's persisted state (a schedule's next due time, a poll's cursor).
    fn trigger_state(&self, workspace_id: &str, name: &str) -> Result<Option<Value>>;
    fn put_trigger_state(&self, workspace_id: &str, name: &str, state: &Value) -> Result<()>;

    /// Delete up to `limit` runs that finished (COMPLETED, FAILED, CANCELLED) before
    /// `before`, with their steps, events, signals, hooks and timers. Returns how many.
    fn delete_finished_before(&self, before: Timestamp, limit: usize) -> Result<usize>;
    fn hooks_for_run(&self, run_id: &str) -> Result<Vec<HookRecord>>;

    // API key administration: names, listing, revocation.
    /// Store a new key with an optional name.
    fn put_named_api_key(&self, key: &ApiKeyRecord, name: Option<&str>) -> Result<()>;
    /// A key by its hash, revoked or not (the API checks `revoked_at` on every request).
    fn api_key_info(&self, hash: &str) -> Result<Option<ApiKeyInfo>>;
    /// Every key of every workspace, oldest first.
    fn api_keys(&self) -> Result<Vec<ApiKeyInfo>>;
    /// Revoke a key; `false` when no such key exists or it was already revoked.
    fn revoke_api_key(&self, hash: &str, at: Timestamp) -> Result<bool>;

    // Operations (issue 14): metrics, readiness.
    /// Suspended runs by what they wait for, and timers already due at `now` (`/metrics`).
    fn gauges(&self, now: Timestamp) -> Result<crate::metrics::StoredGauges>;
    /// The store answers reads and its schema is the one this build expects (`/readyz`).
    fn ready(&self) -> Result<()>;

    // Bulk operations (issue 14).
    fn count_runs(&self, s: &RunSelection) -> Result<u64>;
    /// Up to `limit` runs of the selection created after `after` (created_at, id), oldest
    /// first, as (created_at, id): a cursor that acting on runs does not disturb.
    fn select_runs(
        &self,
        s: &RunSelection,
        after: Option<&(Timestamp, String)>,
        limit: usize,
    ) -> Result<Vec<(Timestamp, String)>>;
    /// Insert or replace.
    fn put_bulk(&self, op: &BulkRecord) -> Result<()>;
    fn bulk(&self, id: &str) -> Result<Option<BulkRecord>>;
    fn unfinished_bulks(&self) -> Result<Vec<BulkRecord>>;
    // Correlated signals (`POST /v1/signals`): lookups through indexes, never scans.
    /// Pending hooks of external event steps waiting for this signal type and correlation
    /// value, oldest first.
    fn hooks_by_correlation(
        &self,
        workspace_id: &str,
        signal_type: &str,
        correlation: &str,
    ) -> Result<Vec<HookRecord>>;
    /// When runs of a workflow started, at or after `since` (a rate window after a restart).
    fn run_starts_since(
        &self,
        workspace_id: &str,
        slug: &str,
        since: Timestamp,
    ) -> Result<Vec<Timestamp>>;
    /// Buffered signals of this type and correlation value not yet consumed and not expired
    /// at `now`, oldest first.
    fn buffered_signals(
        &self,
        workspace_id: &str,
        signal_type: &str,
        correlation: &str,
        now: Timestamp,
    ) -> Result<Vec<BufferedSignal>>;

    /// A signal delivery handled before under this key, not expired at `now`.
    fn signal_delivery(
        &self,
        workspace_id: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<SignalDelivery>>;

    // Failure alerts (issue 14).
    /// Pending alerts due at or before `now`, oldest first.
    fn alerts_due(&self, now: Timestamp, limit: usize) -> Result<Vec<AlertRecord>>;
    fn alert(&self, id: &str) -> Result<Option<AlertRecord>>;
    /// Take a pending alert due at `now` for one delivery attempt: count the attempt and
    /// move its next try to `until` (a lease: a process that dies mid-delivery leaves it
    /// to be taken again then), atomically, so two processes never deliver it at once.
    /// `None`: not pending, or not due (another process has it).
    fn claim_alert(
        &self,
        id: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<AlertRecord>>;

    // The web UI. Defaults keep other backends compiling; they answer what they cannot do.
    /// Runs as [`Store::list_runs`] with the History page's extra filters, counted up to
    /// [`HISTORY_COUNT_BOUND`]; a text search reads at most [`HISTORY_SEARCH_WINDOW`] runs.
    fn history(&self, q: &RunQuery, f: &HistoryFilter) -> Result<HistoryPage> {
        if f.is_empty() {
            let (runs, total) = self.list_runs(q)?;
            return Ok(HistoryPage {
                runs,
                total,
                ..HistoryPage::default()
            });
        }
        Err(StoreError::Database(
            "this store cannot filter history by trigger or text".into(),
        ))
    }
    /// Store a new session (and drop expired ones).
    fn put_ui_session(&self, _s: &UiSession) -> Result<()> {
        Err(StoreError::Database(
            "this store does not keep web UI sessions".into(),
        ))
    }
    /// A session by its token's hash, if it has not expired at `now` and its key is not revoked.
    fn ui_session(&self, _hash: &str, _now: Timestamp) -> Result<Option<UiSession>> {
        Ok(None)
    }
    /// End a session (sign-out); ending an unknown session is not an error.
    fn delete_ui_session(&self, _hash: &str) -> Result<()> {
        Ok(())
    }
}
