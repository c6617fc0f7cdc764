//! `/v1/hooks/{token}/resume`: resuming a suspended run with its hook token alone.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::envelope::ok;
use super::error::ApiError;
use super::extract::{AnyJson, Path, Query};
use super::schemas::{Envelope, ErrorBody};
use super::state::AppState;
use crate::definition::StepKind;
use crate::model::RunStatus;

/// A hook's answer: the run it resumed and its status now.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookAccepted {
    pub run_id: String,
    pub status: RunStatus,
}

#[utoipa::path(
    post,
    path = "/v1/hooks/{token}/resume",
    operation_id = "resumeHook",
    summary = "Resume a suspended run with its hook token (no API key): the JSON body is the step's value",
    tag = "hooks",
    security(()),
    params(("token" = String, Path, description = "The hook's token")),
    request_body(content = Option<Value>, content_type = "application/json", description = "The step's value (an approval's decision or a signal's payload)"),
    responses(
        (status = 202, description = "Accepted", body = Envelope<HookAccepted>),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The hook was already used", body = ErrorBody),
        (status = 410, description = "The hook expired: its step no longer waits", body = ErrorBody),
    )
)]
pub async fn resume_post(
    State(state): State<AppState>,
    Path(token): Path<String>,
    AnyJson(payload): AnyJson,
) -> Result<Response, ApiError> {
    let run = state.engine.resume_hook(&token, payload, "hook").await?;
    Ok(ok(
        StatusCode::ACCEPTED,
        HookAccepted {
            run_id: run.id,
            status: run.status,
        },
    ))
}

/// Query values arrive as strings; where the step's schema says a property is a boolean or
/// a number, convert it (`?approved=true` is `true`), and refuse what does not convert.
fn coerce(params: &HashMap<String, String>, schema: Option<&Value>) -> Result<Value, ApiError> {
    let props = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    let mut out = Map::new();
    for (k, raw) in params {
        let ty = props
            .and_then(|p| p.get(k))
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("string");
        let bad = |what: &str| {
            ApiError::validation(
                format!("`{k}` must be {what}, got `{raw}`"),
                json!({"field": k}),
            )
        };
        let v = match ty {
            "boolean" => match raw.as_str() {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => return Err(bad("true or false")),
            },
            "integer" => Value::from(raw.parse::<i64>().map_err(|_| bad("an integer"))?),
            "number" => raw
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number"))?,
            "null" if raw == "null" || raw.is_empty() => Value::Null,
            _ => Value::String(raw.clone()),
        };
        out.insert(k.clone(), v);
    }
    Ok(Value::Object(out))
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>{t}</h1><p>{m}</p></body></html>",
        t = esc(title),
        m = esc(message)
    );
    (status, Html(body)).into_response()
}

/// People open this link from an email or a chat, so every answer, errors included, is a page.
#[utoipa::path(
    get,
    path = "/v1/hooks/{token}/resume",
    operation_id = "resumeHookLink",
    summary = "Resume with query parameters (a shallow payload, coerced to the schema's types); answers an HTML page",
    tag = "hooks",
    security(()),
    params(("token" = String, Path, description = "The hook's token")),
    responses(
        (status = 200, description = "Recorded", body = String, content_type = "text/html"),
        (status = 400, description = "A value does not fit the schema; the run stays suspended", body = String, content_type = "text/html"),
        (status = 404, description = "Unknown token", body = String, content_type = "text/html"),
        (status = 409, description = "Already used", body = String, content_type = "text/html"),
        (status = 410, description = "Expired", body = String, content_type = "text/html"),
    )
)]
pub async fn resume_get(
    State(state): State<AppState>,
    token: Result<Path<String>, ApiError>,
    params: Result<Query<HashMap<String, String>>, ApiError>,
) -> Response {
    let result = match (token, params) {
        (Ok(Path(token)), Ok(Query(params))) => resume_get_inner(&state, &token, &params).await,
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match result {
        Ok(run_id) => page(
            StatusCode::OK,
            "Thank you",
            &format!("Your answer was recorded; run {run_id} continues."),
        ),
        Err(e) => page(e.status(), "This link could not be used", &e.message()),
    }
}

async fn resume_get_inner(
    state: &AppState,
    token: &str,
    params: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let store = state.engine.store().clone();
    let t = token.to_string();
    let hook = tokio::task::spawn_blocking(move || store.hook(&t))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??
        .ok_or_else(|| ApiError::NotFound("hook not found".into()))?;
    let run = state.engine.run(&hook.workspace_id, &hook.run_id).await?;
    let compiled = state
        .engine
        .compiled(&run.workspace_id, &run.definition_id)
        .await?;
    let schema = compiled.step_index(&hook.step_id).and_then(|i| {
        match &compiled.plan.definition.steps[i].kind {
            StepKind::ExternalEvent(e) => e.schema.clone(),
            _ => None,
        }
    });
    let payload = coerce(params, schema.as_ref())?;
    let run = state.engine.resume_hook(token, payload, "hook").await?;
    Ok(run.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_follow_the_schema() {
        let schema =
            json!({"properties": {"approved": {"type": "boolean"}, "n": {"type": "integer"}}});
        let p = HashMap::from([
            ("approved".to_string(), "true".to_string()),
            ("n".to_string(), "3".to_string()),
            ("note".to_string(), "hi".to_string()),
        ]);
        assert_eq!(
            coerce(&p, Some(&schema)).unwrap(),
            json!({"approved": true, "n": 3, "note": "hi"})
        );
        let p = HashMap::from([("approved".to_string(), "banana".to_string())]);
        assert!(coerce(&p, Some(&schema)).is_err());
    }
}
