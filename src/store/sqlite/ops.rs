//! Operations: `/metrics` gauges, `/readyz`, bulk operations (their selections of runs
//! and their progress rows), failure alerts, and retention's deletes.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::{SqliteStore, micros, parse_json, schema, ts};
use crate::metrics::StoredGauges;
use crate::model::DEFINITION_PREFIX;
use crate::store::{AlertRecord, AlertStatus, BulkRecord, Result, RunSelection, StoreError};

impl SqliteStore {
    pub(super) fn read_gauges(&self, now: Timestamp) -> Result<StoredGauges> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT COALESCE(json_extract(pending_action, '$.type'), 'unknown'), COUNT(*)
                 FROM runs WHERE status IN ('WAITING', 'PAUSED') GROUP BY 1 ORDER BY 1",
            )?;
            let waiting_by_kind = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let due: i64 = c.query_row(
                "SELECT COUNT(*) FROM timers WHERE due_at <= ?1",
                params![micros(now)],
                |r| r.get(0),
            )?;
            Ok(StoredGauges {
                waiting_by_kind,
                timers_due: u64::try_from(due).unwrap_or(0),
            })
        })
    }

    pub(super) fn check_ready(&self) -> Result<()> {
        let current = self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM runs WHERE id = ''", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(schema::current(c))
        })??;
        if current {
            Ok(())
        } else {
            Err(StoreError::Database(
                "the database schema is not the one this build expects (migrations pending or newer)".into(),
            ))
        }
    }
}

/// `WHERE` text and arguments of a selection.
fn selection(s: &RunSelection) -> (String, Vec<rusqlite::types::Value>) {
    let mut args: Vec<rusqlite::types::Value> = vec![s.workspace_id.clone().into()];
    let statuses = s
        .statuses
        .iter()
        .map(|st| {
            args.push(st.as_str().to_string().into());
            format!("?{}", args.len())
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut filter = format!("workspace_id = ?1 AND status IN ({statuses})");
    if let Some(d) = &s.definition {
        args.push(d.clone().into());
        let column = if d.starts_with(DEFINITION_PREFIX) {
            "definition_id"
        } else {
            "definition_slug"
        };
        filter.push_str(&format!(" AND {column} = ?{}", args.len()));
    }
    if let Some(from) = s.from {
        args.push(micros(from).into());
        filter.push_str(&format!(" AND created_at >= ?{}", args.len()));
    }
    if let Some(to) = s.to {
        args.push(micros(to).into());
        filter.push_str(&format!(" AND created_at < ?{}", args.len()));
    }
    (filter, args)
}

fn bulk_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BulkRecord> {
    Ok(BulkRecord {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        finished: r.get::<_, i64>(2)? != 0,
        state: parse_json(Some(r.get(3)?))?.unwrap_or(Value::Null),
    })
}

impl SqliteStore {
    pub(super) fn count_selected(&self, s: &RunSelection) -> Result<u64> {
        if s.statuses.is_empty() {
            return Ok(0);
        }
        let (filter, args) = selection(s);
        self.read(|c| {
            c.query_row(
                &format!("SELECT COUNT(*) FROM runs WHERE {filter}"),
                rusqlite::params_from_iter(args.iter()),
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| u64::try_from(n).unwrap_or(0))
    }

    pub(super) fn select(
        &self,
        s: &RunSelection,
        after: Option<&(Timestamp, String)>,
        limit: usize,
    ) -> Result<Vec<(Timestamp, String)>> {
        if s.statuses.is_empty() {
            return Ok(Vec::new());
        }
        let (mut filter, mut args) = selection(s);
        if let Some((at, id)) = after {
            args.push(micros(*at).into());
            let n = args.len();
            args.push(id.clone().into());
            filter.push_str(&format!(
                " AND (created_at > ?{n} OR (created_at = ?{n} AND id > ?{}))",
                n + 1
            ));
        }
        args.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let n = args.len();
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT created_at, id FROM runs WHERE {filter} ORDER BY created_at, id LIMIT ?{n}"
            ))?;
            stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((ts(r.get(0)?), r.get(1)?))
            })?
            .collect()
        })
    }

    pub(super) fn write_bulk(&self, op: &BulkRecord) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT OR REPLACE INTO bulk_operations (id, workspace_id, finished, state) VALUES (?1, ?2, ?3, ?4)",
                params![op.id, op.workspace_id, i64::from(op.finished), op.state.to_string()],
            )
            .map(|_| ())
        })
    }

    pub(super) fn read_bulk(&self, id: &str) -> Result<Option<BulkRecord>> {
        self.read(|c| {
            c.query_row(
                "SELECT id, workspace_id, finished, state FROM bulk_operations WHERE id = ?1",
                params![id],
                bulk_from_row,
            )
            .optional()
        })
    }

    pub(super) fn read_unfinished_bulks(&self) -> Result<Vec<BulkRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, workspace_id, finished, state FROM bulk_operations WHERE finished = 0 ORDER BY id",
            )?;
            stmt.query_map([], bulk_from_row)?.collect()
        })
    }
}

