//! The success envelope (`{"success": true, "data"}`) and paged run listings, shared by
//! every handler module; it imports none of them.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::AppState;
use crate::model::RunStatus;
use crate::store::{RunQuery, RunRecord};

pub fn ok(status: StatusCode, data: Value) -> Response {
    (status, axum::Json(json!({"success": true, "data": data}))).into_response()
}

/// Filters and page of a run listing, from query parameters; bad values are 400.
pub fn run_query(q: &HashMap<String, String>, workspace_id: &str) -> Result<RunQuery, ApiError> {
    let int = |name: &str, default: u64, max: u64| -> Result<u64, ApiError> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::field(
                    name,
                    format!("{name} must be an integer from 1 to {max}, got `{v}`"),
                )),
            },
        }
    };
    let time = |name: &str| -> Result<Option<jiff::Timestamp>, ApiError> {
        q.get(name)
            .map(|v| {
                v.parse::<jiff::Timestamp>()
                    .map_err(|_| ApiError::field(name, format!("{name} must be an RFC 3339 time")))
            })
            .transpose()
    };
    Ok(RunQuery {
        workspace_id: workspace_id.to_string(),
        status: q
            .get("status")
            .map(|s| {
                s.parse::<RunStatus>()
                    .map_err(|e| ApiError::field("status", e))
            })
            .transpose()?,
        definition: q.get("definitionId").filter(|d| !d.is_empty()).cloned(),
        from: time("from")?,
        to: time("to")?,
        page: int("page", 1, 1_000_000)?,
        page_size: int("pageSize", 20, 100)?,
    })
}

/// One page of runs in the seeds' list shape, each run shaped by `view`.
pub async fn page(
    state: &AppState,
    query: RunQuery,
    view: impl Fn(&RunRecord) -> Value,
) -> Result<Response, ApiError> {
    let (page, page_size) = (query.page, query.page_size);
    let store = state.engine.store().clone();
    let (runs, total) = tokio::task::spawn_blocking(move || store.list_runs(&query))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let data: Vec<Value> = runs.iter().map(view).collect();
    Ok((
        StatusCode::OK,
        axum::Json(json!({
            "success": true,
            "data": data,
            "meta": {"page": page, "pageSize": page_size, "total": total, "totalPages": total.div_ceil(page_size)},
        })),
    )
        .into_response())
}
