//! The Postgres schema: versioned migrations recorded in `stepwise_schema`, applied under
//! an advisory lock so that processes starting at once migrate once.
//!
//! Times are microseconds since the epoch (BIGINT) and JSON is text, as in the SQLite
//! store, so both stores read and write the same values. Hot tables that are updated in
//! place (`runs`, `step_executions`, `timers`, `hooks`) leave room on their pages for HOT
//! updates and are vacuumed early (docs/scale-out.md).

use super::{PgStore, pg_err};
use crate::store::{Result, StoreError};

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE definitions (
    version_id   TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    slug         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    label        TEXT,
    hash         TEXT NOT NULL,
    source       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, slug, version)
);
CREATE TABLE runs (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    workspace_id       TEXT NOT NULL,
    definition_id      TEXT NOT NULL,
    definition_slug    TEXT NOT NULL,
    status             TEXT NOT NULL,
    input              TEXT NOT NULL,
    output             TEXT,
    error              TEXT,
    idempotency_key    TEXT,
    current_step_index BIGINT NOT NULL,
    attempt            BIGINT NOT NULL,
    parent_run_id      TEXT,
    parent_step_id     TEXT,
    trigger            TEXT NOT NULL,
    pending_action     TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    started_at         BIGINT,
    finished_at        BIGINT
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.05);
CREATE UNIQUE INDEX runs_by_key ON runs (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_by_status ON runs (workspace_id, status, created_at);
CREATE INDEX runs_by_definition ON runs (workspace_id, definition_slug, created_at);
CREATE INDEX runs_by_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX runs_by_status_only ON runs (status);
CREATE INDEX runs_by_status_page ON runs (workspace_id, status, created_at DESC, id DESC);
CREATE INDEX runs_by_page ON runs (workspace_id, created_at DESC, id DESC);
CREATE INDEX runs_by_trigger_kind ON runs (workspace_id, ((trigger::jsonb ->> 'kind')), created_at DESC, id DESC);
CREATE TABLE step_executions (
    run_id      TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    step_index  BIGINT NOT NULL,
    status      TEXT NOT NULL,
    input       TEXT,
    output      TEXT,
    error       TEXT,
    usage       TEXT,
    meta        TEXT,
    started_at  BIGINT,
    finished_at BIGINT,
    run_attempt BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (run_id, step_id, attempt)
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.05);
CREATE TABLE events (
    id      BIGSERIAL PRIMARY KEY,
    run_id  TEXT NOT NULL,
    at      BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    step_id TEXT,
    data    TEXT NOT NULL
);
CREATE INDEX events_by_run ON events (run_id, id);
CREATE TABLE timers (
    run_id  TEXT NOT NULL,
    step_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    due_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_id, kind)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02);
CREATE INDEX timers_by_due ON timers (due_at);
CREATE TABLE hooks (
    token        TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    resumed_at   BIGINT,
    signal_type  TEXT,
    correlation  TEXT
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.05);
CREATE INDEX hooks_by_run ON hooks (run_id);
CREATE INDEX hooks_by_correlation ON hooks (workspace_id, signal_type, correlation, created_at)
    WHERE status = 'pending' AND correlation IS NOT NULL;
