//! Bulk actions: cancel or retry every run a filter selects, as a tracked operation.
//!
//! The operation's row is stored before the caller is answered and updated after each
//! batch, with a cursor (created_at, id) over the selection in creation order: acting on a
//! run changes its status but not its place, so the cursor neither skips nor repeats runs.
//! Only runs created before the operation are selected. After a restart, `resume` picks
//! unfinished operations up at their cursor; a batch interrupted half-way is acted on again,
//! and the runs already done answer 409 (skipped), so no run is cancelled or retried twice.
//! Each action goes through the engine like a single `cancel`/`retry` call.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::engine::{Engine, EngineError, Result, blocking};
use crate::metrics::Metrics;
use crate::model::RunStatus;
use crate::store::{BulkRecord, RunRecord, RunSelection};

/// Runs acted on per batch (concurrently, so the scheduler commits them together).
const BATCH: usize = 100;
/// Errors kept in the operation (the counts cover all of them).
const ERRORS_KEPT: usize = 20;
pub const ID_PREFIX: &str = "bulk_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Cancel,
    Retry,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Retry => "retry",
        }
    }

    /// Cancel or retry one run, recording who asked (`by`) in its trace: the one call the
    /// API, the web UI and bulk operations make.
    pub async fn on(
        self,
        engine: &Engine,
        workspace_id: &str,
        run_id: &str,
        by: Option<&str>,
    ) -> Result<RunRecord> {
        match self {
            Action::Cancel => engine.cancel_by(workspace_id, run_id, by).await,
            Action::Retry => engine.retry_by(workspace_id, run_id, by).await,
        }
    }
}

/// Which runs: the run list's filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BulkFilter)]
pub struct Filter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// A slug or an exact `wfdef_` version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition_id: Option<String>,
    /// Created at or after.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub from: Option<Timestamp>,
    /// Created before.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub to: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = BulkStatus)]
pub enum Status {
    Running,
    Completed,
}

/// A bulk operation as the API shows it (and as its row stores it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BulkOperation)]
pub struct Operation {
    #[schema(pattern = "^bulk_")]
    pub id: String,
    pub action: Action,
    pub filter: Filter,
    pub status: Status,
    /// Runs selected when the operation started.
    pub total: u64,
    /// Runs acted on so far: succeeded + skipped + failed.
    pub processed: u64,
    pub succeeded: u64,
    /// Runs no longer in a state the action applies to (finished or retried meanwhile).
    pub skipped: u64,
    pub failed: u64,
    /// The first errors: `{runId, message}`.
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<Value>,
    /// Only runs created before this are selected (the operation's start).
    #[schema(value_type = String, format = DateTime)]
    pub until: Timestamp,
    /// The last run acted on: [created_at, id].
    #[schema(value_type = Option<Vec<String>>, required = true)]
    pub cursor: Option<(Timestamp, String)>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "millis")]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "millis")]
    pub updated_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    #[serde(serialize_with = "millis_opt")]
    pub finished_at: Option<Timestamp>,
}

/// Times people read are written like a run's (`…T12:00:00.000Z`); `until` and `cursor`
/// keep microseconds, since they bound which runs are selected.
fn millis<S: serde::Serializer>(t: &Timestamp, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
}

fn millis_opt<S: serde::Serializer>(
    t: &Option<Timestamp>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => millis(t, s),
        None => s.serialize_none(),
    }
}

