//! Rows to records (the column lists are the SQLite store's, in the same order).

use serde_json::Value;
use tokio_postgres::Row;

use super::{pg_err, ts};
use crate::store::{
    AlertRecord, AlertStatus, ApiKeyInfo, BufferedSignal, BulkRecord, DefinitionRecord,
    EventRecord, HookKind, HookRecord, HookStatus, Result, RunRecord, SignalRecord, StepRecord,
    StoreError, TimerKind, TimerRecord, UiSession,
};

pub(super) const RUN_COLUMNS: &str = "id, workspace_id, definition_id, definition_slug, status, input, output, error, \
    idempotency_key, current_step_index, attempt, parent_run_id, parent_step_id, trigger, pending_action, \
    created_at, updated_at, started_at, finished_at";
pub(super) const STEP_COLUMNS: &str = "run_id, step_id, attempt, step_index, status, input, output, error, usage, \
     meta, started_at, finished_at, run_attempt";
pub(super) const DEFINITION_COLUMNS: &str =
    "version_id, workspace_id, slug, version, label, hash, source, created_at";
pub(super) const HOOK_COLUMNS: &str = "token, workspace_id, run_id, step_id, kind, status, created_at, resumed_at, \
     signal_type, correlation";
pub(super) const API_KEY_COLUMNS: &str = "hash, workspace_id, prefix, name, created_at, revoked_at";
pub(super) const ALERT_COLUMNS: &str = "id, run_id, workspace_id, kind, target, body, status, attempts, next_at, last_error, created_at, finished_at";
pub(super) const BUFFERED_COLUMNS: &str =
    "id, workspace_id, signal_type, correlation, payload, run_id, received_at, expires_at, via";

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(pg_err)
}

fn time(r: &Row, i: usize) -> Result<jiff::Timestamp> {
    Ok(ts(get(r, i)?))
}

fn opt_time(r: &Row, i: usize) -> Result<Option<jiff::Timestamp>> {
    Ok(get::<Option<i64>>(r, i)?.map(ts))
}

fn opt_json(r: &Row, i: usize) -> Result<Option<Value>> {
    get::<Option<String>>(r, i)?
        .map(|s| serde_json::from_str(&s).map_err(|e| corrupt(format!("stored JSON: {e}"))))
        .transpose()
}

fn json(r: &Row, i: usize) -> Result<Value> {
    Ok(opt_json(r, i)?.unwrap_or(Value::Null))
}

fn parsed<T: std::str::FromStr>(r: &Row, i: usize, what: &str) -> Result<T> {
    let s: String = get(r, i)?;
    s.parse().map_err(|_| corrupt(format!("{what} `{s}`")))
}

pub(super) fn run(r: &Row) -> Result<RunRecord> {
    Ok(RunRecord {
        id: get(r, 0)?,
        workspace_id: get(r, 1)?,
        definition_id: get(r, 2)?,
        definition_slug: get(r, 3)?,
        status: parsed(r, 4, "run status")?,
        input: json(r, 5)?,
        output: opt_json(r, 6)?,
        error: opt_json(r, 7)?,
        idempotency_key: get(r, 8)?,
        current_step_index: get(r, 9)?,
        attempt: get(r, 10)?,
        parent_run_id: get(r, 11)?,
        parent_step_id: get(r, 12)?,
        trigger: json(r, 13)?,
        pending_action: opt_json(r, 14)?,
        created_at: time(r, 15)?,
        updated_at: time(r, 16)?,
        started_at: opt_time(r, 17)?,
        finished_at: opt_time(r, 18)?,
    })
}

pub(super) fn step(r: &Row) -> Result<StepRecord> {
    Ok(StepRecord {
        run_id: get(r, 0)?,
        step_id: get(r, 1)?,
        attempt: get(r, 2)?,
        step_index: get(r, 3)?,
        status: parsed(r, 4, "step status")?,
        input: opt_json(r, 5)?,
        output: opt_json(r, 6)?,
        error: opt_json(r, 7)?,
        usage: opt_json(r, 8)?,
        meta: opt_json(r, 9)?,
        started_at: opt_time(r, 10)?,
        finished_at: opt_time(r, 11)?,
        run_attempt: get(r, 12)?,
    })
}

