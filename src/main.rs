use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = stepwise::cli::Cli::parse();
    stepwise::cli::run(cli).into()
}
