//! `runs …`: list, start, get, cancel, resume, retry, hooks. Seed 000's shapes name the
//! workflow first (`runs list WORKFLOW`, `runs get WORKFLOW RUN_ID`); both forms work.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::backend::{Access, Backend};
use super::print::print_reply;
use super::{ClientArgs, path_segment, query, with_backend};
use crate::cli::Outcome;
use crate::cli::run::read_json_arg;

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    command: RunsCommand,
    #[command(flatten)]
    client: ClientArgs,
}

/// A run, optionally after its workflow: `RUN_ID` or `WORKFLOW RUN_ID`.
#[derive(Debug, Args)]
struct RunRef {
    /// The run's id, optionally after its workflow (slug or wfdef_ id), which it must belong to.
    #[arg(value_name = "RUN_ID", num_args = 1..=2, required = true)]
    ids: Vec<String>,
}

impl RunRef {
    fn id(&self) -> &str {
        self.ids.last().map_or("", String::as_str)
    }

    fn workflow(&self) -> Option<&str> {
        match self.ids.as_slice() {
            [workflow, _] => Some(workflow),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// List runs, newest first.
    #[command(
        override_usage = "stepwise runs list [WORKFLOW] [--status STATUS] [--page N] [--page-size N]"
    )]
    List {
        /// Only this workflow's runs (a definition slug or wfdef_ id), as --definition.
        workflow: Option<String>,
        /// e.g. failed, WAITING.
        #[arg(long)]
        status: Option<String>,
        /// A definition slug or wfdef_ id.
        #[arg(long)]
        definition: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u64,
        #[arg(long, default_value_t = 20)]
        page_size: u64,
    },
    /// Start a run.
    Start {
        definition: String,
        /// JSON, or @FILE.
        #[arg(long, default_value = "{}")]
        input: String,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait (up to 5 minutes) until it finishes, pauses or waits.
        #[arg(long)]
        wait: bool,
    },
    /// Show a run.
    #[command(override_usage = "stepwise runs get [WORKFLOW] <RUN_ID> [--include LIST] [--wait]")]
    Get {
        #[command(flatten)]
        run: RunRef,
        /// Comma-separated: trigger, steps, trace, usage.
        #[arg(long)]
        include: Option<String>,
        /// Wait (up to 5 minutes) until it finishes, pauses or waits.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a run, or every run a filter selects (--filter, see --dry-run).
    #[command(
        override_usage = "stepwise runs cancel [WORKFLOW] <RUN_ID>\n       stepwise runs cancel --filter KEY=VALUE... [--dry-run]"
    )]
    Cancel {
        #[arg(value_name = "RUN_ID", num_args = 1..=2, required_unless_present = "filter")]
        ids: Vec<String>,
        #[command(flatten)]
        bulk: super::bulk::BulkArgs,
    },
    /// Resume a run: a signal (--signal, --payload) or an approval (--step, --input).
    #[command(
        override_usage = "stepwise runs resume [WORKFLOW] <RUN_ID> (--step STEP --input OPTION | --signal TYPE [--payload JSON])"
    )]
    Resume {
        #[command(flatten)]
        run: RunRef,
        #[arg(long, conflicts_with_all = ["step", "input"])]
        signal: Option<String>,
        /// JSON, or @FILE.
        #[arg(long, requires = "signal")]
        payload: Option<String>,
        #[arg(long, requires = "input")]
        step: Option<String>,
        /// The chosen option (JSON, or a bare word such as approve).
        #[arg(long, requires = "step")]
        input: Option<String>,
    },
    /// Retry a FAILED run from its failed step, or every FAILED run a filter selects.
    #[command(
        override_usage = "stepwise runs retry [WORKFLOW] <RUN_ID>\n       stepwise runs retry --filter KEY=VALUE... [--dry-run]"
    )]
    Retry {
        #[arg(value_name = "RUN_ID", num_args = 1..=2, required_unless_present = "filter")]
        ids: Vec<String>,
        #[command(flatten)]
        bulk: super::bulk::BulkArgs,
    },
    /// Write a run's full history (the run, its steps and trace, the definition version it
    /// is pinned to) as JSON, for `stepwise replay` and `stepwise test --from-run`.
    #[command(
        override_usage = "stepwise runs export [WORKFLOW] <RUN_ID> [--include LIST] [--out FILE]"
    )]
    Export {
        #[command(flatten)]
        run: RunRef,
        /// Comma-separated: steps, trace, trigger, usage.
        #[arg(long, default_value = "steps,trace")]
        include: String,
        /// The file to write (default: stdout).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// A run's pending hooks: their tokens and resume URLs.
    #[command(override_usage = "stepwise runs hooks [WORKFLOW] <RUN_ID>")]
    Hooks {
        #[command(flatten)]
        run: RunRef,
    },
}

