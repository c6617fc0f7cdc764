//! Seed 003's `POST /v1/agents/{name}/workflow`: start the workflow `{name}` with
//! `input.state` as its input (the `task` is recorded in the run's trigger) and hold the
//! request until the run pauses, completes or fails (bounded by `?wait=`, 30 s by default),
//! then answer in seed 003's shape:
//! `{"output": {"status", "steps", "result", "pendingAction"}, "run_id"}`.
//! The run is an ordinary run: seed 004's routes get, resume and cancel it (docs/agents.md).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Json, Path, Query};
use super::runs::parse_wait;
use super::state::AppState;
use super::views;
use crate::engine::{CreateRun, EngineError};
use crate::model::RunStatus;
use crate::store::RunRecord;

/// How long the request waits for the run when `?wait=` is not given.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Seed 003's request: `input.task` (recorded in the run's trigger) and `input.state` (the
/// workflow's input). Read as a JSON value so that a wrong type is answered with its field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AgentWorkflow, example = json!({"input": {"task": "Approve Ada's expense", "state": {"employee": "Ada", "amount": 120}}}))]
pub struct Body {
    #[schema(value_type = AgentInput, required = true, nullable = false)]
    input: Option<Value>,
}

/// `input` of seed 003's request.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AgentInput {
    /// What the workflow is to do; recorded in the run's trigger.
    #[schema(min_length = 1)]
    task: String,
    /// The workflow's input (validated against its input schema); {} by default.
    #[schema(value_type = Object, required = false)]
    state: Option<Value>,
}

/// A step of seed 003's answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AgentStep {
    name: String,
    status: String,
    #[schema(value_type = Value, required = false)]
    output: Option<Value>,
    #[schema(value_type = Value, required = false)]
    error: Option<Value>,
}

/// `output` of seed 003's answer.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AgentOutput {
    /// running, paused, completed, failed (or cancelled).
    #[schema(example = "paused")]
    status: String,
    steps: Vec<AgentStep>,
    #[schema(value_type = Value, required = true)]
    result: Option<Value>,
    #[schema(value_type = Value, required = true)]
    pending_action: Option<Value>,
    #[schema(value_type = Value, required = false)]
    error: Option<Value>,
}

/// Seed 003's answer (without the success envelope).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AgentRun {
    output: AgentOutput,
    #[schema(pattern = "^wfrun_")]
    run_id: String,
}

/// `?wait=` of the agents endpoint.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AgentWait {
    /// Hold the request at most this long (default 30s, at most 5m); then answer with the run as it is.
    #[param(required = false, pattern = "^([0-9]+(ms|s|m|h|d)?)+$")]
    wait: String,
}

/// Seed 003's four statuses, plus `cancelled` for a run cancelled meanwhile.
fn status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Pending | RunStatus::Running => "running",
        RunStatus::Paused | RunStatus::Waiting => "paused",
        RunStatus::Completed => "completed",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

/// `input.task` (required text) and `input.state` (an object, `{}` by default).
fn task_and_state(input: Option<Value>) -> Result<(String, Value), ApiError> {
    let input = match input {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => {
            return Err(ApiError::field(
                "input",
                "input is required: {\"input\": {\"task\": \"…\", \"state\": {…}}}",
            ));
        }
        Some(_) => return Err(ApiError::field("input", "input must be an object")),
    };
    if let Some(k) = input
        .keys()
        .find(|k| !["task", "state"].contains(&k.as_str()))
    {
        return Err(ApiError::field(
            &format!("input.{k}"),
            format!("input.{k} is not a field: input takes task and state"),
        ));
    }
    let task = match input.get("task") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        None | Some(Value::Null) => {
            return Err(ApiError::field("input.task", "input.task is required"));
        }
        Some(_) => {
            return Err(ApiError::field(
                "input.task",
                "input.task must be a non-empty string",
            ));
        }
    };
    let state = match input.get("state") {
        None | Some(Value::Null) => json!({}),
        Some(s @ Value::Object(_)) => s.clone(),
        Some(_) => {
            return Err(ApiError::field(
                "input.state",
                "input.state must be an object",
            ));
        }
    };
    Ok((task, state))
}

/// The run in seed 003's shape.
async fn answer(state: &AppState, run: &RunRecord) -> Result<Value, ApiError> {
    let store = state.engine.store().clone();
    let id = run.id.clone();
    let records = tokio::task::spawn_blocking(move || store.steps(&id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let compiled = state
        .engine
        .compiled(&run.workspace_id, &run.definition_id)
        .await?;
    // "Completed and in-progress steps", in plan order: every step that has started, except
    // the one the run waits at, which `pendingAction` describes (as in seed 003's example).
    let steps: Vec<Value> = views::steps(&compiled, &records)
        .into_iter()
        .filter(|s| s["status"] != "PENDING" && s["status"] != "WAITING")
        .map(|s| {
            let mut step = Map::new();
            step.insert("name".into(), s["name"].clone());
            step.insert(
                "status".into(),
                json!(
                    s["status"]
                        .as_str()
                        .unwrap_or_default()
                        .to_ascii_lowercase()
                ),
            );
            step.insert("output".into(), s["output"].clone());
            if !s["error"].is_null() {
                step.insert("error".into(), s["error"].clone());
            }
            Value::Object(step)
        })
        .collect();
    let mut output = json!({
        "status": status(run.status),
        "steps": steps,
        "result": if run.status == RunStatus::Completed { run.output.clone() } else { None },
        "pendingAction": if run.status.is_suspended() { run.pending_action.clone() } else { None },
    });
    if let Some(error) = run
        .error
        .as_ref()
        .filter(|_| run.status == RunStatus::Failed)
    {
        output["error"] = error.clone();
    }
    Ok(json!({"output": output, "run_id": run.id}))
}

#[utoipa::path(
    post,
    path = "/v1/agents/{name}/workflow",
    operation_id = "agentWorkflow",
    summary = "Seed 003: start the workflow {name} with input.state (input.task is recorded) and answer once it pauses, completes or fails",
    tag = "agents",
    params(("name" = String, Path, description = "The workflow's definitionId"), AgentWait),
    request_body = Body,
    responses(
        (status = 200, description = "The run: paused, completed, failed, or still running", body = AgentRun),
        (status = 400, description = "Invalid request", body = super::schemas::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = super::schemas::ErrorBody),
        (status = 404, description = "Not found", body = super::schemas::ErrorBody),
        (status = 413, description = "Body too large", body = super::schemas::ErrorBody),
    )
)]
pub async fn workflow(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Body>,
) -> Result<Response, ApiError> {
    let wait = parse_wait(&q)?.unwrap_or(DEFAULT_WAIT);
    let (task, input) = task_and_state(body.input)?;
    let created = state
        .engine
        .create_run(CreateRun {
            workspace_id: caller.workspace_id.clone(),
            definition: name.clone(),
            input,
            idempotency_key: None,
            trigger: json!({"kind": "agent", "label": "Agent", "actor": caller.actor, "agent": name, "task": task}),
        })
        .await;
    let run = match created {
        Ok((run, _)) => run,
        // The state is the workflow's input: say so where the engine says `input`.
        Err(EngineError::Validation {
            message,
            mut details,
        }) => {
            if details["field"] == "input" {
                details["field"] = json!("input.state");
            }
            return Err(ApiError::validation(
                message.replace("input does not match", "input.state does not match"),
                details,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let run = state
        .engine
        .wait_for(&caller.workspace_id, &run.id, wait, |s| {
            s.is_terminal() || s.is_suspended()
        })
        .await?;
    Ok((StatusCode::OK, axum::Json(answer(&state, &run).await?)).into_response())
}
