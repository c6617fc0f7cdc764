//! `stepwise run FILE_OR_ID --input JSON [--wait]` and `stepwise worker`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use super::Outcome;
use super::local::{DbArgs, with_engine_scripts};
use crate::diagnostics::render_human;
use crate::engine::{CreateRun, Engine, EngineError};
use crate::model::{RunStatus, StepStatus};
use crate::store::{DEFAULT_WORKSPACE, RunRecord};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A workflow file (it is linted and stored), or the id of a stored definition.
    workflow: String,
    /// The run's input as JSON, or @FILE to read it from a file.
    #[arg(long, default_value = "{}")]
    input: String,
    /// A key that makes a repeated command return the existing run.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Keep going through `wait` timers until the run is COMPLETED, FAILED or CANCELLED (or
    /// needs a decision or a signal, which this process cannot receive). Without it, the
    /// command returns as soon as the run pauses or waits.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    scripts: super::scripts::ScriptArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Exit once no run is PENDING or RUNNING.
    #[arg(long)]
    exit_when_idle: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    scripts: super::scripts::ScriptArgs,
}

pub fn read_json_arg(text: &str, what: &str) -> Result<Value, String> {
    let text = match text.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?
        }
        None => text.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| format!("{what} is not valid JSON: {e}"))
}

/// A workflow file whose agents call tools: store the workflows it starts that lie beside
/// it first (as `stepwise test` does), since storing it checks its tools against them.
/// `false` when one of them is refused (its diagnostics are printed).
async fn apply_tools_beside(engine: &Engine, path: &str) -> bool {
    let Ok(root) = crate::testing::files::read_workflow(std::path::Path::new(path)) else {
        // Applying the file itself reports what is wrong with it.
        return true;
    };
    if !crate::validate::tools::has_tools(&root.definition) {
        return true;
    }
    let children = crate::testing::files::children_of(&root);
    for w in crate::validate::tools::dependency_order(children, |w| Some(&w.definition)) {
        let name = w.path.display().to_string();
        match engine
            .apply_definition(DEFAULT_WORKSPACE, &name, &w.source)
            .await
        {
            Ok(Ok((rec, true))) => {
                eprintln!("stored {name} ({} version {})", rec.slug, rec.version)
            }
            Ok(Ok(_)) => {}
            Ok(Err(rejected)) => {
                let color = super::stderr_color();
                for d in &rejected.diagnostics {
                    eprint!("{}", render_human(&rejected.file, d, color, 100));
                }
                return false;
            }
            Err(e) => {
                eprintln!("error: cannot store {name}: {e}");
                return false;
            }
        }
    }
    true
}

pub fn run(args: &RunArgs) -> Outcome {
    let input = match read_json_arg(&args.input, "--input") {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::CouldNotRun;
        }
    };
    with_engine_scripts(&args.db, &args.scripts, |engine| async move {
        let outcome = run_on(&engine, args, input).await;
        // Steps this engine started (this run's, and those of runs it recovered) finish and
        // are committed before the process exits, so no later command starts them again.
        let _ = engine.until_idle().await;
        engine.shutdown().await;
        outcome
    })
}

async fn run_on(engine: &Engine, args: &RunArgs, input: Value) -> Outcome {
    let definition = if PathBuf::from(&args.workflow).is_file() {
        let source = match std::fs::read_to_string(&args.workflow) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", args.workflow);
                return Outcome::CouldNotRun;
            }
        };
        if !apply_tools_beside(engine, &args.workflow).await {
            return Outcome::Failed;
        }
        match engine
            .apply_definition(DEFAULT_WORKSPACE, &args.workflow, &source)
            .await
        {
            Ok(Ok((rec, _))) => rec.version_id,
            Ok(Err(rejected)) => {
                let color = super::stderr_color();
                for d in &rejected.diagnostics {
                    eprint!("{}", render_human(&rejected.file, d, color, 100));
                }
                return Outcome::Failed;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::CouldNotRun;
            }
        }
    } else {
        args.workflow.clone()
    };
    let mut updates = engine.subscribe();
    let created = engine
        .create_run(CreateRun {
            workspace_id: DEFAULT_WORKSPACE.into(),
            definition,
            input,
            idempotency_key: args.idempotency_key.clone(),
            trigger: json!({"kind": "cli", "label": "CLI", "actor": "cli"}),
        })
        .await;
    let run = match created {
        Ok((run, _)) => run,
        Err(e) => {
            report_engine_error(&e);
            return Outcome::Failed;
        }
    };
    eprintln!("run {} ({})", run.id, run.definition_slug);
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let mut status = run.status;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        if status.is_terminal() {
            break;
        }
        if status.is_suspended() {
            // The update may be older than the run: read it as it is now.
            let Ok(current) = engine.run(DEFAULT_WORKSPACE, &run.id).await else {
                break;
            };
            status = current.status;
            let on_timer = current
                .pending_action
                .as_ref()
                .is_some_and(|p| p["type"] == "wait");
            // Only a timer can move the run on while this process holds the database.
            if status.is_terminal() || (status.is_suspended() && !(args.wait && on_timer)) {
                break;
            }
        }
        tokio::select! {
            u = updates.recv() => match u {
                Ok(u) if u.run_id == run.id => match u.step {
                    Some((step, s)) => progress.step(&step, s),
                    // Only run-level updates carry the run's committed status.
                    None => status = u.status,
                },
                Ok(_) => {}
                Err(_) => {
                    status = engine.run(DEFAULT_WORKSPACE, &run.id).await.map_or(status, |r| r.status);
                }
            },
            _ = &mut ctrl_c => {
                progress.finish();
                eprintln!("interrupted: run {} stays {status} and continues with `stepwise worker` or `stepwise serve`", run.id);
                engine.shutdown().await;
                return Outcome::Failed;
            }
        }
    }
    progress.finish();
    match engine.run(DEFAULT_WORKSPACE, &run.id).await {
        Ok(r) => print_result(&r),
        Err(e) => {
            report_engine_error(&e);
            Outcome::Failed
        }
    }
}