/// The statuses an action applies to; a filter status outside them is refused.
fn selection(
    workspace_id: &str,
    action: Action,
    f: &Filter,
    until: Option<Timestamp>,
) -> Result<RunSelection> {
    let allowed: &[RunStatus] = match action {
        Action::Retry => &[RunStatus::Failed],
        Action::Cancel => &[
            RunStatus::Pending,
            RunStatus::Running,
            RunStatus::Waiting,
            RunStatus::Paused,
        ],
    };
    let statuses = match f.status {
        None => allowed.to_vec(),
        Some(s) if allowed.contains(&s) => vec![s],
        Some(s) => {
            let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            return Err(EngineError::validation(
                format!(
                    "filter.status: {} applies to {} runs, not {}",
                    action.as_str(),
                    names.join(", "),
                    s.as_str()
                ),
                json!({"field": "filter.status"}),
            ));
        }
    };
    let to = match (f.to, until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(RunSelection {
        workspace_id: workspace_id.to_string(),
        statuses,
        definition: f.definition_id.clone(),
        from: f.from,
        to,
    })
}

/// How many runs the action would act on now (a dry run).
pub async fn count(engine: &Engine, workspace_id: &str, action: Action, f: &Filter) -> Result<u64> {
    let sel = selection(workspace_id, action, f, None)?;
    let store = engine.store().clone();
    Ok(blocking(move || store.count_runs(&sel)).await??)
}

/// Store a new operation and start acting on it.
pub async fn start(
    engine: &Engine,
    workspace_id: &str,
    action: Action,
    filter: Filter,
) -> Result<Operation> {
    let now = engine.clock().now();
    // The bound is strict and in microseconds: a run created in this very microsecond
    // is in, one created after is not.
    let until = now
        .checked_add(jiff::SignedDuration::from_micros(1))
        .unwrap_or(now);
    let sel = selection(workspace_id, action, &filter, Some(until))?;
    let store = engine.store().clone();
    let total = blocking(move || store.count_runs(&sel)).await??;
    let op = Operation {
        id: crate::model::new_id(ID_PREFIX),
        action,
        filter,
        status: Status::Running,
        total,
        processed: 0,
        succeeded: 0,
        skipped: 0,
        failed: 0,
        errors: Vec::new(),
        until,
        cursor: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    save(engine, workspace_id, &op).await?;
    spawn(engine.clone(), workspace_id.to_string(), op.clone());
    Ok(op)
}

/// An operation of this workspace (404 for another's).
pub async fn get(engine: &Engine, workspace_id: &str, id: &str) -> Result<Operation> {
    let not_found = || EngineError::NotFound(format!("bulk operation `{id}` not found"));
    if !crate::model::is_id(id, ID_PREFIX) {
        return Err(not_found());
    }
    let store = engine.store().clone();
    let key = id.to_string();
    match blocking(move || store.bulk(&key)).await?? {
        Some(r) if r.workspace_id == workspace_id => decode(&r),
        _ => Err(not_found()),
    }
}

/// Go on with the operations a stopped server left unfinished.
pub async fn resume(engine: &Engine) -> Result<usize> {
    let store = engine.store().clone();
    let rows = blocking(move || store.unfinished_bulks()).await??;
    let n = rows.len();
    for r in rows {
        match decode(&r) {
            Ok(op) => spawn(engine.clone(), r.workspace_id.clone(), op),
            Err(e) => tracing::error!("cannot resume bulk operation {}: {e}", r.id),
        }
    }
    Ok(n)
}

fn decode(r: &BulkRecord) -> Result<Operation> {
    serde_json::from_value(r.state.clone())
        .map_err(|e| EngineError::Internal(format!("bulk operation {} is unreadable: {e}", r.id)))
}

async fn save(engine: &Engine, workspace_id: &str, op: &Operation) -> Result<()> {
    let rec = BulkRecord {
        id: op.id.clone(),
        workspace_id: workspace_id.to_string(),
        finished: op.status == Status::Completed,
        state: serde_json::to_value(op).map_err(|e| EngineError::Internal(e.to_string()))?,
    };
    let store = engine.store().clone();
    blocking(move || store.put_bulk(&rec)).await??;
    Ok(())
}

fn spawn(engine: Engine, workspace_id: String, op: Operation) {
    tokio::spawn(async move {
        let id = op.id.clone();
        if let Err(e) = work(&engine, &workspace_id, op).await {
            // The row keeps its cursor: the next start goes on from there.
            tracing::error!("bulk operation {id} stopped: {e}");
        }
    });
}

/// What one action on one run came to.
enum Done {
    Succeeded,
    Skipped,
    Failed(String),
    /// The store refuses commits: try the batch again later.
    Again,
}

async fn act(
    engine: &Engine,
    workspace_id: &str,
    action: Action,
    run_id: &str,
    until: Timestamp,
) -> Done {
    // A retry applies to runs that were FAILED when the operation started. A run that failed
    // again since (this operation retried it in a batch a crash cut off before its cursor
    // was saved, or someone retried it meanwhile) answers no 409, being FAILED: acting on it
    // would retry it twice.
    if action == Action::Retry {
        match engine.run(workspace_id, run_id).await {
            Ok(r) if r.finished_at.is_some_and(|f| f >= until) => return Done::Skipped,
            Ok(_) => {}
            Err(EngineError::NotFound(_)) => return Done::Skipped,
            Err(
                EngineError::Unavailable(_)
                | EngineError::HeldElsewhere(_)
                | EngineError::ShuttingDown,
            ) => return Done::Again,
            Err(e) => return Done::Failed(engine.secrets().redact_str(&e.to_string())),
        }
    }
    match action.on(engine, workspace_id, run_id, None).await {
        Ok(_) => Done::Succeeded,
        Err(EngineError::Conflict(_) | EngineError::NotFound(_)) => Done::Skipped,
        Err(
            EngineError::Unavailable(_) | EngineError::HeldElsewhere(_) | EngineError::ShuttingDown,
        ) => Done::Again,
        Err(e) => Done::Failed(engine.secrets().redact_str(&e.to_string())),
    }
}

async fn work(engine: &Engine, workspace_id: &str, mut op: Operation) -> Result<()> {
    let sel = selection(workspace_id, op.action, &op.filter, Some(op.until))?;
    let mut wait = Duration::from_millis(100);
    while op.status == Status::Running {
        let (store, s, after) = (engine.store().clone(), sel.clone(), op.cursor.clone());
        let page = blocking(move || store.select_runs(&s, after.as_ref(), BATCH)).await??;
        let Some(last) = page.last().cloned() else {
            // Runs counted at the start that no batch selected had left the action's states
            // before their batch came (cancelled or retried meanwhile, or acted on by a batch
            // a crash cut off before its cursor was saved): they are skipped, so the counts
            // add up to the total.
            op.skipped += op.total.saturating_sub(op.processed);
            op.processed = op.succeeded + op.skipped + op.failed;
            op.status = Status::Completed;
            op.finished_at = Some(engine.clock().now());
            op.updated_at = engine.clock().now();
            save(engine, workspace_id, &op).await?;
            return Ok(());
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (_, run_id)) in page.iter().enumerate() {
            let (e, ws, id, action) = (
                engine.clone(),
                workspace_id.to_string(),
                run_id.clone(),
                op.action,
            );
            let until = op.until;
            tasks.spawn(async move { (i, id.clone(), act(&e, &ws, action, &id, until).await) });
        }
        let mut results = Vec::with_capacity(page.len());
        while let Some(j) = tasks.join_next().await {
            if let Ok(r) = j {
                results.push(r);
            }
        }
        if results.iter().any(|(_, _, d)| matches!(d, Done::Again)) || results.len() < page.len() {
            // Nothing is counted: the batch runs again (runs already done answer 409).
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            continue;
        }
        wait = Duration::from_millis(100);
        let m = engine.metrics();
        for (_, run_id, d) in results {
            let outcome = match d {
                Done::Succeeded => {
                    op.succeeded += 1;
                    "done"
                }
                Done::Skipped => {
                    op.skipped += 1;
                    "skipped"
                }
                Done::Failed(message) => {
                    op.failed += 1;
                    if op.errors.len() < ERRORS_KEPT {
                        op.errors.push(json!({"runId": run_id, "message": message}));
                    }
                    "failed"
                }
                Done::Again => "again",
            };
            Metrics::inc(
                &m.bulk_runs,
                vec![
                    ("action", op.action.as_str().into()),
                    ("outcome", outcome.into()),
                ],
            );
        }
        op.processed = op.succeeded + op.skipped + op.failed;
        // Runs selected after the count (none, with the time bound, unless clocks step).
        op.total = op.total.max(op.processed);
        op.cursor = Some(last);
        op.updated_at = engine.clock().now();
        save(engine, workspace_id, &op).await?;
    }
    Ok(())
}
