//! `definitions …` and `history …`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::backend::Access;
use super::print::print_reply;
use super::{ClientArgs, path_segment, query, with_backend};
use crate::cli::Outcome;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    command: HistoryCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum HistoryCommand {
    /// Runs across workflows, newest first.
    List {
        /// Only `workflow` is recorded.
        #[arg(long, default_value = "workflow")]
        kind: String,
        /// e.g. failed, COMPLETED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        definition: Option<String>,
        /// Created at or after (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Created before (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u64,
        #[arg(long, default_value_t = 20)]
        page_size: u64,
    },
    /// Everything about one run: input, output or error, steps with attempts, usage,
    /// trigger, timing and trace.
    Get { id: String },
}

pub fn history(args: &HistoryArgs) -> Outcome {
    with_backend(&args.client, Access::Read, |backend| async move {
        let o = args.client.output;
        match &args.command {
            HistoryCommand::List {
                kind,
                status,
                definition,
                from,
                to,
                page,
                page_size,
            } => {
                let path = format!(
                    "/v1/history{}",
                    query(&[
                        ("kind", Some(kind.clone())),
                        ("status", status.clone()),
                        ("definitionId", definition.clone()),
                        ("from", from.clone()),
                        ("to", to.clone()),
                        ("page", Some(page.to_string())),
                        ("pageSize", Some(page_size.to_string())),
                    ])
                );
                let r = backend.call("GET", &path, None).await?;
                Ok(print_reply(&r, o, true, "history"))
            }
            HistoryCommand::Get { id } => {
                let path = format!(
                    "/v1/workflow-runs/{}?include=trigger,steps,trace,usage",
                    path_segment(id)
                );
                let r = backend.call("GET", &path, None).await?;
                Ok(print_reply(&r, o, false, "run"))
            }
        }
    })
}

#[derive(Debug, Args)]
pub struct DefinitionsArgs {
    #[command(subcommand)]
    command: DefinitionsCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum DefinitionsCommand {
    /// The latest version of every definition.
    List,
    /// A definition and its versions.
    Get { id: String },
    /// Lint and store workflow files (directories are searched for *.yaml, *.yml).
    Apply {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

pub fn definitions(args: &DefinitionsArgs) -> Outcome {
    let access = match args.command {
        DefinitionsCommand::Apply { .. } => Access::Apply,
        _ => Access::Read,
    };
    with_backend(&args.client, access, |backend| async move {
        let o = args.client.output;
        match &args.command {
            DefinitionsCommand::List => {
                let r = backend
                    .call("GET", "/v1/workflow-definitions", None)
                    .await?;
                Ok(print_reply(&r, o, true, "definition"))
            }
            DefinitionsCommand::Get { id } => {
                let r = backend
                    .call(
                        "GET",
                        &format!("/v1/workflow-definitions/{}", path_segment(id)),
                        None,
                    )
                    .await?;
                Ok(print_reply(&r, o, false, "definition"))
            }
            DefinitionsCommand::Apply { paths } => {
                let (files, problems) = crate::cli::lint::collect_files(paths);
                if let Some((p, e)) = problems.first() {
                    return Err(format!("cannot read {}: {e}", p.display()));
                }
                let mut outcome = Outcome::Ok;
                for f in crate::cli::lint::tools_first(files) {
                    let source = std::fs::read_to_string(&f)
                        .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
                    let r = backend
                        .call(
                            "POST",
                            "/v1/workflow-definitions",
                            Some(("application/yaml", source)),
                        )
                        .await?;
                    if (200..300).contains(&r.status) {
                        let d = &r.body["data"];
                        eprintln!(
                            "{} {}: {} version {} ({})",
                            if r.status == 201 {
                                "applied"
                            } else {
                                "unchanged"
                            },
                            f.display(),
                            d["definitionId"].as_str().unwrap_or(""),
                            d["version"],
                            d["id"].as_str().unwrap_or("")
                        );
                    } else {
                        eprintln!(
                            "refused {}: {}",
                            f.display(),
                            r.body["error"]["message"].as_str().unwrap_or("")
                        );
                        for d in r.body["error"]["details"]["diagnostics"]
                            .as_array()
                            .into_iter()
                            .flatten()
                        {
                            eprintln!(
                                "  {}:{}:{}: {}: {}",
                                f.display(),
                                d["line"],
                                d["column"],
                                d["code"].as_str().unwrap_or(""),
                                d["message"].as_str().unwrap_or("")
                            );
                        }
                        outcome = Outcome::Failed;
                    }
                }
                Ok(outcome)
            }
        }
    })
}
