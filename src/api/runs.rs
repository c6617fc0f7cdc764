//! `/v1/workflow-runs`: the seeds' contract.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::envelope::{ok, page, run_query};
use super::error::ApiError;
use super::extract::{Json, Path, Query, field};
use super::schemas::{Envelope, ErrorBody, Paged};
use super::state::AppState;
use super::views::{self, HookView, RunDetail, RunView};
use crate::bulk::Action;
use crate::engine::{Compiled, CreateRun, Resume};
use crate::store::RunRecord;

/// Longest `?wait=` a request may hold.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Fields are read as JSON values so that a wrong type is answered with the field's name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = CreateRun, example = json!({"definitionId": "expense-approval", "input": {"employee": "Ada", "amount": 120}, "idempotencyKey": "expense-4711"}))]
pub struct CreateBody {
    /// A definition id (slug, latest version) or an exact wfdef_ version id.
    #[schema(value_type = String, min_length = 1, required = true, nullable = false)]
    definition_id: Option<Value>,
    /// Validated against the definition's input schema (defaults to {}).
    #[schema(value_type = Object, required = false)]
    input: Option<Value>,
    /// A second create with the same key returns the first run (200).
    #[schema(value_type = String, min_length = 1, max_length = 255, required = false)]
    idempotency_key: Option<Value>,
}

/// `?wait=`: answer once the run settles.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct WaitParam {
    /// Hold the request until the run is COMPLETED, FAILED, CANCELLED, PAUSED or WAITING, or this long passes (e.g. 30s, at most 5m).
    #[param(required = false, pattern = "^([0-9]+(ms|s|m|h|d)?)+$")]
    wait: String,
}

/// Filters and page of `GET /v1/workflow-runs` (read by `envelope::run_query`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ListParams {
    /// Page number (min 1)
    #[param(required = false, minimum = 1, default = 1)]
    page: u64,
    /// Results per page (1-100)
    #[param(required = false, minimum = 1, maximum = 100, default = 20)]
    page_size: u64,
    /// Filter by status
    #[param(required = false, inline)]
    status: crate::model::RunStatus,
    /// Filter by definition (slug or wfdef_ id)
    #[param(required = false)]
    definition_id: String,
    /// Created at or after (RFC 3339)
    #[param(required = false, format = DateTime)]
    from: String,
    /// Created before (RFC 3339)
    #[param(required = false, format = DateTime)]
    to: String,
}

/// What `GET /v1/workflow-runs/{id}` adds to the run.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct IncludeParam {
    /// Comma-separated: trigger, steps, trace, usage
    #[param(required = false)]
    include: String,
}

/// `?all=true` on a run's hooks.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AllParam {
    /// Also list resumed and closed hooks
    #[param(required = false)]
    all: bool,
}

pub(super) fn parse_wait(q: &HashMap<String, String>) -> Result<Option<Duration>, ApiError> {
    let Some(w) = q.get("wait") else {
        return Ok(None);
    };
    let d = match w.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            crate::duration::parse(w).map_err(|e| ApiError::field("wait", format!("wait: {e}")))?
        }
    };
    if d > MAX_WAIT {
        return Err(ApiError::field(
            "wait",
            format!("wait may be at most {}", crate::duration::format(MAX_WAIT)),
        ));
    }
    Ok(Some(d))
}

fn trigger(headers: &HeaderMap, caller: &Caller) -> Value {
    let ua = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (kind, label) = if ua.starts_with("stepwise-cli") {
        ("cli", "CLI")
    } else {
        ("api", "API")
    };
    json!({"kind": kind, "label": label, "actor": caller.actor})
}

