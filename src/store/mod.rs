//! The store: the one narrow interface through which runs become durable.
//!
//! The engine hands the store batches of [`Write`]s, one transaction each (group commit), and
//! reads back records. Nothing outside `store/` knows SQL: `sqlite/` (one process, the
//! default) and `postgres/` (several processes sharing one database) implement the trait.

mod history;
pub mod migrate;
mod postgres;
mod sqlite;
#[doc(hidden)]
pub mod test_backends;

pub use history::{HISTORY_COUNT_BOUND, HISTORY_SEARCH_WINDOW, HistoryFilter, HistoryPage};
pub use postgres::{PgOptions, PgStore, is_postgres_url};
pub use sqlite::{SqliteStore, Synchronous};

use jiff::Timestamp;
use serde_json::Value;

use crate::model::{RunStatus, StepStatus};

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

/// One stored version of a definition. Versions are never changed or deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionRecord {
    /// `wfdef_…`, the exact version.
    pub version_id: String,
    pub workspace_id: String,
    /// The definition's `id` (its slug), e.g. `lead-router`.
    pub slug: String,
    /// 1, 2, 3… per slug.
    pub version: i64,
    /// The `version:` label from the YAML, if any.
    pub label: Option<String>,
    /// SHA-256 of the source; applying the same source again returns the same version.
    pub hash: String,
    pub source: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub workspace_id: String,
    /// The exact definition version the run is pinned to.
    pub definition_id: String,
    pub definition_slug: String,
    pub status: RunStatus,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub idempotency_key: Option<String>,
    pub current_step_index: i64,
    /// 1, plus one per retry of the whole run.
    pub attempt: i64,
    pub parent_run_id: Option<String>,
    pub parent_step_id: Option<String>,
    /// How the run started: `{kind, label, …}`.
    pub trigger: Value,
    /// Seed 003's `pendingAction`, while the run is PAUSED or WAITING.
    pub pending_action: Option<Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// One attempt of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub run_id: String,
    pub step_id: String,
    /// Position in the plan's order.
    pub step_index: i64,
    pub attempt: i64,
    /// The run's attempt (1, then +1 per `POST /retry`) this step attempt belongs to:
    /// `retry: N` counts the step attempts of one run attempt.
    pub run_attempt: i64,
    pub status: StepStatus,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<Value>,
    /// Agent token counts and durations.
    pub usage: Option<Value>,
    /// Who decided an approval and when, and similar facts.
    pub meta: Option<Value>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// A `wait` step is due.
    Wake,
    /// A suspended step's `timeout` or the maximum lifetime has passed.
    Deadline,
    /// A failed attempt's backoff is over.
    Retry,
}

crate::model::text_enum!(TimerKind { Wake => "wake", Deadline => "deadline", Retry => "retry" });

/// Which step kind a hook resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Approval,
    ExternalEvent,
}

/// A hook is usable once, while its step waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookStatus {
    Pending,
    /// Used: its step was resumed (through this hook or otherwise).
    Resumed,
    /// Its step stopped waiting without it: timed out, failed, cancelled, or the run ended.
    Closed,
}

crate::model::text_enum!(HookKind { Approval => "approval", ExternalEvent => "external_event" });
crate::model::text_enum!(HookStatus { Pending => "pending", Resumed => "resumed", Closed => "closed" });

#[derive(Debug, Clone, PartialEq)]
pub struct TimerRecord {
    pub run_id: String,
    pub step_id: String,
    pub kind: TimerKind,
    pub due_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HookRecord {
    pub token: String,
    pub workspace_id: String,
    pub run_id: String,
    pub step_id: String,
    pub kind: HookKind,
    pub status: HookStatus,
    pub created_at: Timestamp,
    pub resumed_at: Option<Timestamp>,
    /// An external event step's signal type, when it waits with a correlation value.
    pub signal_type: Option<String>,
    /// The step's rendered `correlate`: `POST /v1/signals` finds the hook by
    /// (workspace, signal type, correlation) through an index.
    pub correlation: Option<String>,
}

/// A correlated signal kept until a step consumes it or it expires: it came before its
/// step started (`buffer:`), or a signal-with-start addressed it to the run it started.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferedSignal {
    /// `sig_…`, made by the engine so a batch can consume it before it is committed.
    pub id: String,
    pub workspace_id: String,
    pub signal_type: String,
    pub correlation: String,
    pub payload: Value,
    /// Only this run may consume it (signal-with-start); `None`: any step whose `buffer`
    /// reaches back to `received_at`.
    pub run_id: Option<String>,
    pub received_at: Timestamp,
    pub expires_at: Timestamp,
    /// `api`, `webhook <trigger>`, …
    pub via: String,
}

/// A signal delivery already handled, by its id: a redelivery with the same id (a webhook
/// provider sending an event again) is answered with what the first did.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalDelivery {
    pub workspace_id: String,
    /// Scoped by its sender: `webhook:<trigger>:<delivery id>`, `api:<Idempotency-Key>`.
    pub key: String,
    /// What the first delivery did: `{reached: [run ids], buffered, started, created}`.
    pub outcome: Value,
    pub received_at: Timestamp,
    /// Forgotten after this; a redelivery later counts as a new signal.
    pub expires_at: Timestamp,
}

/// An entry of a run's append-only event log (its trace).
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub run_id: String,
    pub at: Timestamp,
    pub kind: crate::model::EventKind,
    pub step_id: Option<String>,
    pub data: Value,
}

/// A signal delivered to a run.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalRecord {
    pub run_id: String,
    pub step_id: String,
    pub signal_type: String,
    pub payload: Value,
    pub received_at: Timestamp,
    /// `api`, `hook` or `cli`.
    pub via: String,
}

