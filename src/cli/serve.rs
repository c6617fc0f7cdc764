//! `stepwise serve`: the HTTP API and the engine in one process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;

use super::Outcome;
use super::local::{DbArgs, with_engine_scripts};
use super::run::shutdown_signal;
use crate::api::{AppState, is_loopback, router};
use crate::diagnostics::render_human;
use crate::engine::Engine;
use crate::store::DEFAULT_WORKSPACE;
use crate::triggers::{Placed, Trigger, Triggers};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "STEPWISE_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Load (and lint) every workflow in this folder at start and whenever a file changes.
    #[arg(long, env = "STEPWISE_DEFINITIONS")]
    definitions: Option<PathBuf>,
    /// Accept requests without an API key (all in the default workspace). Local development
    /// only: refused on a non-loopback address.
    #[arg(
        long,
        env = "STEPWISE_INSECURE_NO_AUTH",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        value_name = "BOOL",
        value_parser = super::flag_value
    )]
    insecure_no_auth: bool,
    /// Base URL clients reach this server at, for hook `resumeUrl`s (default: the request's Host).
    #[arg(long, env = "STEPWISE_PUBLIC_URL")]
    public_url: Option<String>,
    /// A browser origin (scheme://host[:port]) whose pages may send requests that change
    /// things, besides the server's own. Repeatable; the variable takes a comma-separated list.
    #[arg(long, env = "STEPWISE_ALLOW_ORIGIN", value_delimiter = ',')]
    allow_origin: Vec<String>,
    /// Delete finished runs (COMPLETED, FAILED, CANCELLED) older than this, e.g. 30d. Off by default.
    #[arg(long, env = "STEPWISE_RETENTION")]
    retention: Option<String>,
    /// Export each finished run's trace as OpenTelemetry spans (OTLP/HTTP JSON) to this endpoint.
    #[arg(long, env = "STEPWISE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Serve `/metrics` without an API key (for a scraper on a private network). Without it,
    /// `/metrics` takes an API key of the default workspace.
    #[arg(
        long,
        env = "STEPWISE_METRICS_PUBLIC",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        value_name = "BOOL",
        value_parser = super::flag_value
    )]
    metrics_public: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    scripts: super::scripts::ScriptArgs,
}

#[cfg(test)]
impl ServeArgs {
    /// (insecure_no_auth, metrics_public, allow_scripts), for the parsing tests.
    pub(super) fn flags(&self) -> (bool, bool, bool) {
        (
            self.insecure_no_auth,
            self.metrics_public,
            self.scripts.allow_scripts,
        )
    }
}

pub fn serve(args: &ServeArgs) -> Outcome {
    if args.insecure_no_auth && !is_loopback(&args.addr) {
        eprintln!(
            "error: --insecure-no-auth accepts requests without an API key, so it only listens on a loopback address (127.0.0.1 or ::1), not {}",
            args.addr
        );
        return Outcome::CouldNotRun;
    }
    let allowed_origins = match crate::api::parse_origins(&args.allow_origin) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: --allow-origin: {e}");
            return Outcome::CouldNotRun;
        }
    };
    let retention = match args
        .retention
        .as_deref()
        .map(crate::duration::parse)
        .transpose()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: --retention: {e}");
            return Outcome::CouldNotRun;
        }
    };
    with_engine_scripts(&args.db, &args.scripts, |engine| async move {
        let listener = match tokio::net::TcpListener::bind(args.addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", args.addr);
                return Outcome::CouldNotRun;
            }
        };
        let addr = listener.local_addr().unwrap_or(args.addr);
        // CLI commands on this database find the server here and send it their changes.
        if let Err(e) = super::local::advertise(&args.db.db, addr) {
            eprintln!("warning: CLI commands will not find this server: {e}");
        }
        if args.insecure_no_auth {
            eprintln!(
                "WARNING: --insecure-no-auth: anyone who can reach {addr} can start, resume and cancel runs. Never use this outside local development."
            );
        }
        let triggers = Triggers::new(engine.clone(), DEFAULT_WORKSPACE);
        if let Some(dir) = &args.definitions {
            watch_definitions(&engine, &triggers, dir).await;
        }
        {
            let triggers = triggers.clone();
            tokio::spawn(async move {
                loop {
                    // Not awaited: a trigger still busy from the last tick is skipped.
                    let t = triggers.clone();
                    tokio::spawn(async move { t.tick().await });
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
        match crate::bulk::resume(&engine).await {
            Ok(0) => {}
            Ok(n) => eprintln!("resumed {n} unfinished bulk operation(s)"),
            Err(e) => eprintln!("error: cannot resume bulk operations: {e}"),
        }
        if let Some(age) = retention {
            crate::history::spawn_retention(engine.clone(), age);
        }
        if let Some(endpoint) = &args.otlp_endpoint {
            crate::otlp::spawn_exporter(engine.clone(), endpoint.clone());
        }
        eprintln!(
            "stepwise listening on http://{addr} (database {})",
            args.db.describe()
        );
        let app = router(
            AppState::new(
                engine.clone(),
                args.insecure_no_auth,
                args.public_url.clone(),
            )
            .with_triggers(triggers)
            .with_allowed_origins(allowed_origins)
            .with_public_metrics(args.metrics_public),
        );
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await;
        // In-flight steps are left RUNNING and resume at the next start; commits are finished.
        engine.shutdown().await;
        match served {
            Ok(()) => {
                eprintln!("stopped");
                Outcome::Ok
            }
            Err(e) => {
                eprintln!("error: {e}");
                Outcome::CouldNotRun
            }
        }
    })
}

/// Load the folder now, then watch it (every second) for as long as the runtime runs.
pub(super) async fn watch_definitions(engine: &Engine, triggers: &Arc<Triggers>, dir: &Path) {
    let mut seen = BTreeMap::new();
    load_definitions(engine, triggers, dir, &mut seen).await;
    let (engine, triggers, dir) = (engine.clone(), triggers.clone(), dir.to_path_buf());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            load_definitions(&engine, &triggers, &dir, &mut seen).await;
        }
    });
}

