//! `/v1/workflow-runs`: the seeds' contract.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::envelope::{ok, page, run_query};
use super::error::ApiError;
use super::extract::{Json, Path, Query};
use super::state::AppState;
use super::views;
use crate::engine::{CreateRun, Resume};
use crate::store::RunRecord;

/// Longest `?wait=` a request may hold.
const MAX_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBody {
    definition_id: Option<Value>,
    input: Option<Value>,
    idempotency_key: Option<Value>,
}

fn parse_wait(q: &HashMap<String, String>) -> Result<Option<Duration>, ApiError> {
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

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<CreateBody>,
) -> Result<Response, ApiError> {
    let wait = parse_wait(&q)?;
    let definition = match body.definition_id {
        None | Some(Value::Null) => {
            return Err(ApiError::field("definitionId", "definitionId is required"));
        }
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(_) => {
            return Err(ApiError::field(
                "definitionId",
                "definitionId must be a non-empty string",
            ));
        }
    };
    let input = match body.input {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(ApiError::field("input", "input must be an object")),
    };
    let idempotency_key = match body.idempotency_key {
        None | Some(Value::Null) => None,
        // Its length and reserved prefixes are the engine's to check, for every caller.
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
    Ok(ok(status, Value::Object(views::run(&run))))
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

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = run_query(&q, &caller.workspace_id)?;
    page(&state, query, |r| Value::Object(views::run(r))).await
}

/// The full view of a run: the list fields plus steps, trigger and, on request, the trace.
pub async fn detail(
    state: &AppState,
    run: &RunRecord,
    include: &[&str],
) -> Result<Value, ApiError> {
    let mut v = views::run(run);
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
    v.insert(
        "steps".into(),
        Value::Array(views::steps(&compiled, &steps)),
    );
    v.insert("trigger".into(), run.trigger.clone());
    v.insert(
        "actor".into(),
        run.trigger.get("actor").cloned().unwrap_or(Value::Null),
    );
    if include.contains(&"usage") || include.contains(&"steps") {
        v.insert("usage".into(), views::usage(&steps, &state.prices));
    }
    if let Some(events) = events {
        v.insert("trace".into(), Value::Array(views::trace(&events)));
    }
    Ok(Value::Object(v))
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
    Ok(ok(StatusCode::OK, detail(&state, &run, &include).await?))
}

pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = state
        .engine
        .cancel_by(&caller.workspace_id, &id, Some(&caller.actor))
        .await?;
    Ok(ok(StatusCode::OK, Value::Object(views::run(&run))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResumeBody {
    signal_type: Option<Value>,
    payload: Option<Value>,
    step: Option<Value>,
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
    if let Some(step) = body.step {
        let step = step
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::field("step", "step must be a step name"))?;
        let input = body
            .input
            .ok_or_else(|| ApiError::field("input", "input is required with step"))?;
        return Ok(Resume::Approval {
            step: step.to_string(),
            input,
        });
    }
    let signal_type = match body.signal_type {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(_) => {
            return Err(ApiError::field(
                "signalType",
                "signalType must be a non-empty string",
            ));
        }
        None => {
            return Err(ApiError::field(
                "signalType",
                "signalType is required (or step and input to answer an approval)",
            ));
        }
    };
    let payload = match body.payload {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p,
        Some(_) => return Err(ApiError::field("payload", "payload must be an object")),
    };
    Ok(Resume::Signal {
        signal_type,
        payload,
    })
}

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
    Ok(ok(StatusCode::OK, Value::Object(views::run(&run))))
}

pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = state
        .engine
        .retry_by(&caller.workspace_id, &id, Some(&caller.actor))
        .await?;
    Ok(ok(StatusCode::OK, Value::Object(views::run(&run))))
}

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
    let data: Vec<Value> = hooks
        .iter()
        .filter(|h| all || h.status == crate::store::HookStatus::Pending)
        .map(|h| views::hook(h, &base))
        .collect();
    Ok(ok(StatusCode::OK, Value::Array(data)))
}
