//! `/v1/workflow-runs/bulk`: cancel or retry every run a filter selects, as a tracked
//! operation (`crate::bulk`); a dry run only counts.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::envelope::ok;
use super::error::ApiError;
use super::extract::{Json, Path};
use super::state::AppState;
use crate::bulk::{self, Action, Filter};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkBody {
    action: Option<Value>,
    filter: Option<Value>,
    dry_run: Option<Value>,
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
    let map = match v {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::field("filter", "filter must be an object")),
    };
    let mut f = Filter::default();
    for (k, v) in map {
        let field = format!("filter.{k}");
        let text = || {
            v.as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    ApiError::field(&field, format!("{field} must be a non-empty string"))
                })
        };
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

pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<BulkBody>,
) -> Result<Response, ApiError> {
    let action = action(body.action)?;
    let filter = filter(body.filter)?;
    let dry_run = match body.dry_run {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(ApiError::field("dryRun", "dryRun must be a boolean")),
    };
    let engine = &state.engine;
    if dry_run {
        let count = bulk::count(engine, &caller.workspace_id, action, &filter).await?;
        return Ok(ok(
            StatusCode::OK,
            json!({"action": action, "filter": filter, "dryRun": true, "count": count}),
        ));
    }
    let op = bulk::start(engine, &caller.workspace_id, action, filter).await?;
    let location = format!("/v1/workflow-runs/bulk/{}", op.id);
    let mut resp = ok(StatusCode::ACCEPTED, json!(op));
    if let Ok(v) = location.parse() {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp.into_response())
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let op = bulk::get(&state.engine, &caller.workspace_id, &id).await?;
    Ok(ok(StatusCode::OK, json!(op)))
}
