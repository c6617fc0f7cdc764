//! Run workspaces: a directory per run of a workflow with `workspace: true`, shared by its
//! steps (scripts run in it; `files` reads and writes it, confined), kept until the run has
//! been finished for the retention time.
//!
//! Nothing records that a directory exists: the sweep lists the root and asks the store
//! about each run, so a directory left by a crash, or by a run that retention deleted, goes
//! at the next sweep like any other. The root therefore belongs to one database.

pub mod files;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::Engine;
use crate::model::{RUN_PREFIX, is_id};

/// Default of how long a finished run's workspace is kept (a retry of a failed run within
/// it finds the files its earlier steps left).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Where run workspaces live and how long they stay.
#[derive(Debug, Clone)]
pub struct WorkspaceConfig {
    /// `<root>/<run id>` is a run's workspace. The CLI sets `<db>.workspaces` (or
    /// `--workspaces`); `None` (an engine built in code without one): script steps fail.
    pub root: Option<PathBuf>,
    /// How long after a run finished its workspace is removed.
    pub retention: Duration,
}

impl Default for WorkspaceConfig {
    fn default() -> Self {
        Self {
            root: None,
            retention: DEFAULT_RETENTION,
        }
    }
}

/// The workspaces root that goes with a database file: `<db>.workspaces`.
pub fn root_beside(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".workspaces");
    PathBuf::from(name)
}

/// A run's workspace directory (it may not exist yet).
pub fn run_dir(root: &Path, run_id: &str) -> PathBuf {
    root.join(run_id)
}

/// Create a run's workspace if it is missing (only its owner may enter it); its path.
pub fn ensure(root: &Path, run_id: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    if !is_id(run_id, RUN_PREFIX) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{run_id}` is not a run id"),
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)?;
    let dir = run_dir(root, run_id);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(dir),
        Err(e) => Err(e),
    }
}

/// Remove a directory tree a script wrote. `remove_dir_all` never follows links; a
/// directory the script made unreadable or unwritable is opened up first.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            open_up(path);
            std::fs::remove_dir_all(path)
        }
        Err(e) => Err(e),
    }
}

/// Give the owner full rights on every directory below `path` (not following links).
fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            open_up(&entry.path());
        }
    }
}

/// Remove the workspaces whose run finished more than the retention time ago, or no
/// longer exists; how many went.
pub async fn sweep(engine: &Engine) -> usize {
    let config = &engine.config().workspaces;
    let Some(root) = config.root.clone() else {
        return 0;
    };
    let Ok(keep) = jiff::SignedDuration::try_from(config.retention) else {
        return 0;
    };
    let now = engine.clock().now();
    let store = engine.store().clone();
    let swept = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&root) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            // Only what the engine made: anything else in the root is left alone.
            let Some(run_id) = name.to_str().filter(|n| is_id(n, RUN_PREFIX)) else {
                continue;
            };
            let expired = match store.run(run_id) {
                Ok(None) => true,
                Ok(Some(run)) => {
                    run.status.is_terminal()
                        && run
                            .finished_at
                            .and_then(|f| f.checked_add(keep).ok())
                            .is_some_and(|until| until <= now)
                }
                Err(e) => {
                    tracing::warn!("workspace sweep: cannot read run {run_id}: {e}");
                    false
                }
            };
            if expired {
                match remove_tree(&entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(
                        "workspace sweep: cannot remove {}: {e}",
                        entry.path().display()
                    ),
                }
            }
        }
        removed
    })
    .await;
    swept.unwrap_or(0)
}

/// Sweep now (what a crash left) and then regularly, while the runtime runs.
pub fn spawn_sweeper(engine: Engine) {
    let every = (engine.config().workspaces.retention / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(300));
    tokio::spawn(async move {
        loop {
            let n = sweep(&engine).await;
            if n > 0 {
                tracing::info!("removed {n} run workspace(s) past their retention");
            }
            tokio::time::sleep(every).await;
        }
    });
}
