//! The SQLite store: one file, WAL, one writer connection, a small pool of readers.
//! This module is the only place that knows SQL.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    ApiKeyRecord, DefinitionRecord, EventRecord, HookKind, HookRecord, HookStatus, Result,
    RunQuery, RunRecord, SignalRecord, StepRecord, Store, StoreError, TimerKind, TimerRecord,
    Write,
};
use crate::model::{DEFINITION_PREFIX, RunStatus, new_id};

/// SQLite's `synchronous` setting: FULL survives power loss; NORMAL survives process crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
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
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE definitions (
    version_id   TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    slug         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    label        TEXT,
    hash         TEXT NOT NULL,
    source       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (workspace_id, slug, version)
);
CREATE TABLE runs (
    id                 TEXT PRIMARY KEY,
    workspace_id       TEXT NOT NULL,
    definition_id      TEXT NOT NULL,
    definition_slug    TEXT NOT NULL,
    status             TEXT NOT NULL,
    input              TEXT NOT NULL,
    output             TEXT,
    error              TEXT,
    idempotency_key    TEXT,
    current_step_index INTEGER NOT NULL,
    attempt            INTEGER NOT NULL,
    parent_run_id      TEXT,
    parent_step_id     TEXT,
    trigger            TEXT NOT NULL,
    pending_action     TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER
);
CREATE UNIQUE INDEX runs_by_key ON runs (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_by_status ON runs (workspace_id, status, created_at);
CREATE INDEX runs_by_definition ON runs (workspace_id, definition_slug, created_at);
CREATE INDEX runs_by_created ON runs (workspace_id, created_at);
CREATE INDEX runs_by_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE TABLE step_executions (
    run_id      TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    step_index  INTEGER NOT NULL,
    status      TEXT NOT NULL,
    input       TEXT,
    output      TEXT,
    error       TEXT,
    usage       TEXT,
    meta        TEXT,
    started_at  INTEGER,
    finished_at INTEGER,
    PRIMARY KEY (run_id, step_id, attempt)
) WITHOUT ROWID;
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    run_id  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    step_id TEXT,
    data    TEXT NOT NULL
);
CREATE INDEX events_by_run ON events (run_id, id);
CREATE TABLE timers (
    run_id  TEXT NOT NULL,
    step_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    due_at  INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_id, kind)
) WITHOUT ROWID;
CREATE INDEX timers_by_due ON timers (due_at);
CREATE TABLE hooks (
    token        TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    resumed_at   INTEGER
);
CREATE INDEX hooks_by_run ON hooks (run_id);
CREATE TABLE signals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    signal_type TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    via         TEXT NOT NULL
);
CREATE INDEX signals_by_run ON signals (run_id, id);
"#,
    r#"
CREATE TABLE api_keys (
    hash         TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE trigger_state (
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    state        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name)
) WITHOUT ROWID;
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
"#,
    r#"
ALTER TABLE step_executions ADD COLUMN run_attempt INTEGER NOT NULL DEFAULT 1;
"#,
    r#"
ALTER TABLE api_keys ADD COLUMN name TEXT;
ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;
"#,
];

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

fn migrate(conn: &Connection) -> Result<()> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err)?;
    let current = usize::try_from(current).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database was written by a newer stepwise (schema version {current}, this build knows {})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = i + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {version}; COMMIT;"
        ))
        .map_err(|e| db_err(format!("migration {version} failed: {e}")))?;
    }
    Ok(())
}

const RUN_COLUMNS: &str = "id, workspace_id, definition_id, definition_slug, status, input, output, error, \
    idempotency_key, current_step_index, attempt, parent_run_id, parent_step_id, trigger, pending_action, \
    created_at, updated_at, started_at, finished_at";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
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

fn step_from_row(r: &Row<'_>) -> rusqlite::Result<StepRecord> {
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

fn definition_from_row(r: &Row<'_>) -> rusqlite::Result<DefinitionRecord> {
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

fn hook_from_row(r: &Row<'_>) -> rusqlite::Result<HookRecord> {
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
    })
}

