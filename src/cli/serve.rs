//! `stepwise serve`: the HTTP API and the engine in one process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;

use super::Outcome;
use super::local::{DbArgs, with_engine};
use super::run::shutdown_signal;
use crate::api::{AppState, is_loopback, router};
use crate::diagnostics::render_human;
use crate::engine::Engine;
use crate::store::DEFAULT_WORKSPACE;
use crate::triggers::Triggers;

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
    #[arg(long)]
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
    #[command(flatten)]
    db: DbArgs,
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
    with_engine(&args.db, |engine| async move {
        let listener = match tokio::net::TcpListener::bind(args.addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", args.addr);
                return Outcome::CouldNotRun;
            }
        };
        let addr = listener.local_addr().unwrap_or(args.addr);
        if args.insecure_no_auth {
            eprintln!(
                "WARNING: --insecure-no-auth: anyone who can reach {addr} can start, resume and cancel runs. Never use this outside local development."
            );
        }
        let triggers = Triggers::new(engine.clone(), DEFAULT_WORKSPACE);
        if let Some(dir) = &args.definitions {
            let mut seen = HashMap::new();
            load_definitions(&engine, &triggers, dir, &mut seen).await;
            let (engine, triggers, dir) = (engine.clone(), triggers.clone(), dir.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    load_definitions(&engine, &triggers, &dir, &mut seen).await;
                }
            });
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
        if let Some(age) = retention {
            crate::history::spawn_retention(engine.clone(), age);
        }
        if let Some(endpoint) = &args.otlp_endpoint {
            crate::otlp::spawn_exporter(engine.clone(), endpoint.clone());
        }
        eprintln!(
            "stepwise listening on http://{addr} (database {})",
            args.db.db.display()
        );
        let app = router(
            AppState::new(
                engine.clone(),
                args.insecure_no_auth,
                args.public_url.clone(),
            )
            .with_triggers(triggers)
            .with_allowed_origins(allowed_origins),
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

/// What the folder watcher remembers of a file.
struct Seen {
    modified: SystemTime,
    /// The trigger the file declares, to stop it when the file goes.
    trigger: Option<String>,
}

/// Apply every changed `*.yaml`/`*.yml` in `dir` (workflows and triggers); invalid files are
/// refused with their diagnostics.
async fn load_definitions(
    engine: &Engine,
    triggers: &Triggers,
    dir: &Path,
    seen: &mut HashMap<PathBuf, Seen>,
) {
    let (files, problems) = super::lint::collect_files(&[dir.to_path_buf()]);
    // A trigger whose file is gone stops; a workflow's stored versions stay (runs pin them).
    seen.retain(|path, s| {
        let keep = files.contains(path);
        if !keep && let Some(name) = &s.trigger {
            eprintln!("removed {} (trigger {name})", path.display());
            triggers.remove(name);
        }
        keep
    });
    for (p, e) in problems {
        eprintln!("error: cannot read {}: {e}", p.display());
    }
    for path in files {
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if seen.get(&path).is_some_and(|s| s.modified == modified) {
            continue;
        }
        seen.insert(
            path.clone(),
            Seen {
                modified,
                trigger: None,
            },
        );
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                continue;
            }
        };
        let name = path.display().to_string();
        let file = crate::diagnostics::SourceFile::new(name.clone(), source.as_str());
        let is_trigger =
            crate::yaml::parse(&file).is_ok_and(|d| crate::triggers::is_trigger(&d.value));
        if is_trigger {
            let l = crate::validate::lint(&file);
            match l.trigger {
                Some(t) => {
                    let (label, trigger_name) = (t.label(), t.name.clone());
                    match triggers.set(t) {
                        Ok(()) => {
                            eprintln!("loaded {name} ({label})");
                            if let Some(s) = seen.get_mut(&path) {
                                s.trigger = Some(trigger_name);
                            }
                        }
                        Err(e) => eprintln!("refused {name}: {e}"),
                    }
                }
                None => {
                    eprintln!("refused {name}:");
                    for d in &l.diagnostics {
                        eprint!("{}", render_human(&file, d, false, 100));
                    }
                }
            }
            continue;
        }
        match engine
            .apply_definition(DEFAULT_WORKSPACE, &name, &source)
            .await
        {
            Ok(Ok((rec, _))) => eprintln!("loaded {} ({} version {})", name, rec.slug, rec.version),
            Ok(Err(rejected)) => {
                eprintln!("refused {name}:");
                for d in &rejected.diagnostics {
                    eprint!("{}", render_human(&rejected.file, d, false, 100));
                }
            }
            Err(e) => eprintln!("error: cannot store {name}: {e}"),
        }
    }
}
