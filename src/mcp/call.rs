//! `tools/call`: a workflow tool starts a run and waits (bounded) for its outcome; the
//! management tools read, cancel, retry and resume runs. Both go through the same `Engine`
//! calls as the REST API. A problem the agent can fix (bad input, a run in the wrong
//! state) is a tool result with `isError`, which the model reads; an unknown tool is a
//! protocol error.

use std::time::Duration;

use rmcp::ErrorData;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, MetaObject};
use serde_json::{Value, json};

use super::{Scope, tools, view};
use crate::engine::{CreateRun, Engine, EngineError, Resume};
use crate::model::{DEFINITION_PREFIX, RunStatus};
use crate::store::{RunQuery, RunRecord};

/// Who calls a tool.
pub struct Caller {
    pub scope: Scope,
    /// The MCP client's name: the actor recorded on runs and decisions.
    pub client: String,
}

impl Caller {
    fn ws(&self) -> &str {
        &self.scope.workspace_id
    }
}

/// A tool result the model reads as an error.
fn failure(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// What the model is told when an engine call fails.
fn said(e: EngineError) -> String {
    match e {
        EngineError::Validation { message, details } if !details.is_null() => {
            format!("{message}: {details}")
        }
        EngineError::Internal(cause) => {
            tracing::error!("MCP tool call: internal error: {cause}");
            "internal error".into()
        }
        other => other.to_string(),
    }
}

fn engine_failure(e: EngineError) -> CallToolResult {
    failure(said(e))
}

fn meta(run: &RunRecord) -> Option<MetaObject> {
    let mut m = JsonObject::new();
    m.insert("stepwise/runId".into(), json!(run.id));
    m.insert("stepwise/status".into(), json!(run.status));
    Some(MetaObject(m))
}

/// Wait until the run finishes, pauses or waits, or `wait` passes.
async fn settle(
    engine: &Engine,
    ws: &str,
    run_id: &str,
    wait: Duration,
) -> Result<RunRecord, EngineError> {
    engine
        .wait_for(ws, run_id, wait, |s| s.is_terminal() || s.is_suspended())
        .await
}

/// The answer to a workflow call. `wrapped`: the tool declares an output schema, and wraps
/// the output as `{"result": …}` (`None`: no output schema).
fn outcome(run: &RunRecord, wrapped: Option<bool>, wait: Duration) -> CallToolResult {
    let result = match run.status {
        RunStatus::Completed => {
            let output = run.output.clone().unwrap_or(Value::Null);
            let wrap = wrapped.unwrap_or(!output.is_object());
            CallToolResult::structured(if wrap {
                json!({"result": output})
            } else {
                output
            })
        }
        RunStatus::Failed | RunStatus::Cancelled => {
            let error = run.error.clone().unwrap_or(Value::Null);
            let why = error
                .get("message")
                .and_then(Value::as_str)
                .map_or(String::new(), |m| format!(": {m}"));
            failure(format!(
                "run {} {}{why}\n{}",
                run.id,
                run.status,
                json!({"runId": run.id, "status": run.status, "error": error})
            ))
        }
        _ if wrapped.is_some() => {
            // The tool promises its output schema; anything else must be an error result.
            failure(format!(
                "run {} is still {} after {}: it goes on; follow it with runs_get\n{}",
                run.id,
                run.status,
                crate::duration::format(wait),
                view::progress(run)
            ))
        }
        _ => CallToolResult::structured(view::progress(run)),
    };
    result.with_meta(meta(run))
}

/// Call a workflow tool: start a run of the workflow's latest version, labelled "MCP" with
/// the client as actor, and answer with its outcome.
pub async fn workflow(
    engine: &Engine,
    caller: &Caller,
    name: &str,
    args: JsonObject,
    wait: Duration,
) -> Result<CallToolResult, ErrorData> {
    let unknown = || ErrorData::invalid_params(format!("unknown tool `{name}`"), None);
    if name.starts_with(DEFINITION_PREFIX) {
        return Err(unknown());
    }
    let compiled = match engine.compiled(caller.ws(), name).await {
        Ok(c) => c,
        Err(EngineError::NotFound(_)) => return Err(unknown()),
        Err(e) => return Ok(engine_failure(e)),
    };
    let created = engine
        .create_run(CreateRun {
            workspace_id: caller.ws().to_string(),
            definition: compiled.record.version_id.clone(),
            input: Value::Object(args),
            idempotency_key: None,
            trigger: json!({"kind": "mcp", "label": "MCP", "actor": caller.client, "via": caller.scope.via}),
        })
        .await;
    let run = match created {
        Ok((run, _)) => run,
        Err(e) => return Ok(engine_failure(e)),
    };
    let run = match settle(engine, caller.ws(), &run.id, wait).await {
        Ok(r) => r,
        Err(e) => return Ok(engine_failure(e)),
    };
    let wrapped = tools::output_schema(&compiled.plan.definition).map(|(_, w)| w);
    Ok(outcome(&run, wrapped, wait))
}

/// An argument that must be a non-empty string.
fn text(args: &JsonObject, name: &str) -> Result<String, String> {
    match args.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(format!("`{name}` is required")),
        Some(_) => Err(format!("`{name}` must be a non-empty string")),
    }
}

fn optional_text(args: &JsonObject, name: &str) -> Result<Option<String>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => text(args, name).map(Some),
    }
}

fn integer(args: &JsonObject, name: &str, default: u64, max: u64) -> Result<u64, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("`{name}` must be an integer from 1 to {max}")),
    }
}

