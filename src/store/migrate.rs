//! Copy an SQLite store into PostgreSQL (`stepwise migrate-store`), for a team that starts on
//! one machine and grows to several processes on one database (docs/scale-out.md).
//!
//! The copy goes table by table with explicit column lists: a column the Postgres schema
//! gains later with a default (run ownership, say) takes its default, and a column only one
//! side knows is never guessed at. Everything lands in one Postgres transaction, so a
//! failed copy leaves the target as it was; rows stream in by binary `COPY`. Ids are
//! copied as they are, and the sequences behind `events` and `signals` continue after the
//! largest id copied.
//!
//! The SQLite file is opened read-only; the caller holds its engine lock (no server may
//! write it meanwhile).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use tokio_postgres::types::ToSql;

use super::postgres::pg_err;
use super::{PgStore, Result, StoreError};

/// How a column is carried across.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    /// SQLite's 0/1 integer, a Postgres BOOLEAN.
    Bool,
}

use Kind::{Bool, Int, Text};

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// A BIGSERIAL id column whose sequence continues after the copy.
    serial: Option<&'static str>,
}

/// Every table of the SQLite schema (`sqlite/schema.rs`) that holds state, in an order that
/// reads naturally (Postgres has no foreign keys between them). `probe` is left out: it is
/// the health check's scratch row.
const TABLES: &[Table] = &[
    Table {
        name: "definitions",
        columns: &[
            ("version_id", Text),
            ("workspace_id", Text),
            ("slug", Text),
            ("version", Int),
            ("label", Text),
            ("hash", Text),
            ("source", Text),
            ("created_at", Int),
        ],
        serial: None,
    },
    Table {
        name: "runs",
        columns: &[
            ("id", Text),
            ("workspace_id", Text),
            ("definition_id", Text),
            ("definition_slug", Text),
            ("status", Text),
            ("input", Text),
            ("output", Text),
            ("error", Text),
            ("idempotency_key", Text),
            ("current_step_index", Int),
            ("attempt", Int),
            ("parent_run_id", Text),
            ("parent_step_id", Text),
            ("trigger", Text),
            ("pending_action", Text),
            ("created_at", Int),
            ("updated_at", Int),
            ("started_at", Int),
            ("finished_at", Int),
        ],
        serial: None,
    },
    Table {
        name: "step_executions",
        columns: &[
            ("run_id", Text),
            ("step_id", Text),
            ("attempt", Int),
            ("step_index", Int),
            ("status", Text),
            ("input", Text),
            ("output", Text),
            ("error", Text),
            ("usage", Text),
            ("meta", Text),
            ("started_at", Int),
            ("finished_at", Int),
            ("run_attempt", Int),
        ],
        serial: None,
    },
    Table {
        name: "events",
        columns: &[
            ("id", Int),
            ("run_id", Text),
            ("at", Int),
            ("kind", Text),
            ("step_id", Text),
            ("data", Text),
        ],
        serial: Some("id"),
    },
    Table {
        name: "timers",
        columns: &[
            ("run_id", Text),
            ("step_id", Text),
            ("kind", Text),
            ("due_at", Int),
        ],
        serial: None,
    },
    Table {
        name: "hooks",
        columns: &[
            ("token", Text),
            ("workspace_id", Text),
            ("run_id", Text),
            ("step_id", Text),
            ("kind", Text),
            ("status", Text),
            ("created_at", Int),
            ("resumed_at", Int),
            ("signal_type", Text),
            ("correlation", Text),
        ],
        serial: None,
    },
    Table {
        name: "signals",
        columns: &[
            ("id", Int),
            ("run_id", Text),
            ("step_id", Text),
            ("signal_type", Text),
            ("payload", Text),
            ("received_at", Int),
            ("via", Text),
        ],
        serial: Some("id"),
    },
    Table {
        name: "buffered_signals",
        columns: &[
            ("id", Text),
            ("workspace_id", Text),
            ("signal_type", Text),
            ("correlation", Text),
            ("payload", Text),
            ("run_id", Text),
            ("received_at", Int),
            ("expires_at", Int),
            ("via", Text),
            ("consumed_by", Text),
            ("consumed_at", Int),
        ],
        serial: None,
    },
    Table {
        name: "signal_deliveries",
        columns: &[
            ("workspace_id", Text),
            ("key", Text),
            ("outcome", Text),
            ("received_at", Int),
            ("expires_at", Int),
        ],
        serial: None,
    },
    Table {
        name: "alerts",
        columns: &[
            ("id", Text),
            ("run_id", Text),
            ("workspace_id", Text),
            ("kind", Text),
            ("target", Text),
            ("body", Text),
            ("status", Text),
            ("attempts", Int),
            ("next_at", Int),
            ("last_error", Text),
            ("created_at", Int),
            ("finished_at", Int),
        ],
        serial: None,
    },
    Table {
        name: "bulk_operations",
        columns: &[
            ("id", Text),
            ("workspace_id", Text),
            ("finished", Bool),
            ("state", Text),
        ],
        serial: None,
    },
    Table {
        name: "api_keys",
        columns: &[
            ("hash", Text),
            ("workspace_id", Text),
            ("prefix", Text),
            ("created_at", Int),
            ("name", Text),
            ("revoked_at", Int),
        ],
        serial: None,
    },
    // Signed-in browser sessions: copied so that people stay signed in across the move.
    Table {
        name: "ui_sessions",
        columns: &[
            ("hash", Text),
            ("key_hash", Text),
            ("workspace_id", Text),
            ("actor", Text),
            ("created_at", Int),
            ("expires_at", Int),
        ],
        serial: None,
    },
    Table {
        name: "trigger_state",
        columns: &[("workspace_id", Text), ("name", Text), ("state", Text)],
        serial: None,
    },
];