/// What the folder watcher remembers of a file.
struct Seen {
    /// Modification time and length: a change in either reloads the file.
    version: (SystemTime, u64),
    /// The trigger the file declares. An edit that does not lint keeps the last good one.
    trigger: Option<Trigger>,
    /// What the server last said about the file's trigger, so it is said once.
    said: Option<String>,
}

/// Apply every changed `*.yaml`/`*.yml` in `dir` (workflows and triggers); invalid files are
/// refused with their diagnostics. The loaded triggers are then exactly those the folder's
/// files declare: an edit, a rename or a removal leaves no trigger behind.
async fn load_definitions(
    engine: &Engine,
    triggers: &Triggers,
    dir: &Path,
    seen: &mut BTreeMap<PathBuf, Seen>,
) {
    let (files, problems) = super::lint::collect_files(&[dir.to_path_buf()]);
    // A workflow's stored versions stay when its file goes (runs pin them).
    let before = seen.len();
    seen.retain(|path, _| files.contains(path));
    let mut changed = seen.len() != before;
    for (p, e) in problems {
        eprintln!("error: cannot read {}: {e}", p.display());
    }
    for path in super::lint::tools_first(files) {
        let version = std::fs::metadata(&path)
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
            .unwrap_or((SystemTime::UNIX_EPOCH, 0));
        let entry = seen.entry(path.clone()).or_insert(Seen {
            version: (SystemTime::UNIX_EPOCH, u64::MAX),
            trigger: None,
            said: None,
        });
        if entry.version == version {
            continue;
        }
        entry.version = version;
        changed = true;
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                continue;
            }
        };
        let name = path.display().to_string();
        let file = crate::diagnostics::SourceFile::new(name.clone(), source.as_str());
        // A trigger file that no longer parses is still a trigger file: its last good
        // version keeps running, as with any other error.
        // Test files (`stepwise test`) live beside workflows; they are not definitions.
        if crate::testing::files::is_test_source(&file) {
            continue;
        }
        let is_trigger = crate::yaml::parse(&file).map_or(entry.trigger.is_some(), |d| {
            crate::triggers::is_trigger(&d.value)
        });
        if is_trigger {
            let l = crate::validate::lint(&file);
            match l.trigger {
                Some(t) => entry.trigger = Some(t),
                None => {
                    eprintln!("refused {name}:");
                    for d in &l.diagnostics {
                        eprint!("{}", render_human(&file, d, false, 100));
                    }
                }
            }
            continue;
        }
        entry.trigger = None;
        match engine
            .apply_definition(DEFAULT_WORKSPACE, &name, &source)
            .await
        {
            Ok(Ok((rec, _))) => eprintln!("loaded {} ({} version {})", name, rec.slug, rec.version),
            // A workflow refused only for its script steps is not broken: say so in one
            // line, so the README's first command (the examples, without --allow-scripts)
            // does not greet a new user with error reports.
            Ok(Err(rejected))
                if !rejected.diagnostics.is_empty()
                    && rejected
                        .diagnostics
                        .iter()
                        .all(|d| d.code == crate::diagnostics::Code::ScriptsNotAllowed) =>
            {
                eprintln!(
                    "skipped {name}: it has script steps, which run only on a server started with --allow-scripts (docs/scripts.md)"
                );
            }
            Ok(Err(rejected)) => {
                eprintln!("refused {name}:");
                for d in &rejected.diagnostics {
                    eprint!("{}", render_human(&rejected.file, d, false, 100));
                }
            }
            Err(e) => eprintln!("error: cannot store {name}: {e}"),
        }
    }
    if changed {
        sync_triggers(triggers, seen);
    }
}

/// Make the loaded triggers those the files declare; a name or endpoint declared twice
/// goes to the file first in path order.
fn sync_triggers(triggers: &Triggers, seen: &mut BTreeMap<PathBuf, Seen>) {
    let declared: Vec<(PathBuf, Trigger)> = seen
        .iter()
        .filter_map(|(p, s)| s.trigger.clone().map(|t| (p.clone(), t)))
        .collect();
    let (placed, stopped) = triggers.replace_all(declared.iter().map(|(_, t)| t.clone()).collect());
    for name in stopped {
        eprintln!("stopped trigger {name}: no file declares it any more");
    }
    for ((path, t), placed) in declared.iter().zip(placed) {
        let said = match &placed {
            Placed::Unchanged => continue,
            Placed::Loaded { inactive } => format!(
                "loaded {} ({}){}",
                path.display(),
                t.label(),
                inactive
                    .as_ref()
                    .map(|w| format!(", {w}"))
                    .unwrap_or_default()
            ),
            Placed::Refused { reason, by } => format!(
                "refused {}: {reason} (in {})",
                path.display(),
                declared
                    .get(*by)
                    .map_or(String::new(), |(p, _)| p.display().to_string())
            ),
        };
        // A refusal that stands is said once, not at every change elsewhere in the folder.
        if let Some(s) = seen.get_mut(path)
            && (matches!(placed, Placed::Loaded { .. }) || s.said.as_deref() != Some(&said))
        {
            eprintln!("{said}");
            s.said = Some(said);
        }
    }
}