/// Call a management tool.
pub async fn manage(
    engine: &Engine,
    caller: &Caller,
    name: &str,
    args: JsonObject,
    wait: Duration,
) -> Result<CallToolResult, ErrorData> {
    // The tool's own arguments only: a misspelt one is said, not ignored.
    let known: &[&str] = match name {
        "runs_list" => &["status", "definitionId", "page", "pageSize"],
        "runs_approve" | "runs_reject" => &["runId", "step", "option"],
        "runs_signal" => &["runId", "signalType", "payload"],
        _ => &["runId"],
    };
    if let Some(k) = args.keys().find(|k| !known.contains(&k.as_str())) {
        return Ok(failure(format!(
            "`{k}` is not an argument of {name}: it takes {}",
            known.join(", ")
        )));
    }
    Ok(manage_inner(engine, caller, name, &args, wait)
        .await
        .unwrap_or_else(failure))
}

async fn manage_inner(
    engine: &Engine,
    caller: &Caller,
    name: &str,
    args: &JsonObject,
    wait: Duration,
) -> Result<CallToolResult, String> {
    let ws = caller.ws();
    if name == "runs_list" {
        return list(engine, ws, args).await;
    }
    let id = text(args, "runId")?;
    let run = match name {
        "runs_get" => {
            let run = engine.run(ws, &id).await.map_err(said)?;
            return detail(engine, &run).await;
        }
        "runs_cancel" => engine.cancel(ws, &id).await,
        "runs_retry" => match engine.retry(ws, &id).await {
            Ok(r) => settle(engine, ws, &r.id, wait).await,
            Err(e) => Err(e),
        },
        "runs_approve" | "runs_reject" => {
            let default = if name == "runs_approve" {
                "approve"
            } else {
                "reject"
            };
            let resume = decision(engine, ws, &id, args, default).await?;
            resume_and_settle(engine, caller, &id, resume, wait).await
        }
        "runs_signal" => {
            let signal_type = text(args, "signalType")?;
            let payload = match args.get("payload") {
                None | Some(Value::Null) => json!({}),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => return Err("`payload` must be an object".into()),
            };
            let resume = Resume::Signal {
                signal_type,
                payload,
            };
            resume_and_settle(engine, caller, &id, resume, wait).await
        }
        other => return Err(format!("unknown management tool `{other}`")),
    };
    let run = run.map_err(said)?;
    Ok(CallToolResult::structured(view::run(&run)).with_meta(meta(&run)))
}

async fn resume_and_settle(
    engine: &Engine,
    caller: &Caller,
    id: &str,
    resume: Resume,
    wait: Duration,
) -> Result<RunRecord, EngineError> {
    let ws = caller.ws();
    engine.resume(ws, id, resume, &caller.client).await?;
    // The answer shows where the decision led: the run's end, or its next pause.
    settle(engine, ws, id, wait).await
}

/// The approval to answer: the step named, else the run's pending approval; the option
/// named, else `default` when the approval offers it.
async fn decision(
    engine: &Engine,
    ws: &str,
    id: &str,
    args: &JsonObject,
    default: &str,
) -> Result<Resume, String> {
    let run = engine.run(ws, id).await.map_err(said)?;
    let pending = run
        .pending_action
        .clone()
        .filter(|p| run.status == RunStatus::Paused && p["type"] == "approval");
    let step = match (optional_text(args, "step")?, &pending) {
        (Some(s), _) => s,
        (None, Some(p)) => p["step"].as_str().unwrap_or_default().to_string(),
        (None, None) => {
            return Err(format!(
                "run {id} is {}, not PAUSED at an approval",
                run.status
            ));
        }
    };
    let option = match optional_text(args, "option")? {
        Some(o) => o,
        None => {
            let options: Vec<&str> = pending
                .as_ref()
                .and_then(|p| p["options"].as_array())
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !options.contains(&default) {
                return Err(format!(
                    "the approval `{step}` does not offer `{default}`: name one of its options in `option`: {}",
                    options.join(", ")
                ));
            }
            default.to_string()
        }
    };
    Ok(Resume::Approval {
        step,
        input: Value::String(option),
    })
}

async fn list(engine: &Engine, ws: &str, args: &JsonObject) -> Result<CallToolResult, String> {
    let status = optional_text(args, "status")?
        .map(|s| s.parse::<RunStatus>())
        .transpose()?;
    let query = RunQuery {
        workspace_id: ws.to_string(),
        status,
        definition: optional_text(args, "definitionId")?,
        from: None,
        to: None,
        page: integer(args, "page", 1, 1_000_000)?,
        page_size: integer(args, "pageSize", 20, 100)?,
    };
    let (page, page_size) = (query.page, query.page_size);
    let store = engine.store().clone();
    let (runs, total) = tokio::task::spawn_blocking(move || store.list_runs(&query))
        .await
        .map_err(|e| said(EngineError::Internal(e.to_string())))?
        .map_err(|e| said(e.into()))?;
    Ok(CallToolResult::structured(json!({
        "runs": runs.iter().map(view::run).collect::<Vec<_>>(),
        "page": page,
        "pageSize": page_size,
        "total": total,
        "totalPages": total.div_ceil(page_size),
    })))
}

async fn detail(engine: &Engine, run: &RunRecord) -> Result<CallToolResult, String> {
    let compiled = engine
        .compiled(&run.workspace_id, &run.definition_id)
        .await
        .map_err(said)?;
    let store = engine.store().clone();
    let id = run.id.clone();
    let steps = tokio::task::spawn_blocking(move || store.steps(&id))
        .await
        .map_err(|e| said(EngineError::Internal(e.to_string())))?
        .map_err(|e| said(e.into()))?;
    Ok(CallToolResult::structured(view::detail(run, &compiled, &steps)).with_meta(meta(run)))
}