const ALERT_COLUMNS: &str = "id, run_id, workspace_id, kind, target, body, status, attempts, next_at, last_error, created_at, finished_at";

fn alert_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRecord> {
    let status: String = r.get(6)?;
    Ok(AlertRecord {
        id: r.get(0)?,
        run_id: r.get(1)?,
        workspace_id: r.get(2)?,
        kind: r.get(3)?,
        target: parse_json(Some(r.get(4)?))?.unwrap_or(Value::Null),
        body: parse_json(Some(r.get(5)?))?.unwrap_or(Value::Null),
        status: AlertStatus::parse(&status)
            .ok_or_else(|| super::conversion(format!("alert status `{status}`")))?,
        attempts: r.get(7)?,
        next_at: ts(r.get(8)?),
        last_error: r.get(9)?,
        created_at: ts(r.get(10)?),
        finished_at: r.get::<_, Option<i64>>(11)?.map(ts),
    })
}

impl SqliteStore {
    pub(super) fn read_alerts_due(&self, now: Timestamp, limit: usize) -> Result<Vec<AlertRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE status = 'pending' AND next_at <= ?1 ORDER BY next_at LIMIT ?2"
            ))?;
            stmt.query_map(
                params![micros(now), i64::try_from(limit).unwrap_or(i64::MAX)],
                alert_from_row,
            )?
            .collect()
        })
    }

    /// Take a due alert for one attempt: its attempt counted and its next try moved to
    /// `until` in one statement, so no other process takes it meanwhile.
    pub(super) fn claim(
        &self,
        id: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<AlertRecord>> {
        self.write(|c| {
            c.prepare_cached(&format!(
                "UPDATE alerts SET attempts = attempts + 1, next_at = ?3 \
                 WHERE id = ?1 AND status = 'pending' AND next_at <= ?2 RETURNING {ALERT_COLUMNS}"
            ))?
            .query_row(params![id, micros(now), micros(until)], alert_from_row)
            .optional()
        })
    }

    pub(super) fn read_alert(&self, id: &str) -> Result<Option<AlertRecord>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"),
                params![id],
                alert_from_row,
            )
            .optional()
        })
    }
}

impl SqliteStore {
    /// Retention: finished runs before `before`, with everything recorded about them.
    pub(super) fn delete_finished(&self, before: Timestamp, limit: usize) -> Result<usize> {
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ids: Vec<String> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < ?1 \
                     AND status IN ('COMPLETED', 'FAILED', 'CANCELLED') LIMIT ?2",
                )?;
                stmt.query_map(
                    params![micros(before), i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| r.get(0),
                )?
                .collect::<rusqlite::Result<_>>()?
            };
            for id in &ids {
                for table in [
                    "step_executions",
                    "events",
                    "signals",
                    "hooks",
                    "timers",
                    "alerts",
                ] {
                    tx.prepare_cached(&format!("DELETE FROM {table} WHERE run_id = ?1"))?
                        .execute(params![id])?;
                }
                tx.prepare_cached("DELETE FROM runs WHERE id = ?1")?
                    .execute(params![id])?;
            }
            super::signals::delete_expired(&tx, before)?;
            tx.commit()?;
            Ok(ids.len())
        })
    }
}
