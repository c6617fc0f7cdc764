//! What a person can do from the UI, through the same `Engine` calls as the REST API, each
//! recorded in the run's trace with who did it: cancel, retry, decide an approval, send a
//! signal, start a run; and the approvals inbox.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::detail::{self, Loaded, View};
use super::forms::{self, Form};
use super::history::{self, plans};
use super::layout::{self, Nav};
use super::session::{Viewer, check_change};
use crate::api::AppState;
use crate::definition::StepKind;
use crate::engine::{CreateRun, EngineError, Resume, violations};
use crate::model::{RunStatus, StepStatus};
use crate::store::{HistoryFilter, RunQuery};

/// A form that posts to `action`; with htmx it replaces the run's live section in place.
fn action_form(viewer: &Viewer, action: &str, tab: &str, body: Markup) -> Markup {
    html! {
        form method="post" action=(action) hx-post=(action) hx-target="#live" hx-select="#live" hx-swap="outerHTML" {
            input type="hidden" name="_csrf" value=(viewer.csrf);
            input type="hidden" name="tab" value=(tab);
            (body)
        }
    }
}

/// The buttons and forms for what this run waits on or allows.
pub fn panel(viewer: &Viewer, l: &Loaded, view: &View) -> Markup {
    let r = &l.run;
    let base = format!("/ui/runs/{}", r.id);
    let steps = &l.compiled.plan.definition.steps;
    let waiting: Vec<usize> = l
        .compiled
        .plan
        .order
        .iter()
        .copied()
        .filter(|&i| {
            l.steps
                .iter()
                .filter(|s| s.step_id == steps[i].id)
                .max_by_key(|s| s.attempt)
                .is_some_and(|s| s.status == StepStatus::Waiting)
        })
        .collect();
    html! {
        div.actions {
            @if r.status.is_suspended() {
                @for &i in &waiting {
                    @match &steps[i].kind {
                        StepKind::Approval(a) => {
                            section.card aria-label={ "Approval " (steps[i].id) } {
                                h2 { "Waiting for approval: " code { (steps[i].id) } }
                                p.message { (r.pending_action.as_ref().filter(|p| p["step"] == json!(steps[i].id)).and_then(|p| p["message"].as_str()).unwrap_or(&a.message)) }
                                (action_form(viewer, &format!("{base}/decide"), &view.tab, html! {
                                    input type="hidden" name="step" value=(steps[i].id);
                                    @for o in &a.options {
                                        button.primary type="submit" name="option" value=(o) { (o) } " "
                                    }
                                }))
                            }
                        }
                        StepKind::ExternalEvent(e) => {
                            @let refused = view.signal.as_ref().filter(|(s, _, _)| *s == steps[i].id);
                            @let empty = Form::default();
                            section.card aria-label={ "Signal " (steps[i].id) } {
                                h2 { "Waiting on hook: " code { (steps[i].id) } }
                                p { "Send the signal " code { (e.signal) } ":" }
                                (action_form(viewer, &format!("{base}/signal"), &view.tab, html! {
                                    input type="hidden" name="step" value=(steps[i].id);
                                    (forms::fields(&format!("sig-{i}"), e.schema.as_ref(), refused.map_or(&empty, |r| &r.1), refused.map_or(&[], |r| r.2.as_slice())))
                                    button.primary type="submit" { "Send signal" }
                                }))
                            }
                        }
                        _ => {}
                    }
                }
            }
            @if r.status == RunStatus::Failed {
                (action_form(viewer, &format!("{base}/retry"), &view.tab, html! { button.primary type="submit" { "Retry from the failed step" } }))
            }
            @if r.status.can_cancel() {
                (action_form(viewer, &format!("{base}/cancel"), &view.tab, html! { button.danger type="submit" { "Cancel run" } }))
            }
        }
    }
}

fn back_to(id: &str, form: &Form) -> Response {
    if let Some(back) = form.get("back").filter(|b| *b == "/ui/approvals") {
        return Redirect::to(back).into_response();
    }
    let tab = form.get("tab").unwrap_or("overview");
    Redirect::to(&detail::url(id, tab, None)).into_response()
}

/// Show the run again with why the action was refused (200, so htmx swaps it in).
async fn refused(state: &AppState, viewer: &Viewer, id: &str, form: &Form, view: View) -> Response {
    let l = match detail::load(state, viewer, id).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let view = View {
        tab: form.get("tab").unwrap_or("overview").to_string(),
        ..view
    };
    detail::render(state, viewer, &l, &view).await
}

