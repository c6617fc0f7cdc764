//! `/v1/workflow-definitions`: apply (lint + store a version), list, get.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::Body;
use super::runs::ok;
use super::views;
use crate::diagnostics::JsonDiagnostic;

/// The body is YAML or JSON (JSON is YAML), or `{"source": "<yaml>"}`.
fn source_of(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::validation("the body is not UTF-8 text", json!({})))?;
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ct.starts_with("application/json")
        && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text)
        && m.len() == 1
        && let Some(Value::String(src)) = m.get("source")
    {
        return Ok(src.clone());
    }
    if text.trim().is_empty() {
        return Err(ApiError::validation(
            "the body is empty: send a workflow definition as YAML or JSON",
            json!({}),
        ));
    }
    Ok(text.to_string())
}

pub async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let source = source_of(&headers, &body)?;
    match state
        .engine
        .apply_definition(&caller.workspace_id, "definition.yaml", &source)
        .await?
    {
        Ok((rec, created)) => {
            let status = if !created {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(ok(status, views::definition(&rec)))
        }
        Err(rejected) => {
            let diagnostics: Vec<Value> = rejected
                .diagnostics
                .iter()
                .map(|d| {
                    serde_json::to_value(JsonDiagnostic::new(&rejected.file, d))
                        .unwrap_or(Value::Null)
                })
                .collect();
            let errors = rejected.diagnostics.iter().filter(|d| d.is_error()).count();
            let first =
                rejected
                    .diagnostics
                    .iter()
                    .find(|d| d.is_error())
                    .map_or(String::new(), |d| {
                        let (l, c) = rejected.file.line_col(d.span.start);
                        format!(": {l}:{c}: {}", d.message)
                    });
            Err(ApiError::validation(
                format!("the definition has {errors} error(s){first}"),
                json!({"diagnostics": diagnostics}),
            ))
        }
    }
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let store = state.engine.store().clone();
    let ws = caller.workspace_id.clone();
    let defs = tokio::task::spawn_blocking(move || store.list_definitions(&ws))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(ok(
        StatusCode::OK,
        Value::Array(defs.iter().map(views::definition).collect()),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.engine.store().clone();
    let ws = caller.workspace_id.clone();
    let key = id.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<_, crate::store::StoreError> {
        let Some(d) = store.definition(&ws, &key)? else {
            return Ok(None);
        };
        let versions = store.definition_versions(&ws, &d.slug)?;
        Ok(Some((d, versions)))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let Some((d, versions)) = found else {
        return Err(ApiError::NotFound(format!(
            "workflow definition `{id}` not found"
        )));
    };
    let mut v = views::definition(&d);
    v["source"] = json!(d.source);
    v["versions"] = Value::Array(versions.iter().map(views::definition).collect());
    Ok(ok(StatusCode::OK, v))
}