CREATE TABLE signals (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    signal_type TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    via         TEXT NOT NULL
);
CREATE INDEX signals_by_run ON signals (run_id, id);
CREATE TABLE api_keys (
    hash         TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    name         TEXT,
    revoked_at   BIGINT
);
CREATE TABLE trigger_state (
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    state        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
CREATE TABLE probe (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    at BIGINT NOT NULL
);
CREATE TABLE bulk_operations (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    finished     BOOLEAN NOT NULL,
    state        TEXT NOT NULL
);
CREATE INDEX bulk_unfinished ON bulk_operations (finished) WHERE NOT finished;
CREATE TABLE alerts (
    id           TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    kind         TEXT NOT NULL,
    target       TEXT NOT NULL,
    body         TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    next_at      BIGINT NOT NULL,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX alerts_due ON alerts (next_at) WHERE status = 'pending';
CREATE INDEX alerts_by_run ON alerts (run_id);
CREATE TABLE buffered_signals (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    signal_type  TEXT NOT NULL,
    correlation  TEXT NOT NULL,
    payload      TEXT NOT NULL,
    run_id       TEXT,
    received_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    via          TEXT NOT NULL,
    consumed_by  TEXT,
    consumed_at  BIGINT
);
CREATE INDEX buffered_by_correlation ON buffered_signals (workspace_id, signal_type, correlation, received_at)
    WHERE consumed_at IS NULL;
CREATE INDEX buffered_by_expiry ON buffered_signals (expires_at);
CREATE TABLE ui_sessions (
    hash         TEXT PRIMARY KEY,
    key_hash     TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    actor        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX ui_sessions_by_expiry ON ui_sessions (expires_at);
CREATE TABLE signal_deliveries (
    workspace_id TEXT NOT NULL,
    key          TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
CREATE INDEX signal_deliveries_by_expiry ON signal_deliveries (expires_at);
"#,
    // Ownership (docs/scale-out.md): the process that runs a run, until when its lease
    // holds, and the epoch every write of the run is fenced by. Commands that reach a
    // process that does not hold their run wait in the inbox for the one that does.
    r#"
ALTER TABLE runs ADD COLUMN owner TEXT, ADD COLUMN lease_until BIGINT, ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
CREATE INDEX runs_by_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_unfinished ON runs (created_at) WHERE status IN ('PENDING', 'RUNNING');
CREATE TABLE inbox (
    id         BIGSERIAL PRIMARY KEY,
    run_id     TEXT NOT NULL,
    command    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    answer     TEXT,
    answered_at BIGINT
);
CREATE INDEX inbox_open ON inbox (id) WHERE answer IS NULL;
"#,
    // The inbox's ids are made by the caller, which waits for the answer under its id
    // (`store/postgres/inbox`); the first inbox was never written to.
    r#"
DROP TABLE inbox;
CREATE TABLE inbox (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    command     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    answer      TEXT,
    answered_at BIGINT
);
CREATE INDEX inbox_open ON inbox (created_at) WHERE answer IS NULL;
CREATE INDEX inbox_answered ON inbox (answered_at) WHERE answer IS NOT NULL;
"#,
    // Which process fires each schedule and poll trigger (`owner::claim_trigger`).
    r#"
CREATE TABLE trigger_leases (
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    holder       TEXT NOT NULL,
    lease_until  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
"#,
];

/// Any fixed number: every stepwise process takes the same lock (per schema, since the
/// lock is database-wide, the schema name is mixed in by `hashtext`).
const LOCK_SQL: &str =
    "SELECT pg_advisory_lock(hashtext('stepwise migrations ' || current_schema()))";
const UNLOCK_SQL: &str =
    "SELECT pg_advisory_unlock(hashtext('stepwise migrations ' || current_schema()))";

/// The version recorded, 0 when nothing is.
async fn version(client: &tokio_postgres::Client) -> Result<usize> {
    let row = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM stepwise_schema", &[])
        .await
        .map_err(pg_err)?;
    let v: i64 = row.try_get(0).map_err(pg_err)?;
    Ok(usize::try_from(v).unwrap_or(0))
}

/// Whether every migration this build knows is applied (`/readyz`).
pub(super) fn current(store: &PgStore) -> Result<bool> {
    let client = store.client()?;
    let v = store.block(version(&client))?;
    Ok(v == MIGRATIONS.len())
}

pub(super) fn migrate(store: &PgStore) -> Result<()> {
    let mut client = store.client()?;
    store.block(async {
        client.batch_execute(LOCK_SQL).await.map_err(pg_err)?;
        let result = apply_pending(&mut client).await;
        // Released on every path; a connection that died released it anyway.
        let unlocked = client.batch_execute(UNLOCK_SQL).await.map_err(pg_err);
        result.and(unlocked)
    })
}

async fn apply_pending(client: &mut deadpool_postgres::Object) -> Result<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS stepwise_schema (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg_err)?;
    let current = version(client).await?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database was written by a newer stepwise (schema version {current}, this build knows {})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Database(format!("migration {version} failed: {}", pg_err(e)))
        })?;
        tx.execute(
            "INSERT INTO stepwise_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
    }
    Ok(())
}
