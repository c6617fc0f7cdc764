//! `stepwise serve`: the HTTP API and the engine in one process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;

use super::Outcome;
use super::local::{DbArgs, runtime, start_engine};
use super::run::shutdown_signal;
use crate::api::{AppState, is_loopback, router};
use crate::diagnostics::render_human;
use crate::engine::Engine;
use crate::store::DEFAULT_WORKSPACE;

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
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::CouldNotRun;
        }
    };
    rt.block_on(async {
        let (engine, _lock) = match start_engine(&args.db) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::CouldNotRun;
            }
        };
        let listener = match tokio::net::TcpListener::bind(args.addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", args.addr);
                return Outcome::CouldNotRun;
            }
        };
        let addr = listener.local_addr().unwrap_or(args.addr);
        if args.insecure_no_auth {
            eprintln!("WARNING: --insecure-no-auth: anyone who can reach {addr} can start, resume and cancel runs. Never use this outside local development.");
        }
        if let Some(dir) = &args.definitions {
            let mut seen = HashMap::new();
            load_definitions(&engine, dir, &mut seen).await;
            let (engine, dir) = (engine.clone(), dir.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    load_definitions(&engine, &dir, &mut seen).await;
                }
            });
        }
        eprintln!("stepwise listening on http://{addr} (database {})", args.db.db.display());
        let app = router(AppState::new(engine.clone(), args.insecure_no_auth, args.public_url.clone()));
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await;
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

/// Apply every changed `*.yaml`/`*.yml` in `dir`; invalid files are refused with diagnostics.
async fn load_definitions(engine: &Engine, dir: &Path, seen: &mut HashMap<PathBuf, SystemTime>) {
    let (files, problems) = super::lint::collect_files(&[dir.to_path_buf()]);
    for (p, e) in problems {
        eprintln!("error: cannot read {}: {e}", p.display());
    }
    for path in files {
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if seen.get(&path) == Some(&modified) {
            continue;
        }
        seen.insert(path.clone(), modified);
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                continue;
            }
        };
        let name = path.display().to_string();
        match engine
            .apply_definition(DEFAULT_WORKSPACE, &name, &source)
            .await
        {
            Ok(Ok(rec)) => eprintln!("loaded {} ({} version {})", name, rec.slug, rec.version),
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
