//! `/v1/workflow-definitions`: apply (lint + store a version), list, get.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::auth::Caller;
use super::envelope::ok;
use super::error::ApiError;
use super::extract::{Body, Path, YAML_TYPES, is_json, is_yaml, media_type};
use super::schemas::{Envelope, ErrorBody};
use super::state::AppState;
use super::views::{DefinitionDetail, DefinitionView};
use crate::diagnostics::{Diagnostic, JsonDiagnostic, SourceFile};

/// The name diagnostics give an uploaded definition.
const FILE_NAME: &str = "definition.yaml";

/// The body is YAML (one of the YAML media types) or JSON (JSON is YAML), or
/// `{"source": "<yaml>"}` as JSON. Other media types are refused: `text/plain` is what a
/// browser page can post to any server without asking it first.
fn source_of(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let mt = media_type(headers);
    let json = match mt.as_deref() {
        Some(mt) if is_json(mt) => true,
        Some(mt) if is_yaml(mt) => false,
        other => {
            let sent = other.map_or("no Content-Type".to_string(), |mt| format!("`{mt}`"));
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body has {sent}: send a definition as {} or application/json",
                YAML_TYPES.join(", ")
            )));
        }
    };
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::validation("the body is not UTF-8 text", json!({})))?;
    if json
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

/// The API stores workflows only; a trigger file is refused with the place triggers go.
fn refuse_trigger(file: &SourceFile) -> Result<(), ApiError> {
    let is_trigger = crate::yaml::parse(file).is_ok_and(|d| crate::triggers::is_trigger(&d.value));
    if !is_trigger {
        return Ok(());
    }
    let lint = crate::validate::lint(file);
    Err(ApiError::validation(
        "this is a trigger file (it has `trigger:` and no `steps:`), not a workflow definition: \
         the API stores workflows only; `stepwise serve --definitions DIR` loads triggers from \
         that folder (see docs/triggers.md)",
        json!({"kind": "trigger", "diagnostics": diagnostics(file, &lint.diagnostics)}),
    ))
}

fn diagnostics(file: &SourceFile, all: &[Diagnostic]) -> Vec<Value> {
    all.iter()
        .map(|d| serde_json::to_value(JsonDiagnostic::new(file, d)).unwrap_or(Value::Null))
        .collect()
}

/// `the definition has 2 error(s): 3:5: …`; a refusal always names its first reason.
fn refusal(file: &SourceFile, all: &[Diagnostic]) -> String {
    let errors = all.iter().filter(|d| d.is_error()).count();
    let first = all.iter().find(|d| d.is_error()).or(all.first());
    let reason = first.map_or_else(
        || "no diagnostic was reported; run `stepwise lint` on the file".to_string(),
        |d| {
            let (l, c) = file.line_col(d.span.start);
            format!("{l}:{c}: {}", d.message)
        },
    );
    if errors == 0 {
        format!("the definition was refused: {reason}")
    } else {
        format!("the definition has {errors} error(s): {reason}")
    }
}

#[utoipa::path(
    post,
    path = "/v1/workflow-definitions",
    operation_id = "applyDefinition",
    summary = "Lint and store a workflow definition (YAML or JSON); the same text again returns the stored version",
    tag = "definitions",
    request_body(
        description = "The definition as YAML (any of the YAML media types) or JSON, or `{\"source\": \"<yaml>\"}` as JSON",
        content(
            (String = "application/yaml"),
            (String = "application/x-yaml"),
            (String = "text/yaml"),
            (String = "text/x-yaml"),
            (Object = "application/json"),
        ),
    ),
    responses(
        (status = 201, description = "A new version", body = Envelope<DefinitionView>),
        (status = 200, description = "This exact version exists", body = Envelope<DefinitionView>),
        (status = 400, description = "Invalid request: the definition's diagnostics are in `details`", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    )
)]
pub async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let source = source_of(&headers, &body)?;
    refuse_trigger(&SourceFile::new(FILE_NAME, source.as_str()))?;
    match state
        .engine
        .apply_definition(&caller.workspace_id, FILE_NAME, &source)
        .await?
    {
        Ok((rec, created)) => {
            let status = if !created {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(ok(status, DefinitionView::new(&rec)))
        }
        Err(rejected) => Err(ApiError::validation(
            refusal(&rejected.file, &rejected.diagnostics),
            json!({"diagnostics": diagnostics(&rejected.file, &rejected.diagnostics)}),
        )),
    }
}

#[utoipa::path(
    get,
    path = "/v1/workflow-definitions",
    operation_id = "listDefinitions",
    summary = "The latest version of every definition",
    tag = "definitions",
    responses(
        (status = 200, description = "Definitions", body = Envelope<Vec<DefinitionView>>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    Ok(ok(
        StatusCode::OK,
        views(&state, &caller.workspace_id).await?,
    ))
}

/// The latest version of every definition: `GET /v1/workflow-definitions` answers it and
/// the web UI's Workflows page renders it.
pub async fn views(state: &AppState, workspace_id: &str) -> Result<Vec<DefinitionView>, ApiError> {
    let store = state.engine.store().clone();
    let ws = workspace_id.to_string();
    let defs = tokio::task::spawn_blocking(move || store.list_definitions(&ws))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(defs.iter().map(DefinitionView::new).collect())
}

#[utoipa::path(
    get,
    path = "/v1/workflow-definitions/{id}",
    operation_id = "getDefinition",
    summary = "A definition (by slug: its latest version; or an exact wfdef_ id) with all its versions",
    tag = "definitions",
    params(("id" = String, Path, description = "A slug (its latest version) or an exact wfdef_ id")),
    responses(
        (status = 200, description = "The definition", body = Envelope<DefinitionDetail>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(ok(
        StatusCode::OK,
        detail(&state, &caller.workspace_id, &id).await?,
    ))
}

/// A definition (a slug's latest version, or an exact `wfdef_` id) with its source and
/// every version: `GET /v1/workflow-definitions/{id}` answers it and the web UI's workflow
/// page renders it.
pub async fn detail(
    state: &AppState,
    workspace_id: &str,
    id: &str,
) -> Result<DefinitionDetail, ApiError> {
    let store = state.engine.store().clone();
    let (ws, key) = (workspace_id.to_string(), id.to_string());
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
    Ok(DefinitionDetail {
        definition: DefinitionView::new(&d),
        source: d.source,
        versions: versions.iter().map(DefinitionView::new).collect(),
    })
}
