//! The command line: parse arguments, run a command, turn its outcome into an exit code.
//! This is the only layer that prints for humans.

mod client;
mod from_run;
mod graph;
mod keys;
pub mod lint;
pub mod local;
mod mcp;
mod migrate;
mod run;
pub mod scripts;
mod serve;
mod table;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "stepwise",
    version,
    about = "A durable workflow engine: YAML workflows that never lose a step."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check workflow definitions and report every problem with its line and column.
    Lint(lint::LintArgs),
    /// Print the JSON Schema of the definition format (for editors such as yaml-language-server).
    Schema,
    /// Print a workflow's step graph as Mermaid or Graphviz DOT.
    Graph(graph::GraphArgs),
    /// Run a workflow on the embedded engine and print its result.
    Run(run::RunArgs),
    /// Run the engine without the HTTP API: continue unfinished runs, fire timers.
    Worker(run::WorkerArgs),
    /// Serve the HTTP API and run the engine, on the embedded SQLite store.
    Serve(serve::ServeArgs),
    /// Serve the Model Context Protocol on stdio: every workflow is a tool (docs/mcp.md).
    Mcp(mcp::McpArgs),
    /// Manage API keys.
    Keys(keys::KeysArgs),
    /// Start, inspect, resume, cancel and retry runs.
    Runs(client::RunsArgs),
    /// Send signals to the runs waiting for them, by type and correlation value.
    Signals(client::SignalsArgs),
    /// List, show and apply workflow definitions.
    Definitions(client::DefinitionsArgs),
    /// Run history: list runs across workflows, show one in full.
    History(client::HistoryArgs),
    /// Run workflow tests (*.test.yaml): mocked steps, events on a virtual clock.
    Test(test::TestArgs),
    /// Check recorded runs against an edited definition: will the runs in flight survive it?
    Replay(client::ReplayArgs),
    /// Copy an SQLite store (definitions, runs with their history, keys, trigger state)
    /// into PostgreSQL, in one transaction (docs/scale-out.md).
    MigrateStore(migrate::MigrateStoreArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LintFormat {
    Human,
    Json,
    Github,
}

/// How a command ended, as the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The command ran and found problems (lint errors, a failed run).
    Failed,
    /// The command could not run (bad arguments, unreadable files).
    CouldNotRun,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::CouldNotRun => ExitCode::from(2),
        }
    }
}

pub fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Lint(args) => lint::run(&args),
        Command::Schema => {
            print!("{}", crate::validate::schema::WORKFLOW_SCHEMA);
            Outcome::Ok
        }
        Command::Graph(args) => graph::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Worker(args) => run::worker(&args),
        Command::Serve(args) => serve::serve(&args),
        Command::Mcp(args) => mcp::mcp(&args),
        Command::Keys(args) => keys::run(&args),
        Command::Runs(args) => client::runs(&args),
        Command::Signals(args) => client::signals(&args),
        Command::Definitions(args) => client::definitions(&args),
        Command::History(args) => client::history(&args),
        Command::Test(args) => test::run(&args),
        Command::Replay(args) => client::replay(&args),
        Command::MigrateStore(args) => migrate::run(&args),
    }
}

/// Whether stderr gets colours: a terminal, and `NO_COLOR` unset.
pub(crate) fn stderr_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// The value of a boolean flag an environment variable may set (`STEPWISE_ALLOW_SCRIPTS`,
/// `STEPWISE_INSECURE_NO_AUTH`, `STEPWISE_METRICS_PUBLIC`): `1`/`0`, `true`/`false`,
/// `yes`/`no`, `on`/`off` (any case); empty is false, like an unset variable. The flag alone
/// is true, and `--flag=false` overrides the variable. Anything else is refused, so a typo
/// does not silently turn a switch on or off.
pub(crate) fn flag_value(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "y" | "t" => Ok(true),
        "" | "0" | "false" | "no" | "off" | "n" | "f" => Ok(false),
        _ => Err("expected 1/0, true/false, yes/no or on/off".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boolean_flags_take_the_usual_words() {
        for v in ["1", "true", "TRUE", "yes", "on", " On "] {
            assert_eq!(flag_value(v), Ok(true), "{v}");
        }
        for v in ["", "0", "false", "False", "no", "off"] {
            assert_eq!(flag_value(v), Ok(false), "{v}");
        }
        assert!(flag_value("ture").is_err());
        assert!(flag_value("2").is_err());
    }

    #[test]
    fn a_flag_alone_is_true_and_an_explicit_value_wins() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["stepwise", "serve"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Serve(s)) => Ok(s.flags()),
                Ok(_) => Err("not serve".to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(parse(&[]), Ok((false, false, false)));
        assert_eq!(
            parse(&["--insecure-no-auth", "--metrics-public", "--allow-scripts"]),
            Ok((true, true, true))
        );
        assert_eq!(
            parse(&["--metrics-public=on", "--allow-scripts=0"]),
            Ok((false, true, false))
        );
        // The flag never takes the next argument as its value.
        assert!(parse(&["--metrics-public", "false"]).is_err());
        let e = parse(&["--metrics-public=maybe"]).unwrap_err();
        assert!(
            e.contains("expected 1/0, true/false, yes/no or on/off"),
            "{e}"
        );
    }
}
