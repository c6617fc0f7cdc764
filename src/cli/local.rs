//! Opening the embedded engine for a CLI command: the database, its lock, the runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::scripts::ScriptArgs;
use crate::clock::SystemClock;
use crate::engine::{Engine, EngineConfig};
use crate::store::{PgOptions, PgStore, SqliteStore, Store, Synchronous, is_postgres_url};

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// The SQLite database file, or a PostgreSQL database (`postgres://user@host:port/db`)
    /// that several stepwise processes share (docs/scale-out.md).
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
    /// PostgreSQL only: connections each process keeps open.
    #[arg(long, env = "STEPWISE_DB_POOL", default_value_t = 16, global = true)]
    pub db_pool: usize,
    /// PostgreSQL only: how long a process holds its runs without renewing its lease; a
    /// process that stops is taken over after this (at most 15s recommended).
    #[arg(long, env = "STEPWISE_LEASE", default_value = "10s", global = true)]
    pub lease: String,
}

impl DbArgs {
    /// The PostgreSQL URL, when `--db` names one.
    pub fn postgres(&self) -> Option<&str> {
        self.db.to_str().filter(|s| is_postgres_url(s))
    }

    /// The database for messages: a Postgres URL without its password.
    pub fn describe(&self) -> String {
        let text = self.db.display().to_string();
        match (self.postgres(), text.split_once("://")) {
            (Some(_), Some((scheme, rest))) => match rest.split_once('@') {
                Some((user, host)) if user.contains(':') => {
                    let name = user.split(':').next().unwrap_or_default();
                    format!("{scheme}://{name}:***@{host}")
                }
                _ => text,
            },
            _ => text,
        }
    }

    /// Open the store `--db` names (applying pending migrations).
    pub fn open_store(&self) -> Result<Arc<dyn Store>, String> {
        match self.postgres() {
            Some(url) => {
                let mut opts = PgOptions::new(url);
                opts.pool_size = self.db_pool;
                opts.lease =
                    crate::duration::parse(&self.lease).map_err(|e| format!("--lease: {e}"))?;
                if opts.lease < std::time::Duration::from_secs(1) {
                    return Err("--lease: at least 1s".into());
                }
                Ok(Arc::new(PgStore::open(&opts).map_err(|e| e.to_string())?))
            }
            None => Ok(Arc::new(
                SqliteStore::open(&self.db, self.synchronous).map_err(|e| e.to_string())?,
            )),
        }
    }
}

impl std::fmt::Display for Synchronous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
            Synchronous::Off => "off",
        })
    }
}

/// Held while an engine runs on a database: two schedulers on one file would both recover
/// the same runs. The lock file names its holder (`pid N`) and, for a server, where it
/// listens (`server URL`), so CLI commands can hand changes to it.
pub struct DbLock {
    /// `None` on PostgreSQL, where any number of processes share the database.
    _file: Option<std::fs::File>,
}

/// Who holds a database's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A `stepwise serve` that said where it listens.
    Server(String),
    /// A process that runs the engine without saying how to reach it (a worker, `run`, or a
    /// server of an older stepwise).
    Process(Option<u32>),
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Take the lock, or say who holds it.
pub fn try_lock(db: &Path) -> Result<Result<DbLock, Holder>, String> {
    use std::io::Write;
    if db.to_str().is_some_and(is_postgres_url) {
        return Ok(Ok(DbLock { _file: None }));
    }
    let path = lock_path(db);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // What a holder that died left behind is no longer true.
            file.set_len(0)
                .and_then(|()| writeln!(file, "pid {}", std::process::id()))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(Ok(DbLock { _file: Some(file) }))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(Err(read_holder(&path))),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

pub fn lock(db: &Path) -> Result<DbLock, String> {
    match try_lock(db)? {
        Ok(lock) => Ok(lock),
        Err(holder) => Err(format!(
            "{} runs the engine on {}; stop it first, or send runs to a server with `stepwise runs … --server URL`",
            describe(&holder),
            db.display()
        )),
    }
}

/// Who holds the lock right now, if anyone; creates nothing.
pub fn holder(db: &Path) -> Option<Holder> {
    if db.to_str().is_some_and(is_postgres_url) {
        return None;
    }
    let path = lock_path(db);
    let file = std::fs::File::open(&path).ok()?;
    match file.try_lock_shared() {
        // Free: whatever the file says is stale. Dropping the file releases the probe.
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => Some(read_holder(&path)),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

fn read_holder(path: &Path) -> Holder {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut pid = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("server", url)) if !url.trim().is_empty() => {
                return Holder::Server(url.trim().to_string());
            }
            Some(("pid", n)) => pid = n.trim().parse().ok(),
            _ => {}
        }
    }
    Holder::Process(pid)
}