impl RunsCommand {
    fn access(&self) -> Access {
        match self {
            RunsCommand::List { .. } | RunsCommand::Hooks { .. } | RunsCommand::Export { .. } => {
                Access::Read
            }
            RunsCommand::Get { wait, .. } => {
                if *wait {
                    Access::Watch
                } else {
                    Access::Read
                }
            }
            RunsCommand::Start { .. }
            | RunsCommand::Cancel { .. }
            | RunsCommand::Resume { .. }
            | RunsCommand::Retry { .. } => Access::Run,
        }
    }

    fn run_ref(&self) -> Option<RunRef> {
        match self {
            RunsCommand::Get { run, .. }
            | RunsCommand::Resume { run, .. }
            | RunsCommand::Hooks { run }
            | RunsCommand::Export { run, .. } => Some(RunRef {
                ids: run.ids.clone(),
            }),
            RunsCommand::Cancel { ids, .. } | RunsCommand::Retry { ids, .. } => {
                (!ids.is_empty()).then(|| RunRef { ids: ids.clone() })
            }
            RunsCommand::List { .. } | RunsCommand::Start { .. } => None,
        }
    }
}

/// A run given after a workflow must belong to it; reported here when it does not.
fn wrong_workflow(run: &Value, workflow: &str) -> Option<Outcome> {
    let slug = run["definitionSlug"].as_str().unwrap_or_default();
    if slug == workflow || run["definitionId"].as_str() == Some(workflow) {
        return None;
    }
    eprintln!(
        "error: run `{}` belongs to workflow `{slug}`, not `{workflow}`",
        run["id"].as_str().unwrap_or_default()
    );
    Some(Outcome::Failed)
}

/// Check the workflow of a run given as `WORKFLOW RUN_ID` before changing or listing for it.
async fn check_workflow(backend: &Backend, run: &RunRef) -> Result<Option<Outcome>, String> {
    let Some(workflow) = run.workflow() else {
        return Ok(None);
    };
    let path = format!("/v1/workflow-runs/{}?include=", path_segment(run.id()));
    let reply = backend.call("GET", &path, None).await?;
    if !(200..300).contains(&reply.status) {
        return Ok(Some(print_reply(
            &reply,
            super::OutputFormat::Json,
            false,
            "run",
        )));
    }
    Ok(wrong_workflow(&reply.body["data"], workflow))
}

fn get_path(run: &RunRef, include: &Option<String>, wait: bool) -> String {
    format!(
        "/v1/workflow-runs/{}{}",
        path_segment(run.id()),
        query(&[
            ("include", include.clone()),
            ("wait", wait.then(|| "300s".to_string()))
        ])
    )
}