/// An API key, stored as its SHA-256 only.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub hash: String,
    pub workspace_id: String,
    /// The first characters, to tell keys apart in listings and history.
    pub prefix: String,
    pub created_at: Timestamp,
}

/// An API key as administrators see it (`stepwise keys list`): never the key itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyInfo {
    pub hash: String,
    pub workspace_id: String,
    pub prefix: String,
    /// What the key is for, given at creation (`--name`).
    pub name: Option<String>,
    pub created_at: Timestamp,
    /// Set once the key is revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<Timestamp>,
}

/// The fields of a run that change after it is created.
#[derive(Debug, Clone, PartialEq)]
pub struct RunUpdate {
    pub id: String,
    pub status: RunStatus,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub current_step_index: i64,
    pub attempt: i64,
    pub pending_action: Option<Value>,
    pub updated_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

impl RunUpdate {
    pub fn of(r: &RunRecord) -> Self {
        Self {
            id: r.id.clone(),
            status: r.status,
            output: r.output.clone(),
            error: r.error.clone(),
            current_step_index: r.current_step_index,
            attempt: r.attempt,
            pending_action: r.pending_action.clone(),
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }

    /// Apply to a full record (an insert in the same batch).
    pub fn apply(&self, r: &mut RunRecord) {
        r.status = self.status;
        r.output.clone_from(&self.output);
        r.error.clone_from(&self.error);
        r.current_step_index = self.current_step_index;
        r.attempt = self.attempt;
        r.pending_action.clone_from(&self.pending_action);
        r.updated_at = self.updated_at;
        r.started_at = self.started_at;
        r.finished_at = self.finished_at;
    }
}

/// One change in a batch; a batch commits atomically.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    InsertRun(Box<RunRecord>),
    UpdateRun(RunUpdate),
    PutStep(Box<StepRecord>),
    Event(EventRecord),
    PutTimer(TimerRecord),
    DeleteTimer {
        run_id: String,
        step_id: String,
        kind: TimerKind,
    },
    DeleteRunTimers {
        run_id: String,
    },
    PutHook(HookRecord),
    /// Every pending hook of a run (of one step, when given) gets `status`.
    CloseHooks {
        run_id: String,
        step_id: Option<String>,
        status: HookStatus,
        at: Timestamp,
    },
    Signal(SignalRecord),
    /// Keep a signal that reached no step (see [`BufferedSignal`]).
    BufferSignal(Box<BufferedSignal>),
    /// A signal delivery handled (with the writes of what it did, in one commit).
    SignalDelivery(Box<SignalDelivery>),
    /// A step took a buffered signal: it is used up.
    ConsumeSignal {
        id: String,
        run_id: String,
        at: Timestamp,
    },
    /// A new alert; an alert with the same id already stored is kept as it is.
    PutAlert(Box<AlertRecord>),
    /// An attempt's result.
    UpdateAlert {
        id: String,
        status: AlertStatus,
        attempts: i64,
        next_at: Timestamp,
        last_error: Option<String>,
        finished_at: Option<Timestamp>,
    },
}

impl Write {
    /// Records are boxed so a batch of many writes stays compact to move.
    pub fn insert_run(r: RunRecord) -> Write {
        Write::InsertRun(Box::new(r))
    }

    pub fn put_step(s: StepRecord) -> Write {
        Write::PutStep(Box::new(s))
    }
}

/// Filters and page of a run listing.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub workspace_id: String,
    pub status: Option<RunStatus>,
    /// A slug or an exact version id.
    pub definition: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// 1-based.
    pub page: u64,
    pub page_size: u64,
}

/// A failure alert: created with the run's failure, in the same commit; delivered by
/// `crate::alerts` and updated by the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// `<run id>:<run attempt>:<target>`: one alert per failure and target, by construction.
    pub id: String,
    pub run_id: String,
    pub workspace_id: String,
    /// `webhook` or `workflow`.
    pub kind: String,
    /// The webhook (`{url, headers}`) or `{workflow}`.
    pub target: Value,
    /// What is delivered: `{alertId, event, run, error}`.
    pub body: Value,
    pub status: AlertStatus,
    pub attempts: i64,
    /// When the next attempt is due (pending alerts).
    pub next_at: Timestamp,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Pending,
    Delivered,
    /// Given up after the last attempt, or refused for good (a 4xx, an unknown workflow).
    Failed,
}

crate::model::text_enum!(AlertStatus { Pending => "pending", Delivered => "delivered", Failed => "failed" });

/// Runs a bulk operation acts on (`count_runs`, `select_runs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSelection {
    pub workspace_id: String,
    /// Any of these (never empty).
    pub statuses: Vec<RunStatus>,
    /// A slug or an exact version id.
    pub definition: Option<String>,
    /// Created at or after.
    pub from: Option<Timestamp>,
    /// Created before.
    pub to: Option<Timestamp>,
}

/// A bulk operation on runs: its progress is `state` (JSON, owned by `crate::bulk`).
#[derive(Debug, Clone, PartialEq)]
pub struct BulkRecord {
    /// `bulk_…`.
    pub id: String,
    pub workspace_id: String,
    pub finished: bool,
    pub state: Value,
}

/// A signed-in browser session of the web UI: only the SHA-256 of its token is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UiSession {
    pub hash: String,
    /// The API key it was started with (the session ends when the key is revoked).
    pub key_hash: String,
    pub workspace_id: String,
    /// Recorded as who did what (`key:<prefix>`).
    pub actor: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

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
    /// The run left this process's memory: its next load claims it again.
    fn forget_run(&self, _id: &str) {}
    /// Let go of every run this process holds (a graceful stop): other processes take them
    /// at once instead of after the lease. Returns how many.
    fn release_all(&self) -> Result<u64> {
        Ok(0)
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
