//! Run history across workflows (seed 002), webhooks, and the trigger list.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Body, Query};
use super::runs::ok;
use super::views;
use crate::store::StepRecord;

/// Token counts and durations per model, and a cost line where prices are configured
/// (`STEPWISE_PRICES`: `{"model": {"input": USD per 1M tokens, "output": …}}`).
pub fn usage(steps: &[StepRecord], prices: &Value) -> Value {
    let mut models: Map<String, Value> = Map::new();
    let mut cost = 0.0;
    let mut priced = false;
    for s in steps {
        let Some(u) = &s.usage else { continue };
        let model = u["model"].as_str().unwrap_or("unknown").to_string();
        let e = models.entry(model.clone()).or_insert_with(|| {
            json!({"calls": 0, "promptTokens": 0, "completionTokens": 0, "totalTokens": 0, "durationMs": 0})
        });
        for k in [
            "promptTokens",
            "completionTokens",
            "totalTokens",
            "durationMs",
        ] {
            e[k] = json!(e[k].as_u64().unwrap_or(0) + u[k].as_u64().unwrap_or(0));
        }
        e["calls"] = json!(e["calls"].as_u64().unwrap_or(0) + 1);
        if let Some(p) = prices.get(&model) {
            let c = u["promptTokens"].as_f64().unwrap_or(0.0) * p["input"].as_f64().unwrap_or(0.0)
                / 1e6
                + u["completionTokens"].as_f64().unwrap_or(0.0)
                    * p["output"].as_f64().unwrap_or(0.0)
                    / 1e6;
            cost += c;
            priced = true;
        }
    }
    for (model, e) in models.iter_mut() {
        if let Some(p) = prices.get(model) {
            e["costUsd"] = json!(
                e["promptTokens"].as_f64().unwrap_or(0.0) * p["input"].as_f64().unwrap_or(0.0)
                    / 1e6
                    + e["completionTokens"].as_f64().unwrap_or(0.0)
                        * p["output"].as_f64().unwrap_or(0.0)
                        / 1e6
            );
        }
    }
    json!({"models": models, "costUsd": if priced { json!(cost) } else { Value::Null }})
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(kind) = q.get("kind")
        && kind != "workflow"
    {
        return Err(ApiError::field(
            "kind",
            format!("`{kind}` is not a history kind (this server records workflow runs)"),
        ));
    }
    let query = super::runs::run_query(&q, &caller.workspace_id)?;
    super::runs::page(&state, query, |r| {
        let mut v = views::run(r);
        v.insert("kind".into(), json!("workflow"));
        v.insert("trigger".into(), r.trigger.clone());
        Value::Object(v)
    })
    .await
}

pub async fn webhook(
    State(state): State<AppState>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let Some(triggers) = &state.triggers else {
        return Err(ApiError::NotFound(format!("no webhook `{endpoint}`")));
    };
    let headers: HashMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let (run, created) = triggers.webhook(&endpoint, &headers, &body).await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(ok(
        status,
        json!({"runId": run.id, "status": run.status, "created": created}),
    ))
}

pub async fn triggers(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    let Some(triggers) = state
        .triggers
        .as_ref()
        .filter(|t| t.workspace_id() == caller.workspace_id)
    else {
        return Ok(ok(StatusCode::OK, Value::Array(out)));
    };
    for t in triggers.list() {
        let store = state.engine.store().clone();
        let (ws, name) = (triggers.workspace_id().to_string(), t.name.clone());
        let st = tokio::task::spawn_blocking(move || store.trigger_state(&ws, &name))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        out.push(json!({"name": t.name, "kind": t.source.kind(), "workflow": t.workflow, "enabled": t.enabled, "label": t.label(), "state": st}));
    }
    Ok(ok(StatusCode::OK, Value::Array(out)))
}