fn request(args: &RunsArgs) -> Result<(&'static str, String, Option<Value>), String> {
    Ok(match &args.command {
        RunsCommand::List {
            workflow,
            status,
            definition,
            page,
            page_size,
        } => {
            let definition = match (workflow, definition) {
                (Some(w), Some(d)) if w != d => {
                    return Err(format!(
                        "the workflow `{w}` and --definition `{d}` differ; give one of them"
                    ));
                }
                (w, d) => w.clone().or_else(|| d.clone()),
            };
            (
                "GET",
                format!(
                    "/v1/workflow-runs{}",
                    query(&[
                        ("status", status.clone()),
                        ("definitionId", definition),
                        ("page", Some(page.to_string())),
                        ("pageSize", Some(page_size.to_string())),
                    ])
                ),
                None,
            )
        }
        RunsCommand::Start {
            definition,
            input,
            idempotency_key,
            wait,
        } => {
            let input = read_json_arg(input, "--input")?;
            let mut body = json!({"definitionId": definition, "input": input});
            if let Some(k) = idempotency_key {
                body["idempotencyKey"] = json!(k);
            }
            (
                "POST",
                format!(
                    "/v1/workflow-runs{}",
                    query(&[("wait", wait.then(|| "300s".to_string()))])
                ),
                Some(body),
            )
        }
        RunsCommand::Get { run, include, wait } => ("GET", get_path(run, include, *wait), None),
        RunsCommand::Export { run, include, .. } => {
            let mut include = include.clone();
            if !include.split(',').any(|i| i.trim() == "steps") {
                include.push_str(",steps");
            }
            ("GET", get_path(run, &Some(include), false), None)
        }
        RunsCommand::Cancel { ids, bulk } | RunsCommand::Retry { ids, bulk } => {
            let action = if matches!(args.command, RunsCommand::Cancel { .. }) {
                "cancel"
            } else {
                "retry"
            };
            if !bulk.filter.is_empty() {
                return Ok(("POST", super::bulk::PATH.into(), Some(bulk.body(action)?)));
            }
            let id = ids.last().map_or("", String::as_str);
            (
                "POST",
                format!("/v1/workflow-runs/{}/{action}", path_segment(id)),
                None,
            )
        }
        RunsCommand::Hooks { run } => (
            "GET",
            format!("/v1/workflow-runs/{}/hooks", path_segment(run.id())),
            None,
        ),
        RunsCommand::Resume {
            run,
            signal,
            payload,
            step,
            input,
        } => {
            let body = match (signal, step) {
                (Some(signal), _) => {
                    let payload = payload
                        .as_deref()
                        .map(|p| read_json_arg(p, "--payload"))
                        .transpose()?;
                    json!({"signalType": signal, "payload": payload.unwrap_or(json!({}))})
                }
                (None, Some(step)) => {
                    let raw = input.clone().unwrap_or_default();
                    // A bare word is the option itself.
                    let value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
                    json!({"step": step, "input": value})
                }
                (None, None) => {
                    return Err("give --signal (and --payload) or --step and --input".to_string());
                }
            };
            (
                "POST",
                format!("/v1/workflow-runs/{}/resume", path_segment(run.id())),
                Some(body),
            )
        }
    })
}

pub fn runs(args: &RunsArgs) -> Outcome {
    // Bad arguments are refused before anything opens the store.
    let (method, mut path, body) = match request(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::CouldNotRun;
        }
    };
    with_backend(&args.client, args.command.access(), |backend| async move {
        let o = args.client.output;
        if let (RunsCommand::Get { run, include, .. }, Some(_)) = (&args.command, backend.local()) {
            // Nothing changes a run on a store opened read-only: waiting would only stall.
            path = get_path(run, include, false);
        }
        let run = args.command.run_ref();
        // `get` checks the workflow on the run it fetches anyway.
        if let Some(run) = run.filter(|_| !matches!(args.command, RunsCommand::Get { .. }))
            && let Some(outcome) = check_workflow(&backend, &run).await?
        {
            return Ok(outcome);
        }
        if path == super::bulk::PATH {
            return super::bulk::run(&backend, body, o).await;
        }
        let reply = backend
            .call(
                method,
                &path,
                body.map(|b| ("application/json", b.to_string())),
            )
            .await?;
        if let (RunsCommand::Get { run, .. }, true) =
            (&args.command, (200..300).contains(&reply.status))
            && let Some(workflow) = run.workflow()
            && let Some(outcome) = wrong_workflow(&reply.body["data"], workflow)
        {
            return Ok(outcome);
        }
        if let RunsCommand::Export { out, .. } = &args.command {
            return super::replay::write_export(&backend, &reply, out).await;
        }
        let outcome = print_reply(
            &reply,
            o,
            matches!(args.command, RunsCommand::List { .. }),
            "run",
        );
        if let (RunsCommand::Hooks { run }, Some(local)) = (&args.command, backend.local())
            && local.paths_only
            && reply.body["data"].as_array().is_some_and(|h| !h.is_empty())
        {
            eprintln!(
                "note: no server runs on {db}, so resume URLs are paths. Answer here with \
                 `stepwise runs resume {id} --step STEP --input OPTION` (approval) or \
                 `--signal TYPE --payload JSON` (external_event); or start `stepwise serve` on \
                 {db} and use its address before the path (--public-url or STEPWISE_PUBLIC_URL \
                 prints full URLs).",
                db = local.db().display(),
                id = run.id(),
            );
        }
        Ok(outcome)
    })
}
