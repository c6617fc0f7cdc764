//! Run detail (`/ui/runs/{id}`): a header with the run's status and what a person can do
//! about it, then tabs (Overview, Graph, Timeline, Metadata, Trace) chosen in the URL.

use std::collections::{BTreeSet, HashMap};

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
use crate::definition::StepKind;
use crate::engine::{Compiled, EngineError};
use crate::store::{RunRecord, StepRecord};

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

/// Everything the page reads about a run.
pub struct Loaded {
    pub run: RunRecord,
    pub steps: Vec<StepRecord>,
    pub compiled: std::sync::Arc<Compiled>,
}

pub async fn load(
    state: &crate::api::AppState,
    viewer: &Viewer,
    id: &str,
) -> Result<Loaded, Response> {
    let run = match state.engine.run(&viewer.workspace_id, id).await {
        Ok(r) => r,
        Err(EngineError::NotFound(m)) => return Err(layout::not_found(&m)),
        Err(e) => return Err(layout::failure(&e.to_string())),
    };
    let store = state.engine.store().clone();
    let rid = run.id.clone();
    let steps = tokio::task::spawn_blocking(move || store.steps(&rid))
        .await
        .map_err(|e| layout::failure(&e.to_string()))?
        .map_err(|e| layout::failure(&e.to_string()))?;
    let compiled = state
        .engine
        .compiled(&run.workspace_id, &run.definition_id)
        .await
        .map_err(|e| layout::failure(&e.to_string()))?;
    Ok(Loaded {
        run,
        steps,
        compiled,
    })
}

/// The latest attempt of each step, by step id.
fn latest(steps: &[StepRecord]) -> HashMap<String, &StepRecord> {
    let mut out: HashMap<String, &StepRecord> = HashMap::new();
    for s in steps {
        match out.get(&s.step_id) {
            Some(o) if o.attempt >= s.attempt => {}
            _ => {
                out.insert(s.step_id.clone(), s);
            }
        }
    }
    out
}

/// Calls and tokens of one model: (model, calls, prompt tokens, completion tokens).
type ModelUse = (String, u64, u64, u64);

fn usage_lines(steps: &[StepRecord], prices: &Value) -> (Vec<ModelUse>, Option<f64>) {
    let mut models: Vec<ModelUse> = Vec::new();
    let mut cost = 0.0;
    let mut priced = false;
    for s in steps {
        let Some(u) = &s.usage else { continue };
        let model = u["model"].as_str().unwrap_or("unknown").to_string();
        let (p, c) = (
            u["promptTokens"].as_u64().unwrap_or(0),
            u["completionTokens"].as_u64().unwrap_or(0),
        );
        if let Some(price) = prices.get(&model) {
            cost += p as f64 * price["input"].as_f64().unwrap_or(0.0) / 1e6
                + c as f64 * price["output"].as_f64().unwrap_or(0.0) / 1e6;
            priced = true;
        }
        match models.iter_mut().find(|m| m.0 == model) {
            Some(m) => {
                m.1 += u["calls"].as_u64().unwrap_or(1);
                m.2 += p;
                m.3 += c;
            }
            None => models.push((model, u["calls"].as_u64().unwrap_or(1), p, c)),
        }
    }
    (models, priced.then_some(cost))
}

fn overview(l: &Loaded, prices: &Value, now: jiff::Timestamp) -> Markup {
    let r = &l.run;
    let (models, cost) = usage_lines(&l.steps, prices);
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
                dt { "Duration" } dd { (layout::duration(r.started_at, r.finished_at.or_else(|| (!r.status.is_terminal()).then_some(now)))) }
                dt { "Queue time" } dd { (layout::duration(Some(r.created_at), r.started_at)) }
                @for (model, calls, p, c) in &models {
                    dt { (model) } dd { (calls) " call(s) · " (p) " prompt + " (c) " completion tokens" }
                }
                dt { "Cost" } dd { @match cost { Some(c) => { "$" (format!("{c:.4}")) }, None => { span.muted { "no prices configured (STEPWISE_PRICES)" } } } }
            }
        }
    }
}

