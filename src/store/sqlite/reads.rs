//! Reads: definitions, runs, steps, events, signals, timers, hooks, trigger state and keys,
//! each through a pooled reader connection.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::rows::{
    API_KEY_COLUMNS, DEFINITION_COLUMNS, HOOK_COLUMNS, RUN_COLUMNS, STEP_COLUMNS, api_key_from_row,
    definition_from_row, hook_from_row, run_from_row, step_from_row,
};
use super::{SqliteStore, conversion, micros, parse_json, ts};
use crate::model::DEFINITION_PREFIX;
use crate::store::{
    DefinitionRecord, EventRecord, HookRecord, Result, RunRecord, SignalRecord, StepRecord,
    TimerKind, TimerRecord,
};

pub(super) fn definition(
    store: &SqliteStore,
    workspace_id: &str,
    id: &str,
) -> Result<Option<DefinitionRecord>> {
    store.read(|c| {
        if id.starts_with(DEFINITION_PREFIX) {
            c.query_row(
                &format!("SELECT {DEFINITION_COLUMNS} FROM definitions WHERE workspace_id = ?1 AND version_id = ?2"),
                params![workspace_id, id],
                definition_from_row,
            )
            .optional()
        } else {
            c.query_row(
                &format!(
                    "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE workspace_id = ?1 AND slug = ?2 \
                     ORDER BY version DESC LIMIT 1"
                ),
                params![workspace_id, id],
                definition_from_row,
            )
            .optional()
        }
    })
}

pub(super) fn definition_versions(
    store: &SqliteStore,
    workspace_id: &str,
    slug: &str,
) -> Result<Vec<DefinitionRecord>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE workspace_id = ?1 AND slug = ?2 ORDER BY version"
        ))?;
        stmt.query_map(params![workspace_id, slug], definition_from_row)?.collect()
    })
}

pub(super) fn list_definitions(
    store: &SqliteStore,
    workspace_id: &str,
) -> Result<Vec<DefinitionRecord>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {DEFINITION_COLUMNS} FROM definitions d WHERE workspace_id = ?1 AND version = \
             (SELECT MAX(version) FROM definitions WHERE workspace_id = d.workspace_id AND slug = d.slug) ORDER BY slug"
        ))?;
        stmt.query_map(params![workspace_id], definition_from_row)?.collect()
    })
}

pub(super) fn run(store: &SqliteStore, id: &str) -> Result<Option<RunRecord>> {
    store.read(|c| {
        c.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?
            .query_row(params![id], run_from_row)
            .optional()
    })
}

pub(super) fn run_by_key(
    store: &SqliteStore,
    workspace_id: &str,
    key: &str,
) -> Result<Option<RunRecord>> {
    store.read(|c| {
        c.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE workspace_id = ?1 AND idempotency_key = ?2"
        ))?
        .query_row(params![workspace_id, key], run_from_row)
        .optional()
    })
}

pub(super) fn steps(store: &SqliteStore, run_id: &str) -> Result<Vec<StepRecord>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {STEP_COLUMNS} FROM step_executions WHERE run_id = ?1 ORDER BY step_index, attempt"
        ))?;
        stmt.query_map(params![run_id], step_from_row)?.collect()
    })
}

pub(super) fn events(store: &SqliteStore, run_id: &str) -> Result<Vec<EventRecord>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT run_id, at, kind, step_id, data FROM events WHERE run_id = ?1 ORDER BY id",
        )?;
        stmt.query_map(params![run_id], |r| {
            Ok(EventRecord {
                run_id: r.get(0)?,
                at: ts(r.get(1)?),
                kind: {
                    let k: String = r.get(2)?;
                    crate::model::EventKind::parse(&k)
                        .ok_or_else(|| conversion(format!("event kind `{k}`")))?
                },
                step_id: r.get(3)?,
                data: parse_json(r.get(4)?)?.unwrap_or(Value::Null),
            })
        })?
        .collect()
    })
}