const DEFINITION_COLUMNS: &str =
    "version_id, workspace_id, slug, version, label, hash, source, created_at";
const HOOK_COLUMNS: &str =
    "token, workspace_id, run_id, step_id, kind, status, created_at, resumed_at";

fn insert_run(tx: &rusqlite::Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
    ))?;
    stmt.execute(params![
        r.id,
        r.workspace_id,
        r.definition_id,
        r.definition_slug,
        r.status.as_str(),
        json_text(&r.input),
        opt_json(&r.output),
        opt_json(&r.error),
        r.idempotency_key,
        r.current_step_index,
        r.attempt,
        r.parent_run_id,
        r.parent_step_id,
        json_text(&r.trigger),
        opt_json(&r.pending_action),
        micros(r.created_at),
        micros(r.updated_at),
        r.started_at.map(micros),
        r.finished_at.map(micros),
    ])?;
    Ok(())
}

fn apply(tx: &rusqlite::Transaction<'_>, w: &Write) -> rusqlite::Result<()> {
    match w {
        Write::InsertRun(r) => insert_run(tx, r)?,
        Write::UpdateRun(r) => {
            // Only what changes after creation: a narrow UPDATE keeps most indexes untouched.
            tx.prepare_cached(
                "UPDATE runs SET status = ?2, output = ?3, error = ?4, current_step_index = ?5, attempt = ?6, \
                 pending_action = ?7, updated_at = ?8, started_at = ?9, finished_at = ?10 WHERE id = ?1",
            )?
            .execute(params![
                r.id,
                r.status.as_str(),
                opt_json(&r.output),
                opt_json(&r.error),
                r.current_step_index,
                r.attempt,
                opt_json(&r.pending_action),
                micros(r.updated_at),
                r.started_at.map(micros),
                r.finished_at.map(micros),
            ])?;
        }
        Write::PutStep(s) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO step_executions (run_id, step_id, attempt, step_index, status, input, output, \
                 error, usage, meta, started_at, finished_at, run_attempt) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                s.run_id,
                s.step_id,
                s.attempt,
                s.step_index,
                s.status.as_str(),
                opt_json(&s.input),
                opt_json(&s.output),
                opt_json(&s.error),
                opt_json(&s.usage),
                opt_json(&s.meta),
                s.started_at.map(micros),
                s.finished_at.map(micros),
                s.run_attempt,
            ])?;
        }
        Write::Event(e) => {
            tx.prepare_cached(
                "INSERT INTO events (run_id, at, kind, step_id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                e.run_id,
                micros(e.at),
                e.kind.as_str(),
                e.step_id,
                json_text(&e.data)
            ])?;
        }
        Write::PutTimer(t) => {
            tx.prepare_cached("INSERT OR REPLACE INTO timers (run_id, step_id, kind, due_at) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![t.run_id, t.step_id, t.kind.as_str(), micros(t.due_at)])?;
        }
        Write::DeleteTimer {
            run_id,
            step_id,
            kind,
        } => {
            tx.prepare_cached(
                "DELETE FROM timers WHERE run_id = ?1 AND step_id = ?2 AND kind = ?3",
            )?
            .execute(params![run_id, step_id, kind.as_str()])?;
        }
        Write::DeleteRunTimers { run_id } => {
            tx.prepare_cached("DELETE FROM timers WHERE run_id = ?1")?
                .execute(params![run_id])?;
        }
        Write::PutHook(h) => {
            tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO hooks ({HOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                h.token,
                h.workspace_id,
                h.run_id,
                h.step_id,
                h.kind.as_str(),
                h.status.as_str(),
                micros(h.created_at),
                h.resumed_at.map(micros)
            ])?;
        }
        Write::CloseHooks {
            run_id,
            step_id,
            status,
            at,
        } => {
            tx.prepare_cached(
                "UPDATE hooks SET status = ?3, resumed_at = ?4 WHERE run_id = ?1 AND status = 'pending' \
                 AND (?2 IS NULL OR step_id = ?2)",
            )?
            .execute(params![run_id, step_id, status.as_str(), micros(*at)])?;
        }
        Write::Signal(s) => {
            tx.prepare_cached(
                "INSERT INTO signals (run_id, step_id, signal_type, payload, received_at, via) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                s.run_id,
                s.step_id,
                s.signal_type,
                json_text(&s.payload),
                micros(s.received_at),
                s.via
            ])?;
        }
    }
    Ok(())
}

