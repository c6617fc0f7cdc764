use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Logs go to stderr; stdout carries only data. RUST_LOG overrides the level.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = stepwise::cli::Cli::parse();
    stepwise::cli::run(cli).into()
}
