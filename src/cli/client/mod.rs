//! The CLI client: `runs …`, `signals …`, `definitions …` and `history …` against a server
//! (`--server`), or, with none given, against the embedded store through the very same
//! router, in process.
//!
//! On the embedded store a read never executes a step (the store is opened read-only), and a
//! command that changes runs either goes to the server holding the database or runs the
//! engine here until every step it started is committed; it says which on stderr.

mod backend;
mod bulk;
mod catalog;
mod print;
mod replay;
mod runs;
mod signals;

use clap::{Args, ValueEnum};

pub use catalog::{DefinitionsArgs, HistoryArgs, definitions, history};
pub use replay::{ReplayArgs, replay};
pub use runs::{RunsArgs, runs};
pub use signals::{SignalsArgs, signals};

use super::Outcome;
use super::local::{DbArgs, runtime};
use backend::{Access, Backend};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// A stepwise server; without it, the embedded store is used (and changes go to the
    /// server serving that store, if one does).
    #[arg(long, env = "STEPWISE_SERVER", global = true)]
    server: Option<String>,
    /// The API key for the server.
    #[arg(long, env = "STEPWISE_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// How results are printed.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, global = true)]
    output: OutputFormat,
    /// On the embedded store: the base URL the server is reached at, for hook resume URLs.
    #[arg(long, env = "STEPWISE_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    #[command(flatten)]
    db: DbArgs,
}

/// Open the backend the command needs, run `f` on it, then let the embedded engine finish.
fn with_backend<F, Fut>(c: &ClientArgs, access: Access, f: F) -> Outcome
where
    F: FnOnce(Backend) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, String>>,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::CouldNotRun;
        }
    };
    rt.block_on(async move {
        let backend = match Backend::open(c, access) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::CouldNotRun;
            }
        };
        let result = f(backend.clone()).await;
        backend.finish().await;
        match result {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                Outcome::CouldNotRun
            }
        }
    })
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn path_segment(id: &str) -> String {
    urlencode(id)
}

/// A run's `waitingOn` for people: "Waiting on hook (review)", "Sleeping (nap) until T".
fn waiting_on(w: &serde_json::Value) -> Option<String> {
    let label = w["label"].as_str()?;
    let mut s = label.to_string();
    if let Some(step) = w["step"].as_str() {
        s.push_str(&format!(" ({step})"));
    }
    if let Some(until) = w["until"].as_str() {
        s.push_str(&format!(" until {until}"));
    }
    Some(s)
}
