//! `stepwise graph FILE --format mermaid|dot`

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{Outcome, stderr_color};
use crate::compile::compile;
use crate::diagnostics::{SourceFile, render_human};
use crate::validate::lint;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The workflow file.
    file: PathBuf,
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    format: GraphFormat,
}

pub fn run(args: &GraphArgs) -> Outcome {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.file.display());
            return Outcome::CouldNotRun;
        }
    };
    let file = SourceFile::new(args.file.display().to_string(), text);
    let result = lint(&file);
    let color = stderr_color();
    for d in &result.diagnostics {
        eprint!("{}", render_human(&file, d, color, 100));
    }
    let Some(def) = result.definition else {
        return Outcome::Failed;
    };
    match compile(def) {
        Ok(plan) => {
            print!(
                "{}",
                match args.format {
                    GraphFormat::Mermaid => plan.to_mermaid(),
                    GraphFormat::Dot => plan.to_dot(),
                }
            );
            Outcome::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Outcome::Failed
        }
    }
}