/// "the stepwise server at URL", "another stepwise process (pid N)".
pub fn describe(holder: &Holder) -> String {
    match holder {
        Holder::Server(url) => format!("the stepwise server at {url}"),
        Holder::Process(Some(pid)) => {
            format!("another stepwise process (pid {pid}: serve, worker or run)")
        }
        Holder::Process(None) => "another stepwise process (serve, worker or run)".to_string(),
    }
}

/// Record in the lock file where the server holding it listens (call after binding, while
/// holding the lock), so CLI commands without `--server` send their changes there.
pub fn advertise(db: &Path, addr: std::net::SocketAddr) -> Result<(), String> {
    use std::io::Write;
    if db.to_str().is_some_and(is_postgres_url) {
        return Ok(());
    }
    let host = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let url = format!("http://{}", std::net::SocketAddr::new(host, addr.port()));
    let path = lock_path(db);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "server {url}"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Open the store and start the engine (call inside a tokio runtime).
pub fn start_engine(args: &DbArgs, scripts: &ScriptArgs) -> Result<(Engine, DbLock), String> {
    let lock = lock(&args.db)?;
    Ok((start_locked_with(args, &lock, scripts)?, lock))
}

/// Start the engine on a database whose lock the caller holds (call inside a tokio runtime).
pub fn start_locked(args: &DbArgs, lock: &DbLock) -> Result<Engine, String> {
    start_locked_with(args, lock, &ScriptArgs::default())
}

/// [`start_locked`] with the script flags of the command.
pub fn start_locked_with(
    args: &DbArgs,
    _lock: &DbLock,
    scripts: &ScriptArgs,
) -> Result<Engine, String> {
    let store = args.open_store()?;
    let config = local_config(args, scripts)?;
    Engine::start(store, Arc::new(SystemClock), config).map_err(|e| e.to_string())
}

/// The engine settings of a command on `args.db`: the environment, then the flags; run
/// workspaces beside the database, which (like them) scripts may not see.
fn local_config(args: &DbArgs, scripts: &ScriptArgs) -> Result<EngineConfig, String> {
    let mut config = EngineConfig::from_env()?;
    scripts.apply(&mut config)?;
    if args.postgres().is_some() {
        // No database file to put them beside: the working directory.
        if config.workspaces.root.is_none() {
            config.workspaces.root = Some(PathBuf::from("stepwise.workspaces"));
        }
    } else {
        if config.workspaces.root.is_none() {
            config.workspaces.root = Some(crate::workspace::root_beside(&args.db));
        }
        let db_dir = std::path::absolute(&args.db)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        config.scripts.hidden.extend(db_dir);
    }
    super::scripts::announce(&config)?;
    Ok(config)
}

/// Open the store for reading: no lock, no scheduler, nothing executes (call inside a tokio
/// runtime). SQLite's WAL lets this run beside a server writing the same file.
pub fn open_read_only(args: &DbArgs) -> Result<Engine, String> {
    let store = args.open_store()?;
    let config = EngineConfig::from_env()?;
    Ok(Engine::read_only(store, Arc::new(SystemClock), config))
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
    with_engine_scripts(db, &ScriptArgs::default(), f)
}

/// [`with_engine`] with the script flags of the command.
pub fn with_engine_scripts<F, Fut>(db: &DbArgs, scripts: &ScriptArgs, f: F) -> super::Outcome
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
        let (engine, _lock) = match start_engine(db, scripts) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return super::Outcome::CouldNotRun;
            }
        };
        f(engine).await
    })
}
