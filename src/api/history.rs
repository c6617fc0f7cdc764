//! Run history across workflows (seed 002).

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::auth::Caller;
use super::envelope::{page, run_query};
use super::error::ApiError;
use super::extract::Query;
use super::state::AppState;
use super::views;

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
    page(&state, query, |r| {
        let mut v = views::run(r);
        v.insert("kind".into(), json!("workflow"));
        v.insert("trigger".into(), r.trigger.clone());
        Value::Object(v)
    })
    .await
}
