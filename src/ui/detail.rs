//! Run detail (`/ui/runs/{id}`): a header with the run's status and what a person can do
//! about it, then tabs (Overview, Graph, Timeline, Metadata, Trace) chosen in the URL.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::actions;
use super::forms::{Form, Problem};
use super::graph;
use super::history::trigger_label;
use super::layout::{self, Nav};
use super::session::Viewer;
use super::timeline;
use crate::api::ApiError;
use crate::api::views::{RunDetail, RunView, StepView, Usage};
use crate::definition::StepKind;
use crate::engine::{Compiled, EngineError};
use crate::model::StepStatus;

pub const TABS: [(&str, &str); 5] = [
    ("overview", "Overview"),
    ("graph", "Graph"),
    ("timeline", "Timeline"),
    ("metadata", "Metadata"),
    ("trace", "Trace"),
];

/// What the page was asked to show, and what a refused form left to say.
#[derive(Default)]
pub struct View {
    pub tab: String,
    pub step: Option<String>,
    /// A refused signal: the step, the values to refill, the problems.
    pub signal: Option<(String, Form, Vec<Problem>)>,
    /// A note after an action (e.g. why it was refused).
    pub notice: Option<String>,
}

impl View {
    pub fn read(q: &HashMap<String, String>) -> View {
        let tab = q
            .get("tab")
            .filter(|t| TABS.iter().any(|(k, _)| k == t))
            .cloned()
            .unwrap_or_else(|| "overview".into());
        View {
            tab,
            step: q.get("step").cloned(),
            ..View::default()
        }
    }
}