pub(super) fn definition(r: &Row) -> Result<DefinitionRecord> {
    Ok(DefinitionRecord {
        version_id: get(r, 0)?,
        workspace_id: get(r, 1)?,
        slug: get(r, 2)?,
        version: get(r, 3)?,
        label: get(r, 4)?,
        hash: get(r, 5)?,
        source: get(r, 6)?,
        created_at: time(r, 7)?,
    })
}

pub(super) fn hook(r: &Row) -> Result<HookRecord> {
    let kind: String = get(r, 4)?;
    let status: String = get(r, 5)?;
    Ok(HookRecord {
        token: get(r, 0)?,
        workspace_id: get(r, 1)?,
        run_id: get(r, 2)?,
        step_id: get(r, 3)?,
        kind: HookKind::parse(&kind).ok_or_else(|| corrupt(format!("hook kind `{kind}`")))?,
        status: HookStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("hook status `{status}`")))?,
        created_at: time(r, 6)?,
        resumed_at: opt_time(r, 7)?,
        signal_type: get(r, 8)?,
        correlation: get(r, 9)?,
    })
}

pub(super) fn api_key(r: &Row) -> Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        hash: get(r, 0)?,
        workspace_id: get(r, 1)?,
        prefix: get(r, 2)?,
        name: get(r, 3)?,
        created_at: time(r, 4)?,
        revoked_at: opt_time(r, 5)?,
    })
}

/// `run_id, at, kind, step_id, data`.
pub(super) fn event(r: &Row) -> Result<EventRecord> {
    let kind: String = get(r, 2)?;
    Ok(EventRecord {
        run_id: get(r, 0)?,
        at: time(r, 1)?,
        kind: crate::model::EventKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("event kind `{kind}`")))?,
        step_id: get(r, 3)?,
        data: json(r, 4)?,
    })
}

/// `run_id, step_id, signal_type, payload, received_at, via`.
pub(super) fn signal(r: &Row) -> Result<SignalRecord> {
    Ok(SignalRecord {
        run_id: get(r, 0)?,
        step_id: get(r, 1)?,
        signal_type: get(r, 2)?,
        payload: json(r, 3)?,
        received_at: time(r, 4)?,
        via: get(r, 5)?,
    })
}

/// `run_id, step_id, kind, due_at`.
pub(super) fn timer(r: &Row) -> Result<TimerRecord> {
    let kind: String = get(r, 2)?;
    Ok(TimerRecord {
        run_id: get(r, 0)?,
        step_id: get(r, 1)?,
        kind: TimerKind::parse(&kind).ok_or_else(|| corrupt(format!("timer kind `{kind}`")))?,
        due_at: time(r, 3)?,
    })
}

pub(super) fn alert(r: &Row) -> Result<AlertRecord> {
    let status: String = get(r, 6)?;
    Ok(AlertRecord {
        id: get(r, 0)?,
        run_id: get(r, 1)?,
        workspace_id: get(r, 2)?,
        kind: get(r, 3)?,
        target: json(r, 4)?,
        body: json(r, 5)?,
        status: AlertStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("alert status `{status}`")))?,
        attempts: get(r, 7)?,
        next_at: time(r, 8)?,
        last_error: get(r, 9)?,
        created_at: time(r, 10)?,
        finished_at: opt_time(r, 11)?,
    })
}

pub(super) fn buffered(r: &Row) -> Result<BufferedSignal> {
    Ok(BufferedSignal {
        id: get(r, 0)?,
        workspace_id: get(r, 1)?,
        signal_type: get(r, 2)?,
        correlation: get(r, 3)?,
        payload: json(r, 4)?,
        run_id: get(r, 5)?,
        received_at: time(r, 6)?,
        expires_at: time(r, 7)?,
        via: get(r, 8)?,
    })
}

/// `id, workspace_id, finished, state`.
pub(super) fn bulk(r: &Row) -> Result<BulkRecord> {
    Ok(BulkRecord {
        id: get(r, 0)?,
        workspace_id: get(r, 1)?,
        finished: get(r, 2)?,
        state: json(r, 3)?,
    })
}

/// `hash, key_hash, workspace_id, actor, created_at, expires_at`.
pub(super) fn session(r: &Row) -> Result<UiSession> {
    Ok(UiSession {
        hash: get(r, 0)?,
        key_hash: get(r, 1)?,
        workspace_id: get(r, 2)?,
        actor: get(r, 3)?,
        created_at: time(r, 4)?,
        expires_at: time(r, 5)?,
    })
}
