//! The success envelope (`{"success": true, "data"}`) and paged run listings, shared by
//! every handler module; it imports none of them.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::schemas::{Envelope, Meta, Paged, True};
use super::state::AppState;
use crate::model::RunStatus;
use crate::store::{RunQuery, RunRecord};

/// `{"success": true, "data": data}` (the document's `Envelope<T>`).
pub fn ok<T: Serialize>(status: StatusCode, data: T) -> Response {
    (
        status,
        axum::Json(Envelope {
            success: True,
            data,
        }),
    )
        .into_response()
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

/// One page of runs in the seeds' list shape (the document's `Paged<T>`), each run shaped
/// by `view`.
pub async fn page<T: Serialize>(
    state: &AppState,
    query: RunQuery,
    view: impl Fn(&RunRecord) -> T,
) -> Result<Response, ApiError> {
    let (page, page_size) = (query.page, query.page_size);
    let store = state.engine.store().clone();
    let (runs, total) = tokio::task::spawn_blocking(move || store.list_runs(&query))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let data: Vec<T> = runs.iter().map(view).collect();
    Ok((
        StatusCode::OK,
        axum::Json(Paged {
            success: True,
            data,
            meta: Meta {
                page,
                page_size,
                total,
                total_pages: total.div_ceil(page_size),
            },
        }),
    )
        .into_response())
}