pub fn url(id: &str, tab: &str, step: Option<&str>) -> String {
    let mut pairs = vec![("tab", tab)];
    if let Some(s) = step {
        pairs.push(("step", s));
    }
    format!(
        "/ui/runs/{id}?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    )
}

/// Everything the page shows about a run: the API's own view of it (`GET
/// /v1/workflow-runs/{id}?include=steps,usage[,trace]`) and the plan it is pinned to.
pub struct Loaded {
    pub detail: RunDetail,
    pub compiled: Arc<Compiled>,
}

impl Loaded {
    pub fn run(&self) -> &RunView {
        &self.detail.run
    }

    /// The step's view, by name.
    pub fn step(&self, name: &str) -> Option<&StepView> {
        self.detail.steps.iter().find(|s| s.name == name)
    }
}

/// Read a run through the API's query (`api::runs::detail`); the trace only when `trace`.
pub async fn load(
    state: &crate::api::AppState,
    viewer: &Viewer,
    id: &str,
    trace: bool,
) -> Result<Loaded, Response> {
    let run = match state.engine.run(&viewer.workspace_id, id).await {
        Ok(r) => r,
        Err(EngineError::NotFound(m)) => return Err(layout::not_found(&m)),
        Err(e) => return Err(layout::failure(&e.to_string())),
    };
    let include: &[&str] = if trace {
        &["steps", "usage", "trace"]
    } else {
        &["steps", "usage"]
    };
    match crate::api::runs::detail(state, &run, include).await {
        Ok((detail, compiled)) => Ok(Loaded { detail, compiled }),
        Err(ApiError::NotFound(m)) => Err(layout::not_found(&m)),
        Err(e) => Err(layout::failure(&e.message())),
    }
}

/// `$0.0123`, or `None` when no model used has a price.
fn cost(usage: Option<&Usage>) -> Option<String> {
    usage.and_then(|u| u.cost_usd).map(|c| format!("${c:.4}"))
}

fn overview(l: &Loaded, now: jiff::Timestamp) -> Markup {
    let r = l.run();
    let usage = l.detail.usage.as_ref();
    html! {
        div.runhead { (layout::format_toggle()) }
        div.grid2 {
            div { (layout::payload("input", "Input", &r.input)) }
            div {
                @if let Some(e) = &r.error { (layout::payload("error", "Error", e)) }
                @if let Some(o) = &r.output { (layout::payload("output", "Output", o)) }
                @if r.error.is_none() && r.output.is_none() {
                    section.block { h3 { "Output" } p.muted { "None yet." } }
                }
            }
        }
        section.block aria-label="Usage" {
            h3 { "Usage" }
            dl.meta {
                dt { "Duration" } dd { (layout::run_duration(r, now)) }
                dt { "Queue time" } dd { (layout::duration(Some(r.created_at), r.started_at)) }
                @for (model, m) in usage.iter().flat_map(|u| u.models.iter()) {
                    dt { (model) } dd { (m.calls) " call(s) · " (m.prompt_tokens) " prompt + " (m.completion_tokens) " completion tokens" }
                }
                dt { "Cost" } dd { @match cost(usage) { Some(c) => { (c) }, None => { span.muted { "no prices configured (STEPWISE_PRICES)" } } } }
            }
        }
    }
}

fn attempts(l: &Loaded, step: &str) -> Markup {
    let mine = l.step(step).map_or(&[][..], |s| s.attempts.as_slice());
    html! {
        section.card #attempts aria-label={ "Attempts of " (step) } {
            h2 { "Attempts of " code { (step) } }
            @if mine.is_empty() { p.muted { "This step has not started." } }
            @for (n, a) in mine.iter().enumerate() {
                @let key = format!("a{}-{}", a.attempt, step.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
                details open[n + 1 == mine.len()] {
                    summary { "Attempt " (a.attempt) " " (layout::step_badge(a.status.as_str())) " · " (layout::duration(a.started_at, a.finished_at)) }
                    dl.meta {
                        dt { "Run attempt" } dd { (a.run_attempt) }
                        dt { "Started" } dd { (layout::opt_time(a.started_at)) }
                        dt { "Finished" } dd { (layout::opt_time(a.finished_at)) }
                        @if let Some(m) = &a.meta { dt { "Details" } dd { (layout::inline(m)) } }
                    }
                    @if let Some(v) = &a.input { (layout::payload(&format!("{key}-in"), "Input", v)) }
                    @if let Some(v) = &a.output { (layout::payload(&format!("{key}-out"), "Output", v)) }
                    @if let Some(v) = &a.error { (layout::payload(&format!("{key}-err"), "Error", v)) }
                    @if let Some(v) = &a.usage { (layout::payload(&format!("{key}-use"), "Usage", v)) }
                }
            }
        }
    }
}

fn graph_tab(l: &Loaded, step: Option<&str>) -> Markup {
    let status: HashMap<&str, StepStatus> = l
        .detail
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect();
    html! {
        p.muted { "Select a step to see its attempts." }
        // Relative to this run's page: 500 boxes repeat it.
        div.graph { (graph::svg(&l.compiled.plan, &status, step, |s| format!("?tab=graph&step={s}#attempts"))) }
        @if let Some(s) = step { (attempts(l, s)) }
    }
}

fn metadata(l: &Loaded) -> Markup {
    let r = l.run();
    let d = &l.detail;
    let plan = &l.compiled.plan;
    let services: BTreeSet<&str> = d
        .steps
        .iter()
        .filter(|s| !s.attempts.is_empty())
        .filter_map(
            |s| match &plan.definition.steps.get(*plan.order.get(s.index)?)?.kind {
                StepKind::Action(a) => Some(a.uses.as_str()),
                _ => None,
            },
        )
        .collect();
    let models: Vec<&str> = d
        .usage
        .iter()
        .flat_map(|u| u.models.keys())
        .map(String::as_str)
        .collect();
    html! {
        dl.meta.card {
            dt { "Run" } dd { code { (r.id) } }
            dt { "Workflow" } dd { a href={ "/ui/definitions/" (r.definition_slug) } { (r.definition_slug) } " version " (l.compiled.record.version) " " code { (r.definition_id) } }
            dt { "Run attempt" } dd { (r.attempt) }
            dt { "Idempotency key" } dd { @if let Some(k) = &r.idempotency_key { code { (k) } } @else { span.muted { "—" } } }
            @if let Some(p) = &r.parent_run_id { dt { "Parent run" } dd { a href={ "/ui/runs/" (p) } { code { (p) } } } }
            dt { "Actor" } dd { (match &d.actor { Value::Null => "—".to_string(), Value::String(a) => a.clone(), other => other.to_string() }) }
            dt { "Project (workspace)" } dd { code { (r.workspace_id) } }
            dt { "Trigger" } dd { (trigger_label(&d.trigger)) }
            dt { "Trigger (raw)" } dd { (layout::inline(&d.trigger)) }
            dt { "Queue time" } dd { (layout::duration(Some(r.created_at), r.started_at)) }
            dt { "Created" } dd { (layout::time(r.created_at.0)) }
            dt { "Started" } dd { (layout::opt_time(r.started_at)) }
            dt { "Finished" } dd { (layout::opt_time(r.finished_at)) }
            dt { "Models used" } dd { @if models.is_empty() { span.muted { "none" } } @else { (models.join(", ")) } }
            dt { "Services used" } dd { @if services.is_empty() { span.muted { "none" } } @else { (services.into_iter().collect::<Vec<_>>().join(", ")) } }
            dt { "Total cost" } dd { @match cost(d.usage.as_ref()) { Some(c) => { (c) }, None => { span.muted { "—" } } } }
        }
    }
}

async fn trace(state: &crate::api::AppState, l: &Loaded) -> Result<Markup, Response> {
    let store = state.engine.store().clone();
    let id = l.run().id.clone();
    let children = tokio::task::spawn_blocking(move || store.child_runs(&id))
        .await
        .map_err(|e| layout::failure(&e.to_string()))?
        .map_err(|e| layout::failure(&e.to_string()))?;
    let events = l.detail.trace.as_deref().unwrap_or_default();
    Ok(html! {
        @if !children.is_empty() {
            section.card aria-label="Child runs" {
                h2 { "Child runs" }
                ul { @for c in children.iter().map(RunView::new) {
                    li { a href={ "/ui/runs/" (c.id) } { code { (c.id) } } " " (c.definition_slug) " " (layout::badge(&c)) }
                } }
            }
        }
        section.card aria-label="Event log" {
            h2 { "Event log" }
            ol.trace {
                @for e in events {
                    li {
                        span { (layout::time(e.at.0)) }
                        span { strong { (e.kind.as_str()) } @if let Some(s) = &e.step { " " code { (s) } } }
                        span {
                            @if let Some(child) = e.data.get("childRunId").and_then(Value::as_str) {
                                a href={ "/ui/runs/" (child) } { code { (child) } } " "
                            }
                            @if e.data != json!({}) { (layout::inline(&e.data)) }
                        }
                    }
                }
            }
        }
    })
}

/// The part live updates and actions replace: header, actions, tabs and the tab's content.
pub async fn live_section(
    state: &crate::api::AppState,
    viewer: &Viewer,
    l: &Loaded,
    view: &View,
) -> Result<Markup, Response> {
    let r = l.run();
    let now = state.engine.clock().now();
    let panel = match view.tab.as_str() {
        "graph" => graph_tab(l, view.step.as_deref()),
        "timeline" => timeline::waterfall(&l.compiled.plan, &l.detail, now),
        "metadata" => metadata(l),
        "trace" => trace(state, l).await?,
        _ => overview(l, now),
    };
    let here = url(&r.id, &view.tab, view.step.as_deref());
    let step = super::history::current_step(
        r,
        &HashMap::from([(r.definition_id.clone(), l.compiled.clone())]),
    );
    Ok(html! {
        section #live data-refresh hx-get=(here) hx-select="#live" hx-target="this" hx-swap="outerHTML" hx-trigger="refresh" hx-sync="this:queue last" {
            div.runhead.card {
                (layout::badge(r))
                span { a href={ "/ui/definitions/" (r.definition_slug) } { (r.definition_slug) } }
                span.muted { "started " (layout::opt_time(r.started_at)) }
                span.muted { "duration " (layout::run_duration(r, now)) }
                @if let Some(step) = step {
                    span.muted { "step " code { (step) } }
                }
            }
            @if let Some(n) = &view.notice { p.error.card role="alert" { (n) } }
            (actions::panel(viewer, l, view))
            nav.tabs role="tablist" aria-label="Run details" {
                @for (key, label) in TABS {
                    a role="tab" href=(url(&r.id, key, None)) aria-selected=(if view.tab == key { "true" } else { "false" }) { (label) }
                }
            }
            div #panel role="tabpanel" aria-label=(TABS.iter().find(|(k, _)| *k == view.tab).map_or("Overview", |t| t.1)) {
                (panel)
            }
        }
    })
}

/// The whole page; actions render it too (with their problems) when they refuse.
pub async fn render(
    state: &crate::api::AppState,
    viewer: &Viewer,
    l: &Loaded,
    view: &View,
) -> Response {
    let section = match live_section(state, viewer, l, view).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let id = &l.run().id;
    let live = format!("/ui/live?run={id}");
    layout::page(
        viewer,
        Nav::Runs,
        &format!("Run {id}"),
        Some(&live),
        html! {
            p { a href="/ui/runs" { "← History" } }
            h1 { "Run " code { (id) } }
            (section)
        },
    )
    .into_response()
}

pub async fn page(
    State(state): State<crate::api::AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let view = View::read(&q);
    let l = match load(&state, &viewer, &id, view.tab == "trace").await {
        Ok(l) => l,
        Err(r) => return r,
    };
    render(&state, &viewer, &l, &view).await
}
