//! Opening the embedded engine for a CLI command: the database, its lock, the runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use crate::clock::SystemClock;
use crate::engine::{Engine, EngineConfig};
use crate::store::{SqliteStore, Synchronous};

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// The SQLite database file.
    #[arg(
        long,
        env = "STEPWISE_DB",
        default_value = "stepwise.db",
        global = true
    )]
    pub db: PathBuf,
    /// `full` (an acknowledged step survives power loss) or `normal` (survives crashes).
    #[arg(
        long,
        env = "STEPWISE_SYNCHRONOUS",
        default_value = "full",
        global = true
    )]
    pub synchronous: Synchronous,
}

impl std::fmt::Display for Synchronous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        })
    }
}

/// Held while an engine runs on a database: two schedulers on one file would both recover
/// the same runs.
pub struct DbLock {
    _file: std::fs::File,
}

pub fn lock(db: &Path) -> Result<DbLock, String> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DbLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another stepwise process (serve or worker) is using {}; stop it, or talk to it with --server",
            db.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Open the store and start the engine (call inside a tokio runtime).
pub fn start_engine(args: &DbArgs) -> Result<(Engine, DbLock), String> {
    let lock = lock(&args.db)?;
    let store = SqliteStore::open(&args.db, args.synchronous).map_err(|e| e.to_string())?;
    let config = EngineConfig::from_env()?;
    let engine =
        Engine::start(Arc::new(store), Arc::new(SystemClock), config).map_err(|e| e.to_string())?;
    Ok((engine, lock))
}

pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Store calls block; a bounded pool keeps memory flat under bursts.
        .max_blocking_threads(64)
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Run `f` with the engine started on `db`, inside a fresh runtime; failures to start are
/// reported and become "could not run".
pub fn with_engine<F, Fut>(db: &DbArgs, f: F) -> super::Outcome
where
    F: FnOnce(Engine) -> Fut,
    Fut: std::future::Future<Output = super::Outcome>,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return super::Outcome::CouldNotRun;
        }
    };
    rt.block_on(async {
        let (engine, _lock) = match start_engine(db) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return super::Outcome::CouldNotRun;
            }
        };
        f(engine).await
    })
}
