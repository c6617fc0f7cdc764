//! The schema: versioned migrations, applied in order and recorded in `user_version`.

use rusqlite::Connection;

use super::db_err;
use crate::store::{Result, StoreError};

pub(super) const MIGRATIONS: &[&str] = &[
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
    r#"
CREATE TABLE probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
"#,
    // Operations (issue 14): `/metrics` counts suspended runs across workspaces.
    r#"
CREATE INDEX runs_by_status_only ON runs (status);
CREATE TABLE bulk_operations (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    finished     INTEGER NOT NULL,
    state        TEXT NOT NULL
);
CREATE INDEX bulk_unfinished ON bulk_operations (finished) WHERE finished = 0;
CREATE TABLE alerts (
    id           TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    kind         TEXT NOT NULL,
    target       TEXT NOT NULL,
    body         TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    next_at      INTEGER NOT NULL,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX alerts_due ON alerts (next_at) WHERE status = 'pending';
CREATE INDEX alerts_by_run ON alerts (run_id);
"#,
    // Correlated signals: waiting external event steps are found by (workspace, signal
    // type, correlation) through a partial index of pending hooks; early signals wait in
    // buffered_signals.
    r#"
ALTER TABLE hooks ADD COLUMN signal_type TEXT;
ALTER TABLE hooks ADD COLUMN correlation TEXT;
CREATE INDEX hooks_by_correlation ON hooks (workspace_id, signal_type, correlation, created_at)
    WHERE status = 'pending' AND correlation IS NOT NULL;
CREATE TABLE buffered_signals (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    signal_type  TEXT NOT NULL,
    correlation  TEXT NOT NULL,
    payload      TEXT NOT NULL,
    run_id       TEXT,
    received_at  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    via          TEXT NOT NULL,
    consumed_by  TEXT,
    consumed_at  INTEGER
);
CREATE INDEX buffered_by_correlation ON buffered_signals (workspace_id, signal_type, correlation, received_at)
    WHERE consumed_at IS NULL;
CREATE INDEX buffered_by_expiry ON buffered_signals (expires_at);
"#,
    r#"
CREATE TABLE ui_sessions (
    hash         TEXT PRIMARY KEY,
    key_hash     TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    actor        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX ui_sessions_by_expiry ON ui_sessions (expires_at);
"#,
    r#"
CREATE INDEX runs_by_status_page ON runs (workspace_id, status, created_at DESC, id DESC);
CREATE INDEX runs_by_page ON runs (workspace_id, created_at DESC, id DESC);
"#,
    // History's trigger filter reads the trigger's kind through an index on the expression
    // the filter uses (`query::run_filter`), newest first.
    r#"
CREATE INDEX runs_by_trigger_kind ON runs (workspace_id, json_extract(trigger, '$.kind'), created_at DESC, id DESC);
"#,
    // Signal deliveries handled, by their id, for a window: a webhook provider's
    // redelivery reaches no step twice and starts no second run.
    r#"
CREATE TABLE signal_deliveries (
    workspace_id TEXT NOT NULL,
    key          TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, key)
) WITHOUT ROWID;
CREATE INDEX signal_deliveries_by_expiry ON signal_deliveries (expires_at);
"#,
];

/// Whether every migration this build knows is applied (`/readyz`).
pub(super) fn current(conn: &Connection) -> Result<bool> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err)?;
    Ok(usize::try_from(v).unwrap_or(0) == MIGRATIONS.len())
}

pub(super) fn migrate(conn: &Connection) -> Result<()> {
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
