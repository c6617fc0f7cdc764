//! The PostgreSQL store: several stepwise processes share one database (docs/scale-out.md).
//!
//! The `Store` trait is synchronous (the scheduler is one thread; the API calls it from
//! blocking sections), while `tokio-postgres` is async. The store owns a small runtime of
//! its own that drives the connections; a call enters it and waits on the calling thread
//! (a parking `block_on`), so it works from the scheduler thread and from inside the
//! server's runtime alike. Statements of one batch are pipelined on one connection inside
//! one transaction (group commit, as with SQLite).
//!
//! Like `sqlite/`, this module is the only place that knows its SQL.

mod apply;
mod definitions;
mod grouped;
mod inbox;
mod ops;
mod owner;
mod query;
mod reads;
mod rows;
mod schema;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use jiff::Timestamp;
use serde_json::Value;
use tokio_postgres::NoTls;

use super::{Result, StoreError};

/// How a `PgStore` connects.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/dbname` (libpq URL or key=value form).
    pub url: String,
    /// Tables live in this schema (created if missing); `None`: the connection's default.
    pub schema: Option<String>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a process holds its runs without renewing its lease; after that, another
    /// process takes them over.
    pub lease: std::time::Duration,
}

impl PgOptions {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            schema: None,
            pool_size: 16,
            lease: std::time::Duration::from_secs(10),
        }
    }
}

/// Whether a `--db` value names a PostgreSQL database rather than an SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

pub struct PgStore {
    pool: Pool,
    own: owner::Ownership,
    schema: Option<String>,
    /// Notified when another process wrote or answered an inbox row; its listener (a
    /// connection of its own) starts when a scheduler first asks for it, so stores that
    /// execute nothing (tools, tests' readers) do not hold one.
    wake: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    listener: tokio_postgres::Config,
    /// Drives the connections; shut down in the background on drop, so dropping the store
    /// inside another runtime is allowed.
    rt: Option<tokio::runtime::Runtime>,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// A Postgres error with its detail (the `Display` of `tokio_postgres::Error` says only
/// "db error").
pub(in crate::store) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Database(format!("postgres: {}", db.message())),
        None => StoreError::Database(format!("postgres: {e}")),
    }
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

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Wakes the thread that waits in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Poll `fut` on this thread until it is ready. The connections' I/O runs on the store's
/// runtime, so nothing here needs a reactor; it is not `Runtime::block_on`, which refuses
/// to run inside another runtime.
fn park_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Arc::new(ThreadWaker(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

impl PgStore {
    /// Connect, create the schema if asked, and apply pending migrations (under an
    /// advisory lock, so processes starting together migrate once).
    pub fn open(opts: &PgOptions) -> Result<Self> {
        let mut config: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|e| db_err(format!("--db: not a PostgreSQL URL: {e}")))?;
        // A transaction left open by a stuck process must not hold locks for long.
        let mut options = String::from("-c idle_in_transaction_session_timeout=30000");
        if let Some(schema) = &opts.schema {
            check_identifier(schema)?;
            options.push_str(&format!(" -c search_path={schema}"));
        }
        if let Some(extra) = config.get_options() {
            options = format!("{extra} {options}");
        }
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name("stepwise");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stepwise-pg")
            .enable_all()
            .build()
            .map_err(|e| db_err(format!("cannot start the Postgres runtime: {e}")))?;
        let listener = config.clone();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _inside = rt.enter();
            Pool::builder(manager)
                .max_size(opts.pool_size.max(2))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(db_err)?
        };
        let own = owner::Ownership::new(opts.lease);
        rt.spawn(owner::heartbeat(
            pool.clone(),
            own.me.clone(),
            opts.lease,
            own.epochs.clone(),
            own.released.clone(),
        ));
        let store = Self {
            pool,
            own,
            schema: opts.schema.clone(),
            wake: std::sync::OnceLock::new(),
            listener,
            rt: Some(rt),
        };
        if let Some(schema) = &opts.schema {
            let client = store.client()?;
            store
                .block(client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")))
                .map_err(pg_err)?;
        }
        schema::migrate(&store)?;
        Ok(store)
    }

    /// The inbox's wake-up, its listener started on first use.
    pub(super) fn inbox_listener(&self) -> Arc<tokio::sync::Notify> {
        self.wake
            .get_or_init(|| {
                let wake = Arc::new(tokio::sync::Notify::new());
                if let Some(rt) = &self.rt {
                    rt.spawn(inbox::listen(
                        self.listener.clone(),
                        self.schema.clone().unwrap_or_default(),
                        wake.clone(),
                    ));
                }
                wake
            })
            .clone()
    }

    /// This process's name in `runs.owner`.
    pub fn owner(&self) -> &str {
        &self.own.me
    }

    /// The schema the tables live in, when one was given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Drop the store's schema with everything in it (tests: a fresh schema per test).
    pub fn drop_schema(&self) -> Result<()> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        let client = self.client()?;
        // A process still connected may hold a lock for a moment; do not wait forever.
        self.block(client.batch_execute(&format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .map_err(pg_err)
    }

    /// Run `fut` to completion with the store's runtime entered (connections it opens are
    /// driven there).
    pub(in crate::store) fn block<F: Future>(&self, fut: F) -> F::Output {
        let _inside = self.rt.as_ref().map(tokio::runtime::Runtime::enter);
        // Unconstrained: called from a task of another runtime, tokio's cooperative budget
        // is that task's; once spent, every tokio resource polled here would answer
        // "pending, try again" until the task yields, which it cannot while we wait.
        park_on(tokio::task::unconstrained(fut))
    }

    pub(in crate::store) fn client(&self) -> Result<deadpool_postgres::Object> {
        self.block(self.pool.get()).map_err(|e| match e {
            // The server's own reason ("too many clients already", a bad password), which
            // the pool's message leaves out.
            deadpool_postgres::PoolError::Backend(e) => {
                db_err(format!("cannot connect to PostgreSQL: {}", pg_err(e)))
            }
            e => db_err(format!("cannot connect to PostgreSQL: {e}")),
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Schema names go into statements as identifiers: letters, digits and `_` only.
fn check_identifier(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(db_err(format!(
            "schema `{name}`: use letters, digits and `_` (at most 63, not starting with a digit)"
        )))
    }
}