#[utoipa::path(
    post,
    path = "/v1/workflow-runs",
    operation_id = "createRun",
    summary = "Start a run; an idempotencyKey already used returns the existing run",
    tag = "runs",
    params(WaitParam),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = Envelope<RunView>),
        (status = 200, description = "The run with this idempotency key", body = Envelope<RunView>),
        (status = 400, description = "Invalid request (also: the workflow has script steps and the server was started without --allow-scripts; `details.step` names the first)", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<CreateBody>,
) -> Result<Response, ApiError> {
    let wait = parse_wait(&q)?;
    let definition = field("definitionId", body.definition_id).required_text()?;
    let input = field("input", body.input).object()?;
    // Its length and reserved prefixes are the engine's to check, for every caller.
    let idempotency_key = match body.idempotency_key {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k),
        Some(_) => {
            return Err(ApiError::field(
                "idempotencyKey",
                "idempotencyKey must be a string",
            ));
        }
    };
    let (run, created) = state
        .engine
        .create_run(CreateRun {
            workspace_id: caller.workspace_id.clone(),
            definition,
            input,
            idempotency_key,
            trigger: trigger(&headers, &caller),
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let run = match wait {
        Some(d) => settle(&state, &caller, &run.id, d).await?,
        None => run,
    };
    Ok(ok(status, RunView::new(&run)))
}

async fn settle(
    state: &AppState,
    caller: &Caller,
    id: &str,
    wait: Duration,
) -> Result<RunRecord, ApiError> {
    Ok(state
        .engine
        .wait_for(&caller.workspace_id, id, wait, |s| {
            s.is_terminal() || s.is_suspended()
        })
        .await?)
}

#[utoipa::path(
    get,
    path = "/v1/workflow-runs",
    operation_id = "listRuns",
    summary = "Runs of the workspace, newest first",
    tag = "runs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of runs", body = Paged<RunView>),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = run_query(&q, &caller.workspace_id)?;
    page(&state, query, RunView::new).await
}

/// The full view of a run: the list fields plus steps, trigger and, on request, the trace;
/// with the plan it is pinned to. `GET /v1/workflow-runs/{id}` answers it and the web UI's
/// run page renders it.
pub async fn detail(
    state: &AppState,
    run: &RunRecord,
    include: &[&str],
) -> Result<(RunDetail, Arc<Compiled>), ApiError> {
    let store = state.engine.store().clone();
    let id = run.id.clone();
    let want_trace = include.contains(&"trace");
    let (steps, events) =
        tokio::task::spawn_blocking(move || -> Result<_, crate::store::StoreError> {
            let steps = store.steps(&id)?;
            let events = if want_trace {
                Some(store.events(&id)?)
            } else {
                None
            };
            Ok((steps, events))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let compiled = state
        .engine
        .compiled(&run.workspace_id, &run.definition_id)
        .await?;
    let want_usage = include.contains(&"usage") || include.contains(&"steps");
    let detail = RunDetail {
        run: RunView::new(run),
        steps: views::step_views(&compiled, &steps),
        trigger: run.trigger.clone(),
        actor: run.trigger.get("actor").cloned().unwrap_or(Value::Null),
        usage: want_usage.then(|| views::usage_view(&steps, &state.prices)),
        trace: events.map(|e| views::trace_events(&e)),
    };
    Ok((detail, compiled))
}

pub fn includes(q: &HashMap<String, String>) -> Result<Vec<&str>, ApiError> {
    let Some(list) = q.get("include") else {
        return Ok(vec!["trigger", "steps"]);
    };
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "trigger" | "steps" | "trace" | "usage" => out.push(part),
            other => {
                return Err(ApiError::field(
                    "include",
                    format!("`{other}` cannot be included (use trigger, steps, trace, usage)"),
                ));
            }
        }
    }
    Ok(out)
}

#[utoipa::path(
    get,
    path = "/v1/workflow-runs/{id}",
    operation_id = "getRun",
    summary = "A run with its steps, pending action and trigger",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id (wfrun_…)"), WaitParam, IncludeParam),
    responses(
        (status = 200, description = "The run", body = Envelope<RunDetail>),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let include = includes(&q)?;
    let wait = parse_wait(&q)?;
    let run = match wait {
        Some(d) => settle(&state, &caller, &id, d).await?,
        None => state.engine.run(&caller.workspace_id, &id).await?,
    };
    Ok(ok(StatusCode::OK, detail(&state, &run, &include).await?.0))
}

#[utoipa::path(
    post,
    path = "/v1/workflow-runs/{id}/cancel",
    operation_id = "cancelRun",
    summary = "Cancel a PENDING, RUNNING, WAITING or PAUSED run",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id (wfrun_…)")),
    responses(
        (status = 200, description = "Cancelled", body = Envelope<RunView>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The run is not in a state that allows this", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(&state, &caller, &id, Action::Cancel).await
}

/// Cancel or retry as the caller: 200 with the run as it is now.
async fn act(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: Action,
) -> Result<Response, ApiError> {
    let run = action
        .on(&state.engine, &caller.workspace_id, id, Some(&caller.actor))
        .await?;
    Ok(ok(StatusCode::OK, RunView::new(&run)))
}

/// Seed 003's DELETE: the same as `POST …/cancel`.
#[utoipa::path(
    delete,
    path = "/v1/workflow-runs/{id}",
    operation_id = "deleteRun",
    summary = "Cancel a run (seed 003's DELETE)",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id (wfrun_…)")),
    responses(
        (status = 200, description = "Cancelled", body = Envelope<RunView>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The run is not in a state that allows this", body = ErrorBody),
    )
)]
pub async fn delete(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Response, ApiError> {
    cancel(state, caller, id).await
}

/// `{signalType, payload}` for a WAITING run; `{step, input}` or
/// `{input: {resume: {step, input}}}` for a PAUSED approval.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = Resume, examples(
    json!({"step": "review", "input": "approve"}),
    json!({"signalType": "payout.sent", "payload": {"reference": "PAY-1"}})
))]
pub struct ResumeBody {
    /// The signal a WAITING `external_event` step waits for.
    #[schema(value_type = String, min_length = 1, required = false)]
    signal_type: Option<Value>,
    /// The signal's payload, validated against the step's schema.
    #[schema(value_type = Object, required = false)]
    payload: Option<Value>,
    /// The PAUSED approval step.
    #[schema(value_type = String, min_length = 1, required = false)]
    step: Option<Value>,
    /// The decision: one of the approval's options.
    #[schema(value_type = Value, required = false)]
    input: Option<Value>,
}

