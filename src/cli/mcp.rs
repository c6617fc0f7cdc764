//! `stepwise mcp`: the MCP server over stdio, for agent clients that start it as a
//! subprocess. It runs the engine on the embedded store (like `serve` and `worker`), in
//! the default workspace; stdout carries only protocol messages, everything else goes to
//! stderr. A database a server already serves is refused with its `/mcp` URL.

use std::path::PathBuf;

use clap::Args;
use rmcp::ServiceExt;

use super::Outcome;
use super::local::{DbArgs, Holder, holder, with_engine_scripts};
use super::run::shutdown_signal;
use crate::mcp::McpServer;
use crate::store::DEFAULT_WORKSPACE;
use crate::triggers::Triggers;

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Load (and lint) every workflow in this folder at start and whenever a file changes.
    /// Trigger files are read but not run: `stepwise serve` runs triggers.
    #[arg(long, env = "STEPWISE_DEFINITIONS")]
    definitions: Option<PathBuf>,
    /// How long a workflow tool call waits for its run to finish, pause or fail before it
    /// answers with the run's id and status (the run goes on).
    #[arg(long, default_value = "30s")]
    wait: String,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    scripts: super::scripts::ScriptArgs,
}

pub fn mcp(args: &McpArgs) -> Outcome {
    let wait = match crate::duration::parse(&args.wait) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: --wait: {e}");
            return Outcome::CouldNotRun;
        }
    };
    if let Some(Holder::Server(url)) = holder(&args.db.db) {
        eprintln!(
            "error: the stepwise server at {url} serves {}: point your MCP client at {url}/mcp (Streamable HTTP, with an API key) instead",
            args.db.db.display()
        );
        return Outcome::CouldNotRun;
    }
    with_engine_scripts(&args.db, &args.scripts, |engine| async move {
        if let Some(dir) = &args.definitions {
            let triggers = Triggers::new(engine.clone(), DEFAULT_WORKSPACE);
            super::serve::watch_definitions(&engine, &triggers, dir).await;
        }
        eprintln!(
            "stepwise MCP server on stdio (database {}, workspace {DEFAULT_WORKSPACE})",
            args.db.db.display()
        );
        let server = McpServer::stdio(engine.clone(), DEFAULT_WORKSPACE, wait);
        let outcome = match server.serve(rmcp::transport::stdio()).await {
            Ok(running) => {
                tokio::select! {
                    r = running.waiting() => match r {
                        Ok(_) => Outcome::Ok,
                        Err(e) => {
                            eprintln!("error: {e}");
                            Outcome::CouldNotRun
                        }
                    },
                    () = shutdown_signal() => Outcome::Ok,
                }
            }
            Err(e) => {
                eprintln!("error: the MCP handshake failed: {e}");
                Outcome::CouldNotRun
            }
        };
        // In-flight steps are left RUNNING and resume at the next start; commits are finished.
        engine.shutdown().await;
        outcome
    })
}