async fn outcome(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    form: &Form,
    result: Result<crate::store::RunRecord, EngineError>,
) -> Response {
    match result {
        Ok(_) => back_to(id, form),
        Err(EngineError::NotFound(m)) => layout::not_found(&m),
        Err(e @ (EngineError::Conflict(_) | EngineError::Validation { .. })) => {
            let notice = match e {
                EngineError::Validation { message, .. } | EngineError::Conflict(message) => message,
                other => other.to_string(),
            };
            refused(
                state,
                viewer,
                id,
                form,
                View {
                    notice: Some(notice),
                    ..View::default()
                },
            )
            .await
        }
        Err(e) => {
            refused(
                state,
                viewer,
                id,
                form,
                View {
                    notice: Some(format!("not done: {e}")),
                    ..View::default()
                },
            )
            .await
        }
    }
}

pub async fn cancel(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Form,
) -> Response {
    if let Err(r) = check_change(&viewer, &headers, &form) {
        return r.into_response();
    }
    let r = state
        .engine
        .cancel_by(&viewer.workspace_id, &id, Some(&viewer.actor))
        .await;
    outcome(&state, &viewer, &id, &form, r).await
}

pub async fn retry(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Form,
) -> Response {
    if let Err(r) = check_change(&viewer, &headers, &form) {
        return r.into_response();
    }
    let r = state
        .engine
        .retry_by(&viewer.workspace_id, &id, Some(&viewer.actor))
        .await;
    outcome(&state, &viewer, &id, &form, r).await
}

pub async fn decide(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Form,
) -> Response {
    if let Err(r) = check_change(&viewer, &headers, &form) {
        return r.into_response();
    }
    let (Some(step), Some(option)) = (form.get("step"), form.get("option")) else {
        return refused(
            &state,
            &viewer,
            &id,
            &form,
            View {
                notice: Some("choose one of the options".into()),
                ..View::default()
            },
        )
        .await;
    };
    let resume = Resume::Approval {
        step: step.to_string(),
        input: Value::String(option.to_string()),
    };
    let r = state
        .engine
        .resume(&viewer.workspace_id, &id, resume, &viewer.actor)
        .await;
    outcome(&state, &viewer, &id, &form, r).await
}

pub async fn signal(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Form,
) -> Response {
    if let Err(r) = check_change(&viewer, &headers, &form) {
        return r.into_response();
    }
    let l = match detail::load(&state, &viewer, &id).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let step = form.get("step").unwrap_or_default().to_string();
    let Some((i, e)) = l
        .compiled
        .plan
        .definition
        .steps
        .iter()
        .enumerate()
        .find_map(|(i, s)| match &s.kind {
            StepKind::ExternalEvent(e) if s.id == step => Some((i, e.clone())),
            _ => None,
        })
    else {
        return refused(
            &state,
            &viewer,
            &id,
            &form,
            View {
                notice: Some(format!("`{step}` is not a step that waits for a signal")),
                ..View::default()
            },
        )
        .await;
    };
    // Nothing is sent while the form has problems: its own types first, then the schema.
    let payload = match forms::to_json(e.schema.as_ref(), &form) {
        Ok(p) => p,
        Err(problems) => {
            return refused(
                &state,
                &viewer,
                &id,
                &form,
                View {
                    signal: Some((step, form_copy(&form), problems)),
                    ..View::default()
                },
            )
            .await;
        }
    };
    if let Some(Some(v)) = l.compiled.payload.get(i) {
        let problems = forms::problems_of(&json!({"problems": violations(v, &payload)}));
        if !problems.is_empty() {
            return refused(
                &state,
                &viewer,
                &id,
                &form,
                View {
                    signal: Some((step, form_copy(&form), problems)),
                    ..View::default()
                },
            )
            .await;
        }
    }
    let resume = Resume::Signal {
        signal_type: e.signal.clone(),
        payload,
    };
    match state
        .engine
        .resume(&viewer.workspace_id, &id, resume, &viewer.actor)
        .await
    {
        Err(EngineError::Validation { message, details }) => {
            let mut problems = forms::problems_of(&details);
            if problems.is_empty() {
                problems.push((String::new(), message));
            }
            refused(
                &state,
                &viewer,
                &id,
                &form,
                View {
                    signal: Some((step, form_copy(&form), problems)),
                    ..View::default()
                },
            )
            .await
        }
        other => outcome(&state, &viewer, &id, &form, other).await,
    }
}

