//! How a script process is launched: inside bubblewrap (`bwrap`), or unconfined when the
//! operator said so (`--script-sandbox none`). docs/scripts.md says what each isolates.
//!
//! Under bwrap a script sees the system directories read-only (`/usr`, `/bin`, `/lib*`,
//! `/etc` without its secret files, `/opt`, `/nix`), its own `/proc`, `/dev` and `/tmp`,
//! and its run's workspace at `/workspace`, the only place it can write. It has no network
//! unless the step says `network: true`, its own pid, IPC and UTS namespaces, a new
//! session (no terminal to inject into), and it dies with the process that started it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the workspace appears inside the sandbox.
pub const INNER_WORKSPACE: &str = "/workspace";

/// System directories shown read-only (a link, as on merged-/usr systems, stays a link).
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix",
];
/// Files of `/etc` that hold secrets: replaced by an empty file.
const MASKED_FILES: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
];
/// Directories of `/etc` that hold secrets: replaced by an empty directory.
const MASKED_DIRS: &[&str] = &["/etc/ssh", "/etc/sudoers.d", "/etc/ssl/private"];

/// How scripts run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// Inside bubblewrap; the program named (looked up on PATH when it has no `/`).
    Bwrap(PathBuf),
    /// As the server's own user, with its rights (only when the operator asked for it).
    Unconfined,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::Bwrap(PathBuf::from("bwrap"))
    }
}

impl Sandbox {
    /// Whether this sandbox can run scripts here: for bwrap, a trial run of `true` inside
    /// it. `Ok` says how scripts will run (for the startup log); `Err` says why they cannot.
    pub fn check(&self) -> Result<String, String> {
        match self {
            Sandbox::Unconfined => Ok(
                "scripts run UNCONFINED (--script-sandbox none): with the server's user, files and network"
                    .to_string(),
            ),
            Sandbox::Bwrap(program) => {
                let Some(path) = find_program(program) else {
                    return Err(format!(
                        "--allow-scripts: bubblewrap (`{}`) is not installed, so scripts cannot be confined; install it (e.g. `apt-get install bubblewrap`), or start with --script-sandbox none to run scripts unconfined, with the server's own rights",
                        program.display()
                    ));
                };
                let dir = std::env::temp_dir().join(format!(
                    "stepwise-bwrap-check-{}",
                    uuid::Uuid::now_v7().simple()
                ));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let out = std::process::Command::new(&path)
                    .args(bwrap_args(&dir, false, &[]))
                    .args(["/bin/sh", "-c", "true"])
                    .stdin(std::process::Stdio::null())
                    .output();
                let _ = std::fs::remove_dir_all(&dir);
                match out {
                    Ok(o) if o.status.success() => Ok(format!(
                        "scripts run confined by bubblewrap ({}): only the run's workspace is writable, no network unless a step says `network: true`",
                        path.display()
                    )),
                    Ok(o) => Err(format!(
                        "--allow-scripts: bubblewrap ({}) cannot create a sandbox here ({}): {}; allow unprivileged user namespaces (kernel.unprivileged_userns_clone=1), or start with --script-sandbox none to run scripts unconfined",
                        path.display(),
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    Err(e) => Err(format!(
                        "--allow-scripts: cannot run {}: {e}",
                        path.display()
                    )),
                }
            }
        }
    }

    /// The program to start and its arguments before the script's own argv, and the
    /// workspace path the script sees.
    pub fn launcher(
        &self,
        workspace: &Path,
        network: bool,
        hidden: &[PathBuf],
    ) -> (Option<(PathBuf, Vec<OsString>)>, PathBuf) {
        match self {
            Sandbox::Unconfined => (None, workspace.to_path_buf()),
            Sandbox::Bwrap(program) => (
                Some((program.clone(), bwrap_args(workspace, network, hidden))),
                PathBuf::from(INNER_WORKSPACE),
            ),
        }
    }
}

/// `program` itself when it names a path, else the first executable of that name on PATH.
fn find_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return executable(program).then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

/// bwrap's arguments up to `--`; the command follows.
pub fn bwrap_args(workspace: &Path, network: bool, hidden: &[PathBuf]) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&std::ffi::OsStr]| a.extend(items.iter().map(|s| s.to_os_string()));
    push(&[
        "--die-with-parent".as_ref(),
        "--new-session".as_ref(),
        "--unshare-all".as_ref(),
    ]);
    if network {
        push(&["--share-net".as_ref()]);
    }
    let mut bound = Vec::new();
    for dir in SYSTEM {
        let p = Path::new(dir);
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(p) {
                    push(&["--symlink".as_ref(), target.as_os_str(), p.as_os_str()]);
                }
            }
            Ok(m) if m.is_dir() => {
                push(&["--ro-bind".as_ref(), p.as_os_str(), p.as_os_str()]);
                bound.push(p);
            }
            _ => {}
        }
    }
    push(&[
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
    ]);
    // Name resolution where /etc/resolv.conf points into /run (systemd-resolved).
    if network && Path::new("/run/systemd/resolve").is_dir() {
        push(&[
            "--ro-bind".as_ref(),
            "/run/systemd/resolve".as_ref(),
            "/run/systemd/resolve".as_ref(),
        ]);
    }
    for f in MASKED_FILES {
        if Path::new(f).is_file() {
            push(&["--ro-bind".as_ref(), "/dev/null".as_ref(), f.as_ref()]);
        }
    }
    for d in MASKED_DIRS {
        if Path::new(d).is_dir() {
            push(&["--tmpfs".as_ref(), d.as_ref()]);
        }
    }
    // The database and the other runs' workspaces, when they sit in a shown directory.
    for h in hidden {
        if h.is_dir() && bound.iter().any(|b| h.starts_with(b) && h != b) {
            push(&["--tmpfs".as_ref(), h.as_os_str()]);
        }
    }
    push(&[
        "--bind".as_ref(),
        workspace.as_os_str(),
        INNER_WORKSPACE.as_ref(),
        "--chdir".as_ref(),
        INNER_WORKSPACE.as_ref(),
        "--".as_ref(),
    ]);
    a
}
