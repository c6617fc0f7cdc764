//! Run history across workflows (seed 002).

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::envelope::{page, run_query};
use super::error::ApiError;
use super::extract::Query;
use super::schemas::{ErrorBody, Paged};
use super::state::AppState;
use super::views::HistoryRun;

/// Filters and page of the history (read by `envelope::run_query`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct HistoryParams {
    /// Only `workflow` is recorded
    #[param(required = false, inline)]
    kind: HistoryKind,
    /// Filter by status (any case)
    #[param(required = false)]
    status: String,
    /// Filter by definition (slug or wfdef_ id)
    #[param(required = false)]
    definition_id: String,
    /// Created at or after (RFC 3339)
    #[param(required = false, format = DateTime)]
    from: String,
    /// Created before (RFC 3339)
    #[param(required = false, format = DateTime)]
    to: String,
    /// Page number (min 1)
    #[param(required = false, minimum = 1)]
    page: u64,
    /// Results per page (1-100)
    #[param(required = false, minimum = 1, maximum = 100)]
    page_size: u64,
}

/// The history's kinds: this server records workflow runs (checked in `list`).
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum HistoryKind {
    Workflow,
}

#[utoipa::path(
    get,
    path = "/v1/history",
    operation_id = "history",
    summary = "Run history across workflows (seed 002): filter by kind, status, definition and time",
    tag = "history",
    params(HistoryParams),
    responses(
        (status = 200, description = "A page of runs", body = Paged<HistoryRun>),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
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
    let query = run_query(&q, &caller.workspace_id)?;
    page(&state, query, HistoryRun::new).await
}