pub(super) fn signals(store: &SqliteStore, run_id: &str) -> Result<Vec<SignalRecord>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT run_id, step_id, signal_type, payload, received_at, via FROM signals WHERE run_id = ?1 ORDER BY id",
        )?;
        stmt.query_map(params![run_id], |r| {
            Ok(SignalRecord {
                run_id: r.get(0)?,
                step_id: r.get(1)?,
                signal_type: r.get(2)?,
                payload: parse_json(r.get(3)?)?.unwrap_or(Value::Null),
                received_at: ts(r.get(4)?),
                via: r.get(5)?,
            })
        })?
        .collect()
    })
}

pub(super) fn child_runs(store: &SqliteStore, parent_run_id: &str) -> Result<Vec<RunRecord>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = ?1 ORDER BY created_at"
        ))?;
        stmt.query_map(params![parent_run_id], run_from_row)?
            .collect()
    })
}

pub(super) fn timers_due(
    store: &SqliteStore,
    before: Timestamp,
    limit: usize,
) -> Result<Vec<TimerRecord>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT run_id, step_id, kind, due_at FROM timers WHERE due_at <= ?1 ORDER BY due_at LIMIT ?2",
        )?;
        stmt.query_map(params![micros(before), i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            let kind: String = r.get(2)?;
            Ok(TimerRecord {
                run_id: r.get(0)?,
                step_id: r.get(1)?,
                kind: TimerKind::parse(&kind).ok_or_else(|| conversion(format!("timer kind `{kind}`")))?,
                due_at: ts(r.get(3)?),
            })
        })?
        .collect()
    })
}

pub(super) fn hook(store: &SqliteStore, token: &str) -> Result<Option<HookRecord>> {
    store.read(|c| {
        c.prepare_cached(&format!(
            "SELECT {HOOK_COLUMNS} FROM hooks WHERE token = ?1"
        ))?
        .query_row(params![token], hook_from_row)
        .optional()
    })
}

pub(super) fn timer(
    store: &SqliteStore,
    run_id: &str,
    step_id: &str,
    kind: TimerKind,
) -> Result<Option<TimerRecord>> {
    store.read(|c| {
        c.prepare_cached(
            "SELECT due_at FROM timers WHERE run_id = ?1 AND step_id = ?2 AND kind = ?3",
        )?
        .query_row(params![run_id, step_id, kind.as_str()], |r| {
            Ok(TimerRecord {
                run_id: run_id.to_string(),
                step_id: step_id.to_string(),
                kind,
                due_at: ts(r.get(0)?),
            })
        })
        .optional()
    })
}

pub(super) fn trigger_state(
    store: &SqliteStore,
    workspace_id: &str,
    name: &str,
) -> Result<Option<Value>> {
    store.read(|c| {
        let text: Option<String> = c
            .query_row(
                "SELECT state FROM trigger_state WHERE workspace_id = ?1 AND name = ?2",
                params![workspace_id, name],
                |r| r.get(0),
            )
            .optional()?;
        parse_json(text)
    })
}

pub(super) fn hooks_for_run(store: &SqliteStore, run_id: &str) -> Result<Vec<HookRecord>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {HOOK_COLUMNS} FROM hooks WHERE run_id = ?1 ORDER BY created_at"
        ))?;
        stmt.query_map(params![run_id], hook_from_row)?.collect()
    })
}

pub(super) fn api_key_info(
    store: &SqliteStore,
    hash: &str,
) -> Result<Option<crate::store::ApiKeyInfo>> {
    store.read(|c| {
        c.prepare_cached(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = ?1"
        ))?
        .query_row(params![hash], api_key_from_row)
        .optional()
    })
}

pub(super) fn api_keys(store: &SqliteStore) -> Result<Vec<crate::store::ApiKeyInfo>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, prefix"
        ))?;
        stmt.query_map([], api_key_from_row)?.collect()
    })
}