fn print_result(r: &RunRecord) -> Outcome {
    match r.status {
        RunStatus::Completed => {
            eprintln!("COMPLETED");
            println!(
                "{}",
                serde_json::to_string_pretty(r.output.as_ref().unwrap_or(&Value::Null))
                    .unwrap_or_default()
            );
            Outcome::Ok
        }
        RunStatus::Paused | RunStatus::Waiting => {
            eprintln!(
                "{}: {}",
                r.status,
                r.pending_action
                    .as_ref()
                    .map_or_else(String::new, |p| p.to_string())
            );
            eprintln!(
                "the run is saved; it continues once resumed, under `stepwise serve` or `stepwise worker`"
            );
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"id": r.id, "status": r.status, "pendingAction": r.pending_action})
                )
                .unwrap_or_default()
            );
            Outcome::Ok
        }
        status => {
            eprintln!("{status}");
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"id": r.id, "status": status, "error": r.error})
                )
                .unwrap_or_default()
            );
            Outcome::Failed
        }
    }
}

pub fn report_engine_error(e: &EngineError) {
    match e {
        EngineError::Validation { message, details } => {
            eprintln!("error: {message}");
            if let Some(problems) = details.get("problems").and_then(Value::as_array) {
                for p in problems {
                    eprintln!(
                        "  {}: {}",
                        p["path"].as_str().unwrap_or(""),
                        p["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
        other => eprintln!("error: {other}"),
    }
}

/// Step progress on stderr: one live line per step on a terminal, plain lines otherwise.
struct Progress {
    tty: bool,
    steps: BTreeMap<usize, (String, StepStatus, Instant, Option<Duration>)>,
    order: Vec<String>,
    drawn: usize,
}

impl Progress {
    fn new(tty: bool) -> Self {
        Self {
            tty,
            steps: BTreeMap::new(),
            order: Vec::new(),
            drawn: 0,
        }
    }

    fn step(&mut self, step: &str, status: StepStatus) {
        let idx = match self.order.iter().position(|s| s == step) {
            Some(i) => i,
            None => {
                self.order.push(step.to_string());
                self.order.len() - 1
            }
        };
        let entry = self
            .steps
            .entry(idx)
            .or_insert_with(|| (step.to_string(), status, Instant::now(), None));
        entry.1 = status;
        if !matches!(
            status,
            StepStatus::Running | StepStatus::Pending | StepStatus::Waiting
        ) {
            entry.3 = Some(entry.2.elapsed());
        }
        if self.tty {
            self.redraw();
        } else {
            eprintln!("{}", line(entry));
        }
    }

    fn redraw(&mut self) {
        let mut err = std::io::stderr().lock();
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn);
        }
        for e in self.steps.values() {
            let _ = writeln!(err, "\x1b[2K{}", line(e));
        }
        self.drawn = self.steps.len();
    }

    fn finish(&mut self) {
        let _ = std::io::stderr().flush();
    }
}

fn line(e: &(String, StepStatus, Instant, Option<Duration>)) -> String {
    let (name, status, _, took) = e;
    let mark = match status {
        StepStatus::Completed => "✓",
        StepStatus::Failed => "✗",
        StepStatus::Skipped => "-",
        StepStatus::Waiting => "⏸",
        StepStatus::Cancelled => "⊘",
        StepStatus::Running | StepStatus::Pending => "…",
    };
    match took {
        Some(d) => format!("{mark} {name:<24} {status} ({} ms)", d.as_millis()),
        None => format!("{mark} {name:<24} {status}"),
    }
}

pub fn worker(args: &WorkerArgs) -> Outcome {
    with_engine_scripts(&args.db, &args.scripts, |engine| async move {
        tracing::info!("worker running on {}", args.db.db.display());
        if let Err(e) = crate::bulk::resume(&engine).await {
            eprintln!("error: cannot resume bulk operations: {e}");
        }
        let mut ctrl_c = std::pin::pin!(shutdown_signal());
        loop {
            tokio::select! {
                _ = &mut ctrl_c => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if args.exit_when_idle && idle(&engine).await {
                        break;
                    }
                }
            }
        }
        engine.shutdown().await;
        Outcome::Ok
    })
}

async fn idle(engine: &Engine) -> bool {
    let store = engine.store().clone();
    tokio::task::spawn_blocking(move || {
        store.run_ids_with_status(&[RunStatus::Pending, RunStatus::Running])
    })
    .await
    .ok()
    .and_then(Result::ok)
    .is_some_and(|ids| ids.is_empty())
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
