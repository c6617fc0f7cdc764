//! The SQLite store: one file, WAL, one writer connection, a small pool of readers.
//! This module is the only place that knows SQL.

mod apply;
mod ops;
mod query;
mod reads;
mod rows;
mod schema;
mod sessions;
mod signals;

use apply::apply_write;
use rows::{DEFINITION_COLUMNS, definition_from_row, hook_from_row};
use schema::migrate;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    ApiKeyRecord, BufferedSignal, DefinitionRecord, EventRecord, HistoryFilter, HistoryPage,
    HookRecord, Result, RunQuery, RunRecord, SignalRecord, StepRecord, Store, StoreError,
    TimerKind, TimerRecord, UiSession, Write,
};
use crate::model::{DEFINITION_PREFIX, RunStatus, new_id};

/// SQLite's `synchronous` setting: FULL survives power loss; NORMAL survives process crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
    /// Neither: for a throwaway store (`stepwise test`) that nobody reopens after a crash.
    Off,
}

impl std::str::FromStr for Synchronous {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            other => Err(format!(
                "`{other}` is not a synchronous mode (use full or normal)"
            )),
        }
    }
}

/// Versioned migrations; `PRAGMA user_version` records how many have been applied.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

fn ts(m: i64) -> Timestamp {
    Timestamp::from_microsecond(m).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn opt_json(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(json_text)
}

fn parse_json(s: Option<String>) -> rusqlite::Result<Option<Value>> {
    s.map(|s| {
        serde_json::from_str(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

fn conversion(msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, msg.into())
}

impl SqliteStore {
    /// Open (or create) the database file and apply pending migrations.
    pub fn open(path: &Path, sync: Synchronous) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| db_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        let writer = Self::connect(path, sync)?;
        // The writer commits large batches: a bigger page cache and less frequent WAL
        // checkpoints keep each commit short. Both stay bounded (16 MB, ~64 MB of WAL).
        writer
            .pragma_update(None, "cache_size", -16_384)
            .map_err(db_err)?;
        writer
            .pragma_update(None, "wal_autocheckpoint", 16_000)
            .map_err(db_err)?;
        writer
            .pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(db_err)?;
        writer
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(db_err)?;
        migrate(&writer)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(path: &Path, sync: Synchronous) -> Result<Connection> {
        let conn = Connection::open(path)
            .map_err(|e| db_err(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        let mode = match sync {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        };
        conn.pragma_update(None, "synchronous", mode)
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "OFF")
            .map_err(db_err)?;
        Ok(conn)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| db_err("writer lock poisoned"))?;
        f(&mut conn).map_err(db_err)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = {
            let mut pool = self
                .readers
                .lock()
                .map_err(|_| db_err("reader pool poisoned"))?;
            pool.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => Self::connect(&self.path, Synchronous::Normal)?,
        };
        let result = f(&conn).map_err(db_err);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < 16
        {
            pool.push(conn);
        }
        result
    }
}

impl Store for SqliteStore {
    fn gauges(&self, now: Timestamp) -> Result<crate::metrics::StoredGauges> {
        self.read_gauges(now)
    }

    fn ready(&self) -> Result<()> {
        self.check_ready()
    }

    fn count_runs(&self, s: &super::RunSelection) -> Result<u64> {
        self.count_selected(s)
    }

    fn select_runs(
        &self,
        s: &super::RunSelection,
        after: Option<&(Timestamp, String)>,
        limit: usize,
    ) -> Result<Vec<(Timestamp, String)>> {
        self.select(s, after, limit)
    }

    fn put_bulk(&self, op: &super::BulkRecord) -> Result<()> {
        self.write_bulk(op)
    }

    fn bulk(&self, id: &str) -> Result<Option<super::BulkRecord>> {
        self.read_bulk(id)
    }

    fn unfinished_bulks(&self) -> Result<Vec<super::BulkRecord>> {
        self.read_unfinished_bulks()
    }

    fn alerts_due(&self, now: Timestamp, limit: usize) -> Result<Vec<super::AlertRecord>> {
        self.read_alerts_due(now, limit)
    }

    fn claim_alert(
        &self,
        id: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<super::AlertRecord>> {
        self.claim(id, now, until)
    }

    fn alert(&self, id: &str) -> Result<Option<super::AlertRecord>> {
        self.read_alert(id)
    }

    fn probe(&self) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?1)",
                params![micros(Timestamp::now())],
            )
            .map(|_| ())
        })
    }

    fn commit(&self, writes: &[Write]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| db_err("writer lock poisoned"))?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        for w in writes {
            if let Err(e) = apply_write(&tx, w) {
                if let (Write::InsertRun(r), rusqlite::Error::SqliteFailure(f, _)) = (w, &e)
                    && f.code == rusqlite::ErrorCode::ConstraintViolation
                    && let Some(key) = &r.idempotency_key
                {
                    return Err(StoreError::DuplicateKey(key.clone()));
                }
                return Err(db_err(e));
            }
        }
        tx.commit().map_err(db_err)
    }

    fn put_definition(
        &self,
        workspace_id: &str,
        slug: &str,
        label: Option<&str>,
        source: &str,
        now: Timestamp,
    ) -> Result<(DefinitionRecord, bool)> {
        let hash = format!("{:x}", Sha256::digest(source.as_bytes()));
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let latest = tx
                .query_row(
                    &format!(
                        "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE workspace_id = ?1 AND slug = ?2 \
                         ORDER BY version DESC LIMIT 1"
                    ),
                    params![workspace_id, slug],
                    definition_from_row,
                )
                .optional()?;
            if let Some(latest) = &latest
                && latest.hash == hash
            {
                return Ok((latest.clone(), false));
            }
            let rec = DefinitionRecord {
                version_id: new_id(DEFINITION_PREFIX),
                workspace_id: workspace_id.to_string(),
                slug: slug.to_string(),
                version: latest.map_or(1, |l| l.version + 1),
                label: label.map(str::to_string),
                hash: hash.clone(),
                source: source.to_string(),
                created_at: ts(micros(now)),
            };
            tx.execute(
                &format!("INSERT INTO definitions ({DEFINITION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![
                    rec.version_id,
                    rec.workspace_id,
                    rec.slug,
                    rec.version,
                    rec.label,
                    rec.hash,
                    rec.source,
                    micros(rec.created_at)
                ],
            )?;
            tx.commit()?;
            Ok((rec, true))
        })
    }

    fn definition(&self, workspace_id: &str, id: &str) -> Result<Option<DefinitionRecord>> {
        reads::definition(self, workspace_id, id)
    }

    fn definition_versions(&self, workspace_id: &str, slug: &str) -> Result<Vec<DefinitionRecord>> {
        reads::definition_versions(self, workspace_id, slug)
    }

    fn list_definitions(&self, workspace_id: &str) -> Result<Vec<DefinitionRecord>> {
        reads::list_definitions(self, workspace_id)
    }

    fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        reads::run(self, id)
    }

    fn run_by_key(&self, workspace_id: &str, key: &str) -> Result<Option<RunRecord>> {
        reads::run_by_key(self, workspace_id, key)
    }

    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        reads::steps(self, run_id)
    }

    fn events(&self, run_id: &str) -> Result<Vec<EventRecord>> {
        reads::events(self, run_id)
    }

    fn signals(&self, run_id: &str) -> Result<Vec<SignalRecord>> {
        reads::signals(self, run_id)
    }

    fn list_runs(&self, q: &RunQuery) -> Result<(Vec<RunRecord>, u64)> {
        self.read(|c| query::page(c, q))
    }

    fn run_ids_with_status(&self, statuses: &[RunStatus]) -> Result<Vec<String>> {
        let list = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT id FROM runs WHERE status IN ({list}) ORDER BY created_at"
            ))?;
            stmt.query_map([], |r| r.get(0))?.collect()
        })
    }

    fn child_runs(&self, parent_run_id: &str) -> Result<Vec<RunRecord>> {
        reads::child_runs(self, parent_run_id)
    }

    fn timers_due(&self, before: Timestamp, limit: usize) -> Result<Vec<TimerRecord>> {
        reads::timers_due(self, before, limit)
    }

    fn hook(&self, token: &str) -> Result<Option<HookRecord>> {
        reads::hook(self, token)
    }

    fn timer(&self, run_id: &str, step_id: &str, kind: TimerKind) -> Result<Option<TimerRecord>> {
        reads::timer(self, run_id, step_id, kind)
    }

    fn trigger_state(&self, workspace_id: &str, name: &str) -> Result<Option<Value>> {
        reads::trigger_state(self, workspace_id, name)
    }

    fn put_trigger_state(&self, workspace_id: &str, name: &str, state: &Value) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT OR REPLACE INTO trigger_state (workspace_id, name, state) VALUES (?1, ?2, ?3)",
                params![workspace_id, name, json_text(state)],
            )
            .map(|_| ())
        })
    }

    fn delete_finished_before(&self, before: Timestamp, limit: usize) -> Result<usize> {
        self.delete_finished(before, limit)
    }

    fn hooks_for_run(&self, run_id: &str) -> Result<Vec<HookRecord>> {
        reads::hooks_for_run(self, run_id)
    }

    // API key administration.
    fn put_named_api_key(&self, key: &ApiKeyRecord, name: Option<&str>) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO api_keys (hash, workspace_id, prefix, created_at, name) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key.hash, key.workspace_id, key.prefix, micros(key.created_at), name],
            )
            .map(|_| ())
        })
    }

    fn api_key_info(&self, hash: &str) -> Result<Option<super::ApiKeyInfo>> {
        reads::api_key_info(self, hash)
    }

    fn api_keys(&self) -> Result<Vec<super::ApiKeyInfo>> {
        reads::api_keys(self)
    }

    fn revoke_api_key(&self, hash: &str, at: Timestamp) -> Result<bool> {
        self.write(|c| {
            c.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash, micros(at)],
            )
            .map(|n| n > 0)
        })
    }

    fn hooks_by_correlation(
        &self,
        workspace_id: &str,
        signal_type: &str,
        correlation: &str,
    ) -> Result<Vec<HookRecord>> {
        signals::hooks_by_correlation(self, workspace_id, signal_type, correlation)
    }

    fn run_starts_since(
        &self,
        workspace_id: &str,
        slug: &str,
        since: Timestamp,
    ) -> Result<Vec<Timestamp>> {
        signals::run_starts_since(self, workspace_id, slug, since)
    }

    fn buffered_signals(
        &self,
        workspace_id: &str,
        signal_type: &str,
        correlation: &str,
        now: Timestamp,
    ) -> Result<Vec<BufferedSignal>> {
        signals::buffered_signals(self, workspace_id, signal_type, correlation, now)
    }

    fn signal_delivery(
        &self,
        workspace_id: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<super::SignalDelivery>> {
        signals::delivery(self, workspace_id, key, now)
    }

    fn history(&self, q: &RunQuery, f: &HistoryFilter) -> Result<HistoryPage> {
        self.read(|c| query::history(c, q, f))
    }

    fn put_ui_session(&self, s: &UiSession) -> Result<()> {
        self.write(|c| sessions::put(c, s))
    }

    fn ui_session(&self, hash: &str, now: Timestamp) -> Result<Option<UiSession>> {
        self.read(|c| sessions::get(c, hash, now))
    }

    fn delete_ui_session(&self, hash: &str) -> Result<()> {
        self.write(|c| sessions::delete(c, hash))
    }
}

/// The schema version this build writes (`user_version` of an up-to-date file); the
/// SQLite → Postgres copy (`store::migrate`) refuses older files it would misread.
pub(in crate::store) fn schema_version() -> usize {
    schema::MIGRATIONS.len()
}