fn resume_request(body: ResumeBody) -> Result<Resume, ApiError> {
    // Seed 003: {"input": {"resume": {"step", "input"}}}.
    if body.step.is_none()
        && body.signal_type.is_none()
        && let Some(Value::Object(input)) = &body.input
        && let Some(resume) = input.get("resume")
    {
        let step = resume.get("step").and_then(Value::as_str).ok_or_else(|| {
            ApiError::field(
                "input.resume.step",
                "input.resume.step must be the paused step's name",
            )
        })?;
        let value = resume.get("input").cloned().ok_or_else(|| {
            ApiError::field("input.resume.input", "input.resume.input is required")
        })?;
        return Ok(Resume::Approval {
            step: step.to_string(),
            input: value,
        });
    }
    if let Some(step) = field("step", body.step).text()? {
        let input = body
            .input
            .ok_or_else(|| ApiError::field("input", "input is required with step"))?;
        return Ok(Resume::Approval { step, input });
    }
    let signal_type = field("signalType", body.signal_type)
        .text()?
        .ok_or_else(|| {
            ApiError::field(
                "signalType",
                "signalType is required (or step and input to answer an approval)",
            )
        })?;
    let payload = field("payload", body.payload).object()?;
    Ok(Resume::Signal {
        signal_type,
        payload,
    })
}

#[utoipa::path(
    post,
    path = "/v1/workflow-runs/{id}/resume",
    operation_id = "resumeRun",
    summary = "Deliver a signal to a WAITING run, or a decision to a PAUSED approval",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id (wfrun_…)")),
    request_body = ResumeBody,
    responses(
        (status = 200, description = "Resumed", body = Envelope<RunView>),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The run is not in a state that allows this", body = ErrorBody),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ResumeBody>,
) -> Result<Response, ApiError> {
    // An unknown run is 404 before the body is judged.
    state.engine.run(&caller.workspace_id, &id).await?;
    let resume = resume_request(body)?;
    let run = state
        .engine
        .resume(&caller.workspace_id, &id, resume, &caller.actor)
        .await?;
    Ok(ok(StatusCode::OK, RunView::new(&run)))
}

#[utoipa::path(
    post,
    path = "/v1/workflow-runs/{id}/retry",
    operation_id = "retryRun",
    summary = "Retry a FAILED run from the failed step, keeping earlier outputs",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id (wfrun_…)")),
    responses(
        (status = 200, description = "Running again", body = Envelope<RunView>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The run is not in a state that allows this", body = ErrorBody),
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(&state, &caller, &id, Action::Retry).await
}

#[utoipa::path(
    get,
    path = "/v1/workflow-runs/{id}/hooks",
    operation_id = "listRunHooks",
    summary = "Pending hooks of a run, with their tokens and resume URLs",
    tag = "hooks",
    params(("id" = String, Path, description = "The run's id (wfrun_…)"), AllParam),
    responses(
        (status = 200, description = "Hooks", body = Envelope<Vec<HookView>>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    )
)]
pub async fn hooks(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    state.engine.run(&caller.workspace_id, &id).await?;
    let all = q.get("all").is_some_and(|v| v == "true");
    let store = state.engine.store().clone();
    let hooks = tokio::task::spawn_blocking(move || store.hooks_for_run(&id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let base = state.base_url(&headers);
    let data: Vec<HookView> = hooks
        .iter()
        .filter(|h| all || h.status == crate::store::HookStatus::Pending)
        .map(|h| HookView::new(h, &base))
        .collect();
    Ok(ok(StatusCode::OK, data))
}