/// What the copy does when the target already holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse, changing nothing.
    Refuse,
    /// Empty the target's tables first (in the same transaction).
    Replace,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The target holds data and the caller did not say to replace it.
    #[error("the target database already holds data ({0}); pass --force to replace it")]
    TargetNotEmpty(String),
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rows copied per table, in copy order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub tables: Vec<(&'static str, u64)>,
}

/// One value on its way from SQLite to Postgres.
#[derive(Debug)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(Option<bool>),
}

impl Value {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Int(v) => v,
            Value::Text(v) => v,
            Value::Bool(v) => v,
        }
    }
}

fn src_err(path: &Path, e: impl std::fmt::Display) -> MigrateError {
    MigrateError::Source(format!("{}: {e}", path.display()))
}

/// Open the SQLite store read-only and check that this build reads its schema.
pub fn open_source(path: &Path) -> std::result::Result<Connection, MigrateError> {
    if !path.is_file() {
        return Err(MigrateError::Source(format!(
            "--from {}: no such SQLite database",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| src_err(path, e))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| src_err(path, format!("not a stepwise database ({e})")))?;
    let want = super::sqlite::schema_version();
    let version = usize::try_from(version).unwrap_or(0);
    if version != want {
        let why = if version == 0 {
            "not a stepwise database (no schema version)".to_string()
        } else if version < want {
            format!(
                "written by an older stepwise (schema {version}, this build reads {want}); \
                 open it once with this stepwise (e.g. `stepwise worker --db {}` and stop it) and retry",
                path.display()
            )
        } else {
            format!(
                "written by a newer stepwise (schema {version}, this build reads {want}); use that version"
            )
        };
        return Err(src_err(path, why));
    }
    Ok(conn)
}

/// Copy everything `source` holds into `target`, in one transaction, and check the counts.
pub fn copy(
    source: &Connection,
    target: &PgStore,
    existing: Existing,
) -> std::result::Result<Report, MigrateError> {
    let mut client = target.client()?;
    target.block(async {
        let tx = client.transaction().await.map_err(pg_err)?;
        let held = held_tables(&tx).await?;
        if !held.is_empty() {
            match existing {
                Existing::Refuse => return Err(MigrateError::TargetNotEmpty(held.join(", "))),
                Existing::Replace => {
                    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
                    tx.batch_execute(&format!("TRUNCATE {}", names.join(", ")))
                        .await
                        .map_err(pg_err)?;
                }
            }
        }
        let mut report = Report::default();
        for table in TABLES {
            let n = copy_table(source, &tx, table).await?;
            report.tables.push((table.name, n));
        }
        verify(source, &tx, &report).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(report)
    })
}

/// The copied tables that hold rows in the target.
async fn held_tables(tx: &tokio_postgres::Transaction<'_>) -> Result<Vec<String>> {
    let mut held = Vec::new();
    for t in TABLES {
        let row = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {})", t.name), &[])
            .await
            .map_err(pg_err)?;
        if row.try_get::<_, bool>(0).map_err(pg_err)? {
            held.push(t.name.to_string());
        }
    }
    Ok(held)
}

async fn copy_table(
    source: &Connection,
    tx: &tokio_postgres::Transaction<'_>,
    table: &Table,
) -> std::result::Result<u64, MigrateError> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;

    let cols: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let list = cols.join(", ");
    // Rows in primary-key order, so the target's pages fill in the order reads use.
    let select = format!("SELECT {list} FROM {} ORDER BY 1", table.name);
    let src = |e: rusqlite::Error| MigrateError::Source(format!("reading {}: {e}", table.name));
    let mut stmt = source.prepare(&select).map_err(src)?;
    let mut rows = stmt.query([]).map_err(src)?;
    let types: Vec<Type> = table
        .columns
        .iter()
        .map(|(_, k)| match k {
            Int => Type::INT8,
            Text => Type::TEXT,
            Bool => Type::BOOL,
        })
        .collect();
    // Binary COPY: one stream per table, no statement size limit, no per-row parsing.
    let sink = tx
        .copy_in(&format!("COPY {} ({list}) FROM STDIN BINARY", table.name))
        .await
        .map_err(pg_err)?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    let mut values: Vec<Value> = Vec::with_capacity(cols.len());
    while let Some(row) = rows.next().map_err(src)? {
        values.clear();
        for (i, (_, kind)) in table.columns.iter().enumerate() {
            values.push(match kind {
                Int => Value::Int(row.get(i).map_err(src)?),
                Text => Value::Text(row.get(i).map_err(src)?),
                Bool => Value::Bool(row.get::<_, Option<i64>>(i).map_err(src)?.map(|v| v != 0)),
            });
        }
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(Value::as_sql).collect();
        writer.as_mut().write(&params).await.map_err(pg_err)?;
    }
    let copied = writer.finish().await.map_err(pg_err)?;
    if let Some(id) = table.serial {
        // The next id the engine takes continues after the largest copied; an empty table
        // starts at 1.
        tx.batch_execute(&format!(
            "SELECT setval(pg_get_serial_sequence('{t}', '{id}'), COALESCE((SELECT MAX({id}) FROM {t}), 1), (SELECT MAX({id}) FROM {t}) IS NOT NULL)",
            t = table.name
        ))
        .await
        .map_err(pg_err)?;
    }
    Ok(copied)
}

