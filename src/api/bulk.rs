//! `/v1/workflow-runs/bulk`: cancel or retry every run a filter selects, as a tracked
//! operation (`crate::bulk`); a dry run only counts.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::envelope::ok;
use super::error::ApiError;
use super::extract::{Json, Path, field};
use super::schemas::{Envelope, ErrorBody, True};
use super::state::AppState;
use crate::bulk::{self, Action, Filter, Operation};

/// Fields are read as JSON values so that a wrong type is answered with the field's name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = BulkRequest, example = json!({"action": "retry", "filter": {"status": "FAILED", "definitionId": "expense-approval"}, "dryRun": true}))]
pub struct BulkBody {
    #[schema(value_type = Action, required = true, nullable = false)]
    action: Option<Value>,
    /// Which runs (the run list's filters); none: every run the action applies to.
    #[schema(value_type = Filter, required = false)]
    filter: Option<Value>,
    /// Only count the runs the action would act on.
    #[schema(value_type = bool, required = false)]
    dry_run: Option<Value>,
}

/// A dry run's answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkCount {
    pub action: Action,
    pub filter: Filter,
    pub dry_run: True,
    pub count: u64,
}

fn action(v: Option<Value>) -> Result<Action, ApiError> {
    match v.as_ref().and_then(Value::as_str) {
        Some("cancel") => Ok(Action::Cancel),
        Some("retry") => Ok(Action::Retry),
        _ => Err(ApiError::field(
            "action",
            "action is required: `cancel` or `retry`",
        )),
    }
}

fn filter(v: Option<Value>) -> Result<Filter, ApiError> {
    let Value::Object(map) = field("filter", v).object()? else {
        return Ok(Filter::default());
    };
    let mut f = Filter::default();
    for (k, v) in map {
        let field = format!("filter.{k}");
        let text = || self::field(&field, Some(v.clone())).required_text();
        let time = |s: String| {
            s.parse::<jiff::Timestamp>()
                .map_err(|_| ApiError::field(&field, format!("{field} must be an RFC 3339 time")))
        };
        match k.as_str() {
            "status" => {
                f.status = Some(
                    text()?
                        .parse()
                        .map_err(|e: String| ApiError::field(&field, format!("{field}: {e}")))?,
                );
            }
            "definitionId" => f.definition_id = Some(text()?),
            "from" => f.from = Some(time(text()?)?),
            "to" => f.to = Some(time(text()?)?),
            _ => {
                return Err(ApiError::field(
                    &field,
                    format!("unknown filter `{k}`: use status, definitionId, from, to"),
                ));
            }
        }
    }
    Ok(f)
}

#[utoipa::path(
    post,
    path = "/v1/workflow-runs/bulk",
    operation_id = "bulkRuns",
    summary = "Cancel or retry every run a filter selects: a dry run answers the count; otherwise a tracked operation acting in batches (202, Location: the operation)",
    tag = "runs",
    request_body = BulkBody,
    responses(
        (status = 200, description = "Dry run: how many runs the action would act on", body = Envelope<BulkCount>),
        (status = 202, description = "Started", body = Envelope<Operation>),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<BulkBody>,
) -> Result<Response, ApiError> {
    let action = action(body.action)?;
    let filter = filter(body.filter)?;
    let dry_run = field("dryRun", body.dry_run).flag()?;
    let engine = &state.engine;
    if dry_run {
        let count = bulk::count(engine, &caller.workspace_id, action, &filter).await?;
        return Ok(ok(
            StatusCode::OK,
            BulkCount {
                action,
                filter,
                dry_run: True,
                count,
            },
        ));
    }
    let op = bulk::start(engine, &caller.workspace_id, action, filter).await?;
    let location = format!("/v1/workflow-runs/bulk/{}", op.id);
    let mut resp = ok(StatusCode::ACCEPTED, op);
    if let Ok(v) = location.parse() {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp.into_response())
}

#[utoipa::path(
    get,
    path = "/v1/workflow-runs/bulk/{id}",
    operation_id = "getBulkOperation",
    summary = "A bulk operation's progress",
    tag = "runs",
    params(("id" = String, Path, description = "The operation's id (bulk_…)")),
    responses(
        (status = 200, description = "The operation", body = Envelope<Operation>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let op = bulk::get(&state.engine, &caller.workspace_id, &id).await?;
    Ok(ok(StatusCode::OK, op))
}