fn form_copy(f: &Form) -> Form {
    Form(f.0.clone())
}

/// Start a run from the Workflows page's form (the definition's `input` schema).
pub async fn start(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(slug): Path<String>,
    headers: HeaderMap,
    form: Form,
) -> Response {
    if let Err(r) = check_change(&viewer, &headers, &form) {
        return r.into_response();
    }
    let compiled = match state.engine.compiled(&viewer.workspace_id, &slug).await {
        Ok(c) => c,
        Err(EngineError::NotFound(m)) => return layout::not_found(&m),
        Err(e) => return layout::failure(&e.to_string()),
    };
    let schema = compiled.plan.definition.input.clone();
    let input = match forms::to_json(schema.as_ref(), &form) {
        Ok(v) => v,
        Err(problems) => {
            return super::catalog::definition_page(&state, &viewer, &slug, &form, &problems).await;
        }
    };
    let req = CreateRun {
        workspace_id: viewer.workspace_id.clone(),
        definition: slug.clone(),
        input,
        idempotency_key: None,
        trigger: json!({"kind": "ui", "label": "Web UI", "actor": viewer.actor}),
    };
    match state.engine.create_run(req).await {
        Ok((run, _)) => Redirect::to(&format!("/ui/runs/{}", run.id)).into_response(),
        Err(EngineError::Validation { message, details }) => {
            let mut problems = forms::problems_of(&details);
            if problems.is_empty() {
                problems.push((String::new(), message));
            }
            super::catalog::definition_page(&state, &viewer, &slug, &form, &problems).await
        }
        Err(EngineError::NotFound(m)) => layout::not_found(&m),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            layout::bare("Not started", html! { main { p { (e.to_string()) } } }),
        )
            .into_response(),
    }
}

/// `/ui/approvals`: every run paused on an approval, oldest first, with its buttons.
pub async fn inbox(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let page = q
        .get("page")
        .and_then(|p| p.parse::<u64>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let query = RunQuery {
        workspace_id: viewer.workspace_id.clone(),
        status: Some(RunStatus::Paused),
        page,
        page_size: history::PAGE_SIZE,
        ..RunQuery::default()
    };
    let filter = HistoryFilter {
        oldest_first: true,
        ..HistoryFilter::default()
    };
    let store = state.engine.store().clone();
    let (runs, total) =
        match tokio::task::spawn_blocking(move || store.history(&query, &filter)).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return layout::failure(&e.to_string()),
            Err(e) => return layout::failure(&e.to_string()),
        };
    let plans = plans(&state, &runs).await;
    let body = html! {
        h1 { "Approvals" }
        section #inbox data-refresh hx-get={ "/ui/approvals?page=" (page) } hx-select="#inbox" hx-target="this" hx-swap="outerHTML" hx-trigger="refresh" hx-sync="this:queue last" {
            (history::pager(total, page, history::PAGE_SIZE, |p| format!("/ui/approvals?page={p}")))
            @if runs.is_empty() { p.card { "Nothing waits for approval." } }
            @for r in &runs {
                @let action = r.pending_action.clone().unwrap_or(Value::Null);
                @let step = action["step"].as_str().unwrap_or_default().to_string();
                article.card aria-label={ "Approval for run " (r.id) } {
                    div.runhead {
                        a href={ "/ui/runs/" (r.id) } { code { (r.id) } }
                        span { (r.definition_slug) }
                        span.muted { "step " code { (step) } }
                        span.muted { "waiting since " (layout::time(r.updated_at)) }
                        @if let Some(s) = history::current_step(r, &plans).filter(|s| *s != step) { span.muted { "(" (s) ")" } }
                    }
                    p.message { (action["message"].as_str().unwrap_or_default()) }
                    form method="post" action={ "/ui/runs/" (r.id) "/decide" } {
                        input type="hidden" name="_csrf" value=(viewer.csrf);
                        input type="hidden" name="back" value="/ui/approvals";
                        input type="hidden" name="step" value=(step);
                        @for o in action["options"].as_array().into_iter().flatten() {
                            @let o = o.as_str().unwrap_or_default();
                            button.primary type="submit" name="option" value=(o) { (o) } " "
                        }
                    }
                }
            }
        }
    };
    layout::page(&viewer, Nav::Approvals, "Approvals", Some("/ui/live"), body).into_response()
}
