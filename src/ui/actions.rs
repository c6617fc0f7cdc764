//! What a person can do from the UI, through the same `Engine` calls as the REST API, each
//! recorded in the run's trace with who did it: cancel, retry, decide an approval, send a
//! signal, start a run; and the approvals inbox.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::detail::{self, Loaded, View};
use super::forms::{self, Form, Problem};
use super::history::{self, plans};
use super::layout::{self, Nav};
use super::session::{Change, Viewer};
use crate::api::AppState;
use crate::api::views::RunView;
use crate::bulk::Action;
use crate::definition::{Step, StepKind};
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
    let r = l.run();
    let base = format!("/ui/runs/{}", r.id);
    let plan = &l.compiled.plan;
    let waiting: Vec<(usize, &Step)> = l
        .detail
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Waiting)
        .filter_map(|s| {
            let i = *plan.order.get(s.index)?;
            Some((i, plan.definition.steps.get(i)?))
        })
        .collect();
    html! {
        div.actions {
            @if r.status.is_suspended() {
                @for &(i, step) in &waiting {
                    @match &step.kind {
                        StepKind::Approval(a) => {
                            section.card aria-label={ "Approval " (step.id) } {
                                h2 { "Waiting for approval: " code { (step.id) } }
                                p.message { (r.pending_action.as_ref().filter(|p| p["step"] == json!(step.id)).and_then(|p| p["message"].as_str()).unwrap_or(&a.message)) }
                                (action_form(viewer, &format!("{base}/decide"), &view.tab, html! {
                                    input type="hidden" name="step" value=(step.id);
                                    @for o in &a.options {
                                        button.primary type="submit" name="option" value=(o) { (o) } " "
                                    }
                                }))
                            }
                        }
                        StepKind::ExternalEvent(e) => {
                            @let refused = view.signal.as_ref().filter(|(s, _, _)| *s == step.id);
                            @let empty = Form::default();
                            section.card aria-label={ "Signal " (step.id) } {
                                h2 { "Waiting on hook: " code { (step.id) } }
                                p { "Send the signal " code { (e.signal) } ":" }
                                (action_form(viewer, &format!("{base}/signal"), &view.tab, html! {
                                    input type="hidden" name="step" value=(step.id);
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

/// Why an action on a run did nothing.
enum Refusal {
    /// Said above the run (a conflict, a missing choice).
    Notice(String),
    /// A signal's form, shown again with its problems.
    Signal(String, Vec<Problem>),
    /// A page of its own (the run is not there).
    Page(Response),
}

impl From<EngineError> for Refusal {
    fn from(e: EngineError) -> Refusal {
        match e {
            EngineError::NotFound(m) => Refusal::Page(layout::not_found(&m)),
            EngineError::Validation { message, .. } | EngineError::Conflict(message) => {
                Refusal::Notice(message)
            }
            other => Refusal::Notice(format!("not done: {other}")),
        }
    }
}

/// An action on one run (`POST /ui/runs/{id}/…`): back to where it was asked from once it
/// is done; otherwise the run's page again, saying why (200, so htmx swaps it in).
async fn answer(
    state: &AppState,
    change: &Change,
    id: &str,
    done: Result<(), Refusal>,
) -> Response {
    let form = &change.form;
    let tab = form.get("tab").unwrap_or("overview").to_string();
    let view = match done {
        Ok(()) => {
            if let Some(back) = form.get("back").filter(|b| *b == "/ui/approvals") {
                return Redirect::to(back).into_response();
            }
            return Redirect::to(&detail::url(id, &tab, None)).into_response();
        }
        Err(Refusal::Page(r)) => return r,
        Err(Refusal::Notice(n)) => View {
            tab,
            notice: Some(n),
            ..View::default()
        },
        Err(Refusal::Signal(step, problems)) => View {
            tab,
            signal: Some((step, Form(form.0.clone()), problems)),
            ..View::default()
        },
    };
    match detail::load(state, &change.viewer, id, view.tab == "trace").await {
        Ok(l) => detail::render(state, &change.viewer, &l, &view).await,
        Err(r) => r,
    }
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    change: Change,
) -> Response {
    act(&state, &change, &id, Action::Cancel).await
}

pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    change: Change,
) -> Response {
    act(&state, &change, &id, Action::Retry).await
}

/// Cancel or retry, as the person signed in.
async fn act(state: &AppState, change: &Change, id: &str, action: Action) -> Response {
    let v = &change.viewer;
    let done = action
        .on(&state.engine, &v.workspace_id, id, Some(&v.actor))
        .await;
    answer(state, change, id, done.map(drop).map_err(Refusal::from)).await
}

pub async fn decide(
    State(state): State<AppState>,
    Path(id): Path<String>,
    change: Change,
) -> Response {
    let done = async {
        let (Some(step), Some(option)) = (change.form.get("step"), change.form.get("option"))
        else {
            return Err(Refusal::Notice("choose one of the options".into()));
        };
        let resume = Resume::Approval {
            step: step.to_string(),
            input: Value::String(option.to_string()),
        };
        let v = &change.viewer;
        state
            .engine
            .resume(&v.workspace_id, &id, resume, &v.actor)
            .await?;
        Ok(())
    }
    .await;
    answer(&state, &change, &id, done).await
}

pub async fn signal(
    State(state): State<AppState>,
    Path(id): Path<String>,
    change: Change,
) -> Response {
    let done = send_signal(&state, &change, &id).await;
    answer(&state, &change, &id, done).await
}

/// A signal from the form of a waiting `external_event` step. Nothing is sent while the
/// form has problems: its own types first, then the step's schema, then the engine's check.
async fn send_signal(state: &AppState, change: &Change, id: &str) -> Result<(), Refusal> {
    let v = &change.viewer;
    let compiled = match state.engine.run(&v.workspace_id, id).await {
        Ok(run) => state
            .engine
            .compiled(&run.workspace_id, &run.definition_id)
            .await
            .map_err(|e| Refusal::Page(layout::failure(&e.to_string())))?,
        Err(e) => return Err(e.into()),
    };
    let step = change.form.get("step").unwrap_or_default().to_string();
    let Some((i, e)) =
        compiled
            .plan
            .definition
            .steps
            .iter()
            .enumerate()
            .find_map(|(i, s)| match &s.kind {
                StepKind::ExternalEvent(e) if s.id == step => Some((i, e)),
                _ => None,
            })
    else {
        return Err(Refusal::Notice(format!(
            "`{step}` is not a step that waits for a signal"
        )));
    };
    let payload = forms::to_json(e.schema.as_ref(), &change.form)
        .map_err(|problems| Refusal::Signal(step.clone(), problems))?;
    if let Some(Some(validator)) = compiled.payload.get(i) {
        let problems = forms::problems_of(&json!({"problems": violations(validator, &payload)}));
        if !problems.is_empty() {
            return Err(Refusal::Signal(step, problems));
        }
    }
    let resume = Resume::Signal {
        signal_type: e.signal.clone(),
        payload,
    };
    match state
        .engine
        .resume(&v.workspace_id, id, resume, &v.actor)
        .await
    {
        Ok(_) => Ok(()),
        Err(EngineError::Validation { message, details }) => {
            let mut problems = forms::problems_of(&details);
            if problems.is_empty() {
                problems.push((String::new(), message));
            }
            Err(Refusal::Signal(step, problems))
        }
        Err(e) => Err(e.into()),
    }
}

/// Start a run from the Workflows page's form (the definition's `input` schema).
pub async fn start(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    change: Change,
) -> Response {
    let Change { viewer, form } = &change;
    let compiled = match state.engine.compiled(&viewer.workspace_id, &slug).await {
        Ok(c) => c,
        Err(EngineError::NotFound(m)) => return layout::not_found(&m),
        Err(e) => return layout::failure(&e.to_string()),
    };
    let schema = compiled.plan.definition.input.clone();
    let input = match forms::to_json(schema.as_ref(), form) {
        Ok(v) => v,
        Err(problems) => {
            return super::catalog::definition_page(&state, viewer, &slug, form, &problems).await;
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
            super::catalog::definition_page(&state, viewer, &slug, form, &problems).await
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
    let found = match tokio::task::spawn_blocking(move || store.history(&query, &filter)).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return layout::failure(&e.to_string()),
        Err(e) => return layout::failure(&e.to_string()),
    };
    let runs: Vec<RunView> = found.runs.iter().map(RunView::new).collect();
    let views: Vec<&RunView> = runs.iter().collect();
    let plans = plans(&state, &views, &viewer.workspace_id).await;
    let body = html! {
        h1 { "Approvals" }
        section #inbox data-refresh hx-get={ "/ui/approvals?page=" (page) } hx-select="#inbox" hx-target="this" hx-swap="outerHTML" hx-trigger="refresh" hx-sync="this:queue last" {
            (history::pager(found.total, found.more, page, history::PAGE_SIZE, |p| format!("/ui/approvals?page={p}")))
            @if runs.is_empty() { p.card { "Nothing waits for approval." } }
            @for r in &runs {
                @let action = r.pending_action.clone().unwrap_or(Value::Null);
                @let step = action["step"].as_str().unwrap_or_default().to_string();
                article.card aria-label={ "Approval for run " (r.id) } {
                    div.runhead {
                        a href={ "/ui/runs/" (r.id) } { code { (r.id) } }
                        span { (r.definition_slug) }
                        span.muted { "step " code { (step) } }
                        span.muted { "waiting since " (layout::time(r.updated_at.0)) }
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
