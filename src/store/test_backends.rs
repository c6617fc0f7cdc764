//! One test suite for both stores: which backends a test run covers and how a test opens
//! a store on each. Public for the integration tests (`tests/it/backend.rs`); not part of
//! the product.
//!
//! SQLite always runs. PostgreSQL runs when `STEPWISE_TEST_POSTGRES` is set (`1` for the
//! development and CI database at 127.0.0.1:5432, or a `postgres://` URL); each test gets
//! a schema of its own, named after its database path (so reopening the same path, as a
//! restart does, finds the same data), dropped when the test's [`Schemas`] guard drops.

use std::cell::RefCell;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Once};

use sha2::{Digest, Sha256};

use super::{PgOptions, PgStore, SqliteStore, Store, Synchronous};

/// The database CI and development machines run.
pub const DEFAULT_URL: &str = "postgres://root@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static CURRENT: RefCell<Backend> = const { RefCell::new(Backend::Sqlite) };
    static CREATED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The Postgres URL tests use, when `STEPWISE_TEST_POSTGRES` asks for the Postgres half.
pub fn postgres_url() -> Option<String> {
    let v = std::env::var("STEPWISE_TEST_POSTGRES").ok()?;
    let v = v.trim();
    if v.is_empty() || v == "0" {
        None
    } else if v.starts_with("postgres") {
        Some(v.to_string())
    } else {
        Some(DEFAULT_URL.to_string())
    }
}

/// Say once per test binary, past the test harness's output capture, that the Postgres
/// half did not run and why.
pub fn note_skipped() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "note: the PostgreSQL half of the store and engine tests was SKIPPED: \
             STEPWISE_TEST_POSTGRES is not set (set it to 1 to use {DEFAULT_URL}, or to a postgres:// URL)"
        );
    });
}

/// Whether the Postgres half runs; says so once when it does not.
pub fn postgres_enabled() -> bool {
    let on = postgres_url().is_some();
    if !on {
        note_skipped();
    }
    on
}

/// SQLite, and Postgres when enabled.
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite];
    if postgres_enabled() {
        all.push(Backend::Postgres);
    }
    all
}

/// The backend stores opened on this thread use (the test's own thread: the body of a
/// `#[tokio::test]` runs on it whatever the runtime flavor).
pub fn set(backend: Backend) {
    CURRENT.with(|c| *c.borrow_mut() = backend);
}

pub fn current() -> Backend {
    CURRENT.with(|c| *c.borrow())
}

/// The schema a test database path maps to.
pub fn schema_for(path: &Path) -> String {
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("stepwise_test_{hex}")
}

/// Open the store at `path` on the current backend (on Postgres: the path's schema).
pub fn open(path: &Path, sync: Synchronous) -> super::Result<Arc<dyn Store>> {
    match current() {
        Backend::Sqlite => Ok(Arc::new(SqliteStore::open(path, sync)?)),
        Backend::Postgres => Ok(Arc::new(open_postgres(path)?)),
    }
}

/// The Postgres store of `path`'s schema, recorded for [`Schemas`] to drop.
pub fn open_postgres(path: &Path) -> super::Result<PgStore> {
    let url = postgres_url().unwrap_or_else(|| DEFAULT_URL.to_string());
    let schema = schema_for(path);
    let mut opts = PgOptions::new(&url);
    opts.schema = Some(schema.clone());
    opts.pool_size = 4;
    let store = PgStore::open(&opts)?;
    CREATED.with(|c| {
        let mut c = c.borrow_mut();
        if !c.contains(&schema) {
            c.push(schema);
        }
    });
    Ok(store)
}

/// Drops the schemas this thread's tests created, when it drops.
pub struct Schemas;

impl Drop for Schemas {
    fn drop(&mut self) {
        let created = CREATED.with(|c| std::mem::take(&mut *c.borrow_mut()));
        if created.is_empty() {
            return;
        }
        let Some(url) = postgres_url() else { return };
        for schema in created {
            let mut opts = PgOptions::new(&url);
            opts.schema = Some(schema.clone());
            opts.pool_size = 2;
            // Best effort: a schema left behind costs space, not correctness.
            if let Ok(store) = PgStore::open(&opts) {
                let _ = store.drop_schema();
            }
        }
    }
}