/// Count every table on both sides after the copy: a difference aborts the transaction.
async fn verify(
    source: &Connection,
    tx: &tokio_postgres::Transaction<'_>,
    report: &Report,
) -> std::result::Result<(), MigrateError> {
    for (name, copied) in &report.tables {
        let in_source: i64 = source
            .query_row(&format!("SELECT COUNT(*) FROM {name}"), [], |r| r.get(0))
            .map_err(|e| MigrateError::Source(format!("counting {name}: {e}")))?;
        let row = tx
            .query_one(&format!("SELECT COUNT(*) FROM {name}"), &[])
            .await
            .map_err(pg_err)?;
        let in_target: i64 = row.try_get(0).map_err(pg_err)?;
        if in_source != in_target || u64::try_from(in_target).ok() != Some(*copied) {
            return Err(StoreError::Database(format!(
                "{name}: the source holds {in_source} rows but the target {in_target} after the copy; nothing was committed"
            ))
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column of every table the SQLite schema holds is copied (but the health
    /// check's scratch row): a migration that adds one fails here until the copy knows it.
    #[test]
    fn the_copy_lists_every_table_and_column_of_the_sqlite_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(super::super::SqliteStore::open(&path, super::super::Synchronous::Normal).unwrap());
        let conn = open_source(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap();
        let tables: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut listed: Vec<String> = TABLES.iter().map(|t| t.name.to_string()).collect();
        listed.push("probe".into());
        listed.sort();
        assert_eq!(tables, listed);
        for t in TABLES {
            let mut stmt = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{}')", t.name))
                .unwrap();
            let mut cols: Vec<String> = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            cols.sort();
            let mut want: Vec<String> = t.columns.iter().map(|(c, _)| c.to_string()).collect();
            want.sort();
            assert_eq!(cols, want, "{}", t.name);
        }
    }

    #[test]
    fn a_file_that_is_not_a_stepwise_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = open_source(&dir.path().join("nope.db")).unwrap_err();
        assert!(
            missing.to_string().contains("no such SQLite database"),
            "{missing}"
        );
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let e = open_source(&path).unwrap_err();
        assert!(e.to_string().contains("not a stepwise database"), "{e}");
    }
}