impl Store for SqliteStore {
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
            if let Err(e) = apply(&tx, w) {
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
        self.read(|c| {
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

    fn definition_versions(&self, workspace_id: &str, slug: &str) -> Result<Vec<DefinitionRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE workspace_id = ?1 AND slug = ?2 ORDER BY version"
            ))?;
            stmt.query_map(params![workspace_id, slug], definition_from_row)?.collect()
        })
    }

    fn list_definitions(&self, workspace_id: &str) -> Result<Vec<DefinitionRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DEFINITION_COLUMNS} FROM definitions d WHERE workspace_id = ?1 AND version = \
                 (SELECT MAX(version) FROM definitions WHERE workspace_id = d.workspace_id AND slug = d.slug) ORDER BY slug"
            ))?;
            stmt.query_map(params![workspace_id], definition_from_row)?.collect()
        })
    }

    fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?
                .query_row(params![id], run_from_row)
                .optional()
        })
    }

    fn run_by_key(&self, workspace_id: &str, key: &str) -> Result<Option<RunRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE workspace_id = ?1 AND idempotency_key = ?2"
            ))?
            .query_row(params![workspace_id, key], run_from_row)
            .optional()
        })
    }

    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT run_id, step_id, attempt, step_index, status, input, output, error, usage, meta, started_at, \
                 finished_at, run_attempt FROM step_executions WHERE run_id = ?1 ORDER BY step_index, attempt",
            )?;
            stmt.query_map(params![run_id], step_from_row)?.collect()
        })
    }

    fn events(&self, run_id: &str) -> Result<Vec<EventRecord>> {
        self.read(|c| {
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

    fn signals(&self, run_id: &str) -> Result<Vec<SignalRecord>> {
        self.read(|c| {
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

    fn list_runs(&self, q: &RunQuery) -> Result<(Vec<RunRecord>, u64)> {
        let mut filter = String::from("workspace_id = ?1");
        let mut args: Vec<rusqlite::types::Value> = vec![q.workspace_id.clone().into()];
        if let Some(s) = q.status {
            args.push(s.as_str().to_string().into());
            filter.push_str(&format!(" AND status = ?{}", args.len()));
        }
        if let Some(d) = &q.definition {
            args.push(d.clone().into());
            let column = if d.starts_with(DEFINITION_PREFIX) {
                "definition_id"
            } else {
                "definition_slug"
            };
            filter.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
        if let Some(from) = q.from {
            args.push(micros(from).into());
            filter.push_str(&format!(" AND created_at >= ?{}", args.len()));
        }
        if let Some(to) = q.to {
            args.push(micros(to).into());
            filter.push_str(&format!(" AND created_at < ?{}", args.len()));
        }
        let page_size = q.page_size.clamp(1, 1000);
        let offset = q.page.saturating_sub(1).saturating_mul(page_size);
        self.read(|c| {
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM runs WHERE {filter}"),
                rusqlite::params_from_iter(args.iter()),
                |r| r.get(0),
            )?;
            let mut page_args = args.clone();
            page_args.push(i64::try_from(page_size).unwrap_or(i64::MAX).into());
            page_args.push(i64::try_from(offset).unwrap_or(i64::MAX).into());
            let n = page_args.len();
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT ?{} OFFSET ?{n}",
                n - 1
            ))?;
            let runs = stmt
                .query_map(rusqlite::params_from_iter(page_args.iter()), run_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((runs, u64::try_from(total).unwrap_or(0)))
        })
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
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = ?1 ORDER BY created_at"
            ))?;
            stmt.query_map(params![parent_run_id], run_from_row)?
                .collect()
        })
    }

    fn timers_due(&self, before: Timestamp, limit: usize) -> Result<Vec<TimerRecord>> {
        self.read(|c| {
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

    fn hook(&self, token: &str) -> Result<Option<HookRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {HOOK_COLUMNS} FROM hooks WHERE token = ?1"
            ))?
            .query_row(params![token], hook_from_row)
            .optional()
        })
    }

    fn timer(&self, run_id: &str, step_id: &str, kind: TimerKind) -> Result<Option<TimerRecord>> {
        self.read(|c| {
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

    fn put_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO api_keys (hash, workspace_id, prefix, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![key.hash, key.workspace_id, key.prefix, micros(key.created_at)],
            )
            .map(|_| ())
        })
    }

    fn trigger_state(&self, workspace_id: &str, name: &str) -> Result<Option<Value>> {
        self.read(|c| {
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
                for table in ["step_executions", "events", "signals", "hooks", "timers"] {
                    tx.prepare_cached(&format!("DELETE FROM {table} WHERE run_id = ?1"))?
                        .execute(params![id])?;
                }
                tx.prepare_cached("DELETE FROM runs WHERE id = ?1")?
                    .execute(params![id])?;
            }
            tx.commit()?;
            Ok(ids.len())
        })
    }

    fn hooks_for_run(&self, run_id: &str) -> Result<Vec<HookRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {HOOK_COLUMNS} FROM hooks WHERE run_id = ?1 ORDER BY created_at"
            ))?;
            stmt.query_map(params![run_id], hook_from_row)?.collect()
        })
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
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = ?1"
            ))?
            .query_row(params![hash], api_key_from_row)
            .optional()
        })
    }

    fn api_keys(&self) -> Result<Vec<super::ApiKeyInfo>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, prefix"
            ))?;
            stmt.query_map([], api_key_from_row)?.collect()
        })
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
}

