//! Reads for operations: `/metrics` gauges and `/readyz`.

use jiff::Timestamp;
use rusqlite::params;

use super::{SqliteStore, micros, schema};
use crate::metrics::StoredGauges;
use crate::store::{Result, StoreError};

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
