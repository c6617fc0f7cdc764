//! What the store holds and what a commit writes: the records every backend reads and
//! writes, and [`Write`], the one list of changes a batch carries.

use jiff::Timestamp;
use serde_json::Value;

use crate::model::{RunStatus, StepStatus};

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
    /// A command for a run another process holds (a shared store): the owner applies it
    /// and answers in the row (see `InboxRecord`).
    InboxPut(Box<InboxRecord>),
    /// The owner's answer to an inbox command, committed with what the command did.
    InboxAnswer {
        id: String,
        answer: String,
    },
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

/// A command that reached a process which does not hold its run, kept until the process
/// that does applies it. Written in the caller's commit; the caller waits for its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxRecord {
    /// `inbox_…`, made by the caller (it waits for the answer under this id).
    pub id: String,
    pub run_id: String,
    /// The command, as JSON text (owned by the scheduler's `inbox`).
    pub command: String,
    pub created_at: Timestamp,
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