const API_KEY_COLUMNS: &str = "hash, workspace_id, prefix, name, created_at, revoked_at";

fn api_key_from_row(r: &Row<'_>) -> rusqlite::Result<super::ApiKeyInfo> {
    Ok(super::ApiKeyInfo {
        hash: r.get(0)?,
        workspace_id: r.get(1)?,
        prefix: r.get(2)?,
        name: r.get(3)?,
        created_at: ts(r.get(4)?),
        revoked_at: r.get::<_, Option<i64>>(5)?.map(ts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DEFAULT_WORKSPACE;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db"), Synchronous::Full).unwrap();
        (dir, s)
    }

    #[test]
    fn migrations_apply_once_and_reopen() {
        let (dir, s) = store();
        drop(s);
        let s = SqliteStore::open(&dir.path().join("t.db"), Synchronous::Normal).unwrap();
        assert!(s.list_definitions(DEFAULT_WORKSPACE).unwrap().is_empty());
    }

    #[test]
    fn definitions_keep_every_version() {
        let (_d, s) = store();
        let now = Timestamp::now();
        let (a, created) = s
            .put_definition(DEFAULT_WORKSPACE, "x", None, "id: x # 1", now)
            .unwrap();
        assert!(created);
        let (again, created) = s
            .put_definition(DEFAULT_WORKSPACE, "x", None, "id: x # 1", now)
            .unwrap();
        assert!(!created);
        assert_eq!(a, again);
        let (b, _) = s
            .put_definition(DEFAULT_WORKSPACE, "x", Some("2"), "id: x # 2", now)
            .unwrap();
        assert_eq!(b.version, 2);
        assert_eq!(
            s.definition(DEFAULT_WORKSPACE, "x")
                .unwrap()
                .unwrap()
                .version_id,
            b.version_id
        );
        assert_eq!(
            s.definition(DEFAULT_WORKSPACE, &a.version_id)
                .unwrap()
                .unwrap()
                .version,
            1
        );
        assert_eq!(
            s.definition_versions(DEFAULT_WORKSPACE, "x").unwrap().len(),
            2
        );
        assert!(s.definition("ws_other", "x").unwrap().is_none());
    }
}
