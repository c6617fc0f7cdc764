//! Rows to records: the column lists and the conversions of each table's rows.

use rusqlite::Row;
use serde_json::Value;

use super::{conversion, parse_json, ts};
use crate::store::{DefinitionRecord, HookKind, HookRecord, HookStatus, RunRecord, StepRecord};

pub(super) const RUN_COLUMNS: &str = "id, workspace_id, definition_id, definition_slug, status, input, output, error, \
    idempotency_key, current_step_index, attempt, parent_run_id, parent_step_id, trigger, pending_action, \
    created_at, updated_at, started_at, finished_at";

pub(super) fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let status: String = r.get(4)?;
    Ok(RunRecord {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        definition_id: r.get(2)?,
        definition_slug: r.get(3)?,
        status: status.parse().map_err(conversion)?,
        input: parse_json(r.get(5)?)?.unwrap_or(Value::Null),
        output: parse_json(r.get(6)?)?,
        error: parse_json(r.get(7)?)?,
        idempotency_key: r.get(8)?,
        current_step_index: r.get(9)?,
        attempt: r.get(10)?,
        parent_run_id: r.get(11)?,
        parent_step_id: r.get(12)?,
        trigger: parse_json(r.get(13)?)?.unwrap_or(Value::Null),
        pending_action: parse_json(r.get(14)?)?,
        created_at: ts(r.get(15)?),
        updated_at: ts(r.get(16)?),
        started_at: r.get::<_, Option<i64>>(17)?.map(ts),
        finished_at: r.get::<_, Option<i64>>(18)?.map(ts),
    })
}

pub(super) fn step_from_row(r: &Row<'_>) -> rusqlite::Result<StepRecord> {
    let status: String = r.get(4)?;
    Ok(StepRecord {
        run_id: r.get(0)?,
        step_id: r.get(1)?,
        attempt: r.get(2)?,
        step_index: r.get(3)?,
        status: status.parse().map_err(conversion)?,
        input: parse_json(r.get(5)?)?,
        output: parse_json(r.get(6)?)?,
        error: parse_json(r.get(7)?)?,
        usage: parse_json(r.get(8)?)?,
        meta: parse_json(r.get(9)?)?,
        started_at: r.get::<_, Option<i64>>(10)?.map(ts),
        finished_at: r.get::<_, Option<i64>>(11)?.map(ts),
        run_attempt: r.get(12)?,
    })
}

pub(super) fn definition_from_row(r: &Row<'_>) -> rusqlite::Result<DefinitionRecord> {
    Ok(DefinitionRecord {
        version_id: r.get(0)?,
        workspace_id: r.get(1)?,
        slug: r.get(2)?,
        version: r.get(3)?,
        label: r.get(4)?,
        hash: r.get(5)?,
        source: r.get(6)?,
        created_at: ts(r.get(7)?),
    })
}

pub(super) fn hook_from_row(r: &Row<'_>) -> rusqlite::Result<HookRecord> {
    Ok(HookRecord {
        token: r.get(0)?,
        workspace_id: r.get(1)?,
        run_id: r.get(2)?,
        step_id: r.get(3)?,
        kind: {
            let k: String = r.get(4)?;
            HookKind::parse(&k).ok_or_else(|| conversion(format!("hook kind `{k}`")))?
        },
        status: {
            let s: String = r.get(5)?;
            HookStatus::parse(&s).ok_or_else(|| conversion(format!("hook status `{s}`")))?
        },
        created_at: ts(r.get(6)?),
        resumed_at: r.get::<_, Option<i64>>(7)?.map(ts),
        signal_type: r.get(8)?,
        correlation: r.get(9)?,
    })
}

/// In the order `step_from_row` reads them.
pub(super) const STEP_COLUMNS: &str = "run_id, step_id, attempt, step_index, status, input, output, error, usage, \
     meta, started_at, finished_at, run_attempt";
pub(super) const DEFINITION_COLUMNS: &str =
    "version_id, workspace_id, slug, version, label, hash, source, created_at";
pub(super) const HOOK_COLUMNS: &str = "token, workspace_id, run_id, step_id, kind, status, created_at, resumed_at, \
     signal_type, correlation";

pub(super) const API_KEY_COLUMNS: &str = "hash, workspace_id, prefix, name, created_at, revoked_at";

pub(super) fn api_key_from_row(r: &Row<'_>) -> rusqlite::Result<crate::store::ApiKeyInfo> {
    Ok(crate::store::ApiKeyInfo {
        hash: r.get(0)?,
        workspace_id: r.get(1)?,
        prefix: r.get(2)?,
        name: r.get(3)?,
        created_at: ts(r.get(4)?),
        revoked_at: r.get::<_, Option<i64>>(5)?.map(ts),
    })
}
