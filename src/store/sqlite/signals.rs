//! Correlated signals and the rate window of run starts.
//!
//! Correlated signals: the waiting steps a signal reaches and the signals kept for steps
//! not started yet. Both reads go through partial indexes on (workspace, signal type,
//! correlation), so routing costs the same with 10 or 100,000 waiting runs.

use jiff::Timestamp;
use rusqlite::params;

use super::rows::HOOK_COLUMNS;
use super::{SqliteStore, hook_from_row, json_text, micros, ts};
use crate::store::{BufferedSignal, HookRecord, Result, SignalDelivery};

pub(super) fn hooks_by_correlation(
    store: &SqliteStore,
    workspace_id: &str,
    signal_type: &str,
    correlation: &str,
) -> Result<Vec<HookRecord>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {HOOK_COLUMNS} FROM hooks WHERE workspace_id = ?1 AND signal_type = ?2 \
             AND correlation = ?3 AND status = 'pending' AND correlation IS NOT NULL \
             ORDER BY created_at"
        ))?;
        stmt.query_map(
            params![workspace_id, signal_type, correlation],
            hook_from_row,
        )?
        .collect()
    })
}

pub(super) fn buffered_signals(
    store: &SqliteStore,
    workspace_id: &str,
    signal_type: &str,
    correlation: &str,
    now: Timestamp,
) -> Result<Vec<BufferedSignal>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT id, workspace_id, signal_type, correlation, payload, run_id, received_at, \
             expires_at, via FROM buffered_signals WHERE workspace_id = ?1 AND signal_type = ?2 \
             AND correlation = ?3 AND consumed_at IS NULL AND expires_at > ?4 ORDER BY received_at",
        )?;
        stmt.query_map(
            params![workspace_id, signal_type, correlation, micros(now)],
            |r| {
                let payload: String = r.get(4)?;
                Ok(BufferedSignal {
                    id: r.get(0)?,
                    workspace_id: r.get(1)?,
                    signal_type: r.get(2)?,
                    correlation: r.get(3)?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| super::conversion(format!("buffered payload: {e}")))?,
                    run_id: r.get(5)?,
                    received_at: ts(r.get(6)?),
                    expires_at: ts(r.get(7)?),
                    via: r.get(8)?,
                })
            },
        )?
        .collect()
    })
}

/// Record a handled delivery; expired ones go first, so the table holds only the window.
pub(super) fn put_delivery(
    tx: &rusqlite::Transaction<'_>,
    d: &SignalDelivery,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM signal_deliveries WHERE expires_at <= ?1")?
        .execute(params![micros(d.received_at)])?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO signal_deliveries (workspace_id, key, outcome, received_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        d.workspace_id,
        d.key,
        json_text(&d.outcome),
        micros(d.received_at),
        micros(d.expires_at)
    ])?;
    Ok(())
}

pub(super) fn delivery(
    store: &SqliteStore,
    workspace_id: &str,
    key: &str,
    now: Timestamp,
) -> Result<Option<SignalDelivery>> {
    use rusqlite::OptionalExtension;
    store.read(|c| {
        c.prepare_cached(
            "SELECT workspace_id, key, outcome, received_at, expires_at FROM signal_deliveries \
             WHERE workspace_id = ?1 AND key = ?2 AND expires_at > ?3",
        )?
        .query_row(params![workspace_id, key, micros(now)], |r| {
            let outcome: String = r.get(2)?;
            Ok(SignalDelivery {
                workspace_id: r.get(0)?,
                key: r.get(1)?,
                outcome: serde_json::from_str(&outcome)
                    .map_err(|e| super::conversion(format!("signal delivery: {e}")))?,
                received_at: ts(r.get(3)?),
                expires_at: ts(r.get(4)?),
            })
        })
        .optional()
    })
}

/// Expired buffered signals go with the history sweep.
pub(super) fn delete_expired(
    tx: &rusqlite::Transaction<'_>,
    before: Timestamp,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM buffered_signals WHERE expires_at < ?1")?
        .execute(params![micros(before)])?;
    Ok(())
}

pub(super) fn run_starts_since(
    store: &SqliteStore,
    workspace_id: &str,
    slug: &str,
    since: Timestamp,
) -> Result<Vec<Timestamp>> {
    store.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT started_at FROM runs WHERE workspace_id = ?1 AND definition_slug = ?2 \
             AND started_at >= ?3 ORDER BY started_at",
        )?;
        stmt.query_map(params![workspace_id, slug, micros(since)], |r| {
            Ok(ts(r.get(0)?))
        })?
        .collect()
    })
}