fn attempts(steps: &[StepRecord], step: &str) -> Markup {
    let mine: Vec<&StepRecord> = steps.iter().filter(|s| s.step_id == step).collect();
    html! {
        section.card #attempts aria-label={ "Attempts of " (step) } {
            h2 { "Attempts of " code { (step) } }
            @if mine.is_empty() { p.muted { "This step has not started." } }
            @for a in &mine {
                @let key = format!("a{}-{}", a.attempt, step.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
                details open[mine.len() == 1 || Some(a) == mine.last()] {
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
    let status: HashMap<String, String> = latest(&l.steps)
        .into_iter()
        .map(|(k, v)| (k, v.status.as_str().to_string()))
        .collect();
    let id = l.run.id.clone();
    html! {
        p.muted { "Select a step to see its attempts." }
        div.graph { (graph::svg(&l.compiled.plan, &status, step, |s| format!("{}#attempts", url(&id, "graph", Some(s))))) }
        @if let Some(s) = step { (attempts(&l.steps, s)) }
    }
}

fn metadata(l: &Loaded, prices: &Value) -> Markup {
    let r = &l.run;
    let (models, cost) = usage_lines(&l.steps, prices);
    let ran: BTreeSet<&str> = l.steps.iter().map(|s| s.step_id.as_str()).collect();
    let services: BTreeSet<String> = l
        .compiled
        .plan
        .definition
        .steps
        .iter()
        .filter(|s| ran.contains(s.id.as_str()))
        .filter_map(|s| match &s.kind {
            StepKind::Action(a) => Some(a.uses.clone()),
            _ => None,
        })
        .collect();
    html! {
        dl.meta.card {
            dt { "Run" } dd { code { (r.id) } }
            dt { "Workflow" } dd { a href={ "/ui/definitions/" (r.definition_slug) } { (r.definition_slug) } " version " (l.compiled.record.version) " " code { (r.definition_id) } }
            dt { "Run attempt" } dd { (r.attempt) }
            dt { "Idempotency key" } dd { @if let Some(k) = &r.idempotency_key { code { (k) } } @else { span.muted { "—" } } }
            @if let Some(p) = &r.parent_run_id { dt { "Parent run" } dd { a href={ "/ui/runs/" (p) } { code { (p) } } } }
            dt { "Actor" } dd { (r.trigger.get("actor").map_or_else(|| "—".to_string(), |a| a.as_str().map_or_else(|| a.to_string(), str::to_string))) }
            dt { "Project (workspace)" } dd { code { (r.workspace_id) } }
            dt { "Trigger" } dd { (trigger_label(r)) }
            dt { "Trigger (raw)" } dd { (layout::inline(&r.trigger)) }
            dt { "Queue time" } dd { (layout::duration(Some(r.created_at), r.started_at)) }
            dt { "Created" } dd { (layout::time(r.created_at)) }
            dt { "Started" } dd { (layout::opt_time(r.started_at)) }
            dt { "Finished" } dd { (layout::opt_time(r.finished_at)) }
            dt { "Models used" } dd { @if models.is_empty() { span.muted { "none" } } @else { (models.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", ")) } }
            dt { "Services used" } dd { @if services.is_empty() { span.muted { "none" } } @else { (services.into_iter().collect::<Vec<_>>().join(", ")) } }
            dt { "Total cost" } dd { @match cost { Some(c) => { "$" (format!("{c:.4}")) }, None => { span.muted { "—" } } } }
        }
    }
}

async fn trace(state: &crate::api::AppState, run: &RunRecord) -> Result<Markup, Response> {
    let store = state.engine.store().clone();
    let id = run.id.clone();
    let (events, children) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((store.events(&id)?, store.child_runs(&id)?))
    })
    .await
    .map_err(|e| layout::failure(&e.to_string()))?
    .map_err(|e| layout::failure(&e.to_string()))?;
    Ok(html! {
        @if !children.is_empty() {
            section.card aria-label="Child runs" {
                h2 { "Child runs" }
                ul { @for c in &children {
                    li { a href={ "/ui/runs/" (c.id) } { code { (c.id) } } " " (c.definition_slug) " " (layout::badge(c)) }
                } }
            }
        }
        section.card aria-label="Event log" {
            h2 { "Event log" }
            ol.trace {
                @for e in &events {
                    li {
                        span { (layout::time(e.at)) }
                        span { strong { (e.kind.as_str()) } @if let Some(s) = &e.step_id { " " code { (s) } } }
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
    let r = &l.run;
    let now = state.engine.clock().now();
    let panel = match view.tab.as_str() {
        "graph" => graph_tab(l, view.step.as_deref()),
        "timeline" => timeline::waterfall(&l.compiled.plan, r, &l.steps, now),
        "metadata" => metadata(l, &state.prices),
        "trace" => trace(state, r).await?,
        _ => overview(l, &state.prices, now),
    };
    let here = url(&r.id, &view.tab, view.step.as_deref());
    Ok(html! {
        section #live data-refresh hx-get=(here) hx-select="#live" hx-target="this" hx-swap="outerHTML" hx-trigger="refresh" hx-sync="this:queue last" {
            div.runhead.card {
                (layout::badge(r))
                span { a href={ "/ui/definitions/" (r.definition_slug) } { (r.definition_slug) } }
                span.muted { "started " (layout::opt_time(r.started_at)) }
                span.muted { "duration " (layout::duration(r.started_at, r.finished_at.or_else(|| (!r.status.is_terminal()).then_some(now)))) }
                @if let Some(step) = super::history::current_step(r, &HashMap::from([(r.definition_id.clone(), l.compiled.clone())])) {
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
    let live = format!("/ui/live?run={}", l.run.id);
    layout::page(
        viewer,
        Nav::Runs,
        &format!("Run {}", l.run.id),
        Some(&live),
        html! {
            p { a href="/ui/runs" { "← History" } }
            h1 { "Run " code { (l.run.id) } }
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
    let l = match load(&state, &viewer, &id).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    render(&state, &viewer, &l, &View::read(&q)).await
}
