//! History (`/ui/runs`): every run of the workspace, newest first, with filters that live
//! in the URL, server-side paging and live updates.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::Value;

use super::layout::{self, Nav};
use super::session::Viewer;
use crate::api::AppState;
use crate::api::views::{HistoryRun, RunView};
use crate::engine::Compiled;
use crate::model::RunStatus;
use crate::store::{HistoryFilter, RunQuery};

/// Rows per page unless the URL says otherwise.
pub const PAGE_SIZE: u64 = 25;

/// How runs started, as the trigger filter offers them: every `trigger.kind` a run is
/// created with (the REST API, the CLI, this UI, triggers, a `workflow` step, an agent's
/// tool call, MCP, seed 003's agent endpoint, a failure alert's workflow). A kind missing
/// here can still be filtered through the URL, but nobody would find it.
const TRIGGER_KINDS: [(&str, &str); 11] = [
    ("api", "API"),
    ("cli", "CLI"),
    ("ui", "Web UI"),
    ("webhook", "Webhook"),
    ("schedule", "Schedule"),
    ("poll", "Poll"),
    ("workflow", "Workflow step"),
    ("tool", "Workflow tool"),
    ("mcp", "MCP"),
    ("agent", "Agent"),
    ("alert", "Failure alert"),
];

/// The filters of the page, read from (and written back to) its URL.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub status: Option<RunStatus>,
    pub workflow: Option<String>,
    pub trigger: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub search: Option<String>,
    pub page: u64,
    pub size: u64,
    /// Values that could not be read, to say so on the page.
    pub problems: Vec<String>,
}

/// `2026-04-02T10:00` (a datetime-local field, taken as UTC) or an RFC 3339 time.
fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse::<jiff::Timestamp>().ok().or_else(|| {
        s.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })
}

impl Filters {
    pub fn read(q: &HashMap<String, String>) -> Filters {
        let text = |k: &str| {
            q.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut f = Filters {
            workflow: text("workflow"),
            trigger: text("trigger"),
            from: text("from"),
            to: text("to"),
            search: text("q"),
            page: text("page")
                .and_then(|p| p.parse().ok())
                .filter(|p| *p >= 1)
                .unwrap_or(1),
            size: text("size")
                .and_then(|p| p.parse().ok())
                .filter(|p| (1..=200).contains(p))
                .unwrap_or(PAGE_SIZE),
            ..Filters::default()
        };
        if let Some(s) = text("status") {
            match s.to_ascii_uppercase().parse::<RunStatus>() {
                Ok(s) => f.status = Some(s),
                Err(e) => f.problems.push(format!("status: {e}")),
            }
        }
        for (name, v) in [("from", &f.from), ("to", &f.to)] {
            if let Some(v) = v
                && parse_time(v).is_none()
            {
                f.problems.push(format!("{name}: `{v}` is not a time"));
            }
        }
        f
    }

    pub fn query(&self, workspace_id: &str) -> (RunQuery, HistoryFilter) {
        (
            RunQuery {
                workspace_id: workspace_id.to_string(),
                status: self.status,
                definition: self.workflow.clone(),
                from: self.from.as_deref().and_then(parse_time),
                to: self.to.as_deref().and_then(parse_time),
                page: self.page,
                page_size: self.size,
            },
            HistoryFilter {
                trigger_kind: self.trigger.clone(),
                search: self.search.clone(),
                oldest_first: false,
            },
        )
    }

    /// The URL of this view at another page.
    pub fn url(&self, page: u64) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(s) = self.status {
            pairs.push(("status", s.as_str().to_string()));
        }
        for (k, v) in [
            ("workflow", &self.workflow),
            ("trigger", &self.trigger),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.search),
        ] {
            if let Some(v) = v {
                pairs.push((k, v.clone()));
            }
        }
        if self.size != PAGE_SIZE {
            pairs.push(("size", self.size.to_string()));
        }
        if page > 1 {
            pairs.push(("page", page.to_string()));
        }
        let qs = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        if qs.is_empty() {
            "/ui/runs".into()
        } else {
            format!("/ui/runs?{qs}")
        }
    }
}

/// The compiled version of each run's definition (for step names), read once per version.
pub async fn plans(
    state: &AppState,
    runs: &[&RunView],
    workspace_id: &str,
) -> HashMap<String, Arc<Compiled>> {
    let mut out = HashMap::new();
    for r in runs {
        let id = r.definition_id.as_str();
        if out.contains_key(id) {
            continue;
        }
        if let Ok(c) = state.engine.compiled(workspace_id, id).await {
            out.insert(id.to_string(), c);
        }
    }
    out
}

/// The name of the step a run is at (its `currentStepIndex` in plan order).
pub fn current_step(r: &RunView, plans: &HashMap<String, Arc<Compiled>>) -> Option<String> {
    let c = plans.get(&r.definition_id)?;
    let i = usize::try_from(r.current_step_index).ok()?;
    let step = c.plan.order.get(i)?;
    Some(c.plan.definition.steps.get(*step)?.id.clone())
}

pub fn trigger_label(trigger: &Value) -> String {
    trigger
        .get("label")
        .and_then(|l| l.as_str())
        .or_else(|| trigger.get("kind").and_then(|k| k.as_str()))
        .unwrap_or("—")
        .to_string()
}

/// Runs as table rows, in the API's history shape.
pub fn table(
    runs: &[HistoryRun],
    plans: &HashMap<String, Arc<Compiled>>,
    now: jiff::Timestamp,
) -> Markup {
    html! {
        div.table-wrap {
            table {
                caption.muted style="text-align:left;padding:6px 10px" { "Runs" }
                thead { tr {
                    th scope="col" { "Run" } th scope="col" { "Workflow" } th scope="col" { "Status" }
                    th.opt scope="col" { "Trigger" } th scope="col" { "Started" } th.opt scope="col" { "Duration" }
                    th.opt scope="col" { "Current step" }
                } }
                tbody {
                    @for h in runs {
                        @let r = &h.run;
                        tr data-run=(r.id) {
                            td.id { a href={ "/ui/runs/" (r.id) } { (r.id) } }
                            td { (r.definition_slug) }
                            td { (layout::badge(r)) }
                            td.opt { (trigger_label(&h.trigger)) }
                            td { (layout::opt_time(r.started_at.or(Some(r.created_at)))) }
                            td.opt { (layout::run_duration(r, now)) }
                            td.opt { (current_step(r, plans).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

fn filter_form(f: &Filters, workflows: &[String]) -> Markup {
    html! {
        form.filters method="get" action="/ui/runs" role="search" aria-label="Filter runs"
            hx-get="/ui/runs" hx-select="#runs" hx-target="#runs" hx-swap="outerHTML"
            hx-push-url="true" hx-trigger="change, submit" {
            label { "Status"
                select name="status" {
                    option value="" { "Any" }
                    @for s in RunStatus::ALL {
                        option value=(s.as_str()) selected[f.status == Some(s)] { (super::text::title_case(s.as_str())) }
                    }
                }
            }
            label { "Workflow"
                select name="workflow" {
                    option value="" { "Any" }
                    @for w in workflows {
                        option value=(w) selected[f.workflow.as_deref() == Some(w.as_str())] { (w) }
                    }
                }
            }
            label { "Trigger"
                select name="trigger" {
                    option value="" { "Any" }
                    @for (k, label) in TRIGGER_KINDS {
                        option value=(k) selected[f.trigger.as_deref() == Some(k)] { (label) }
                    }
                }
            }
            label { "From (UTC)" input type="datetime-local" name="from" value=(f.from.clone().unwrap_or_default()); }
            label { "To (UTC)" input type="datetime-local" name="to" value=(f.to.clone().unwrap_or_default()); }
            label { "Search input and output" input type="search" name="q" value=(f.search.clone().unwrap_or_default()) placeholder="text"; }
            button type="submit" { "Filter" }
            a.button href="/ui/runs" { "Clear" }
        }
    }
}

/// `total` runs match (at least, with `more`), shown `size` a page.
pub fn pager(total: u64, more: bool, page: u64, size: u64, url: impl Fn(u64) -> String) -> Markup {
    let pages = total.div_ceil(size).max(1);
    let first = if total == 0 {
        0
    } else {
        ((page - 1) * size + 1).min(total)
    };
    let last = (page * size).min(total);
    let plus = if more { "+" } else { "" };
    html! {
        nav.pager aria-label="Pages" {
            span {
                (first) "–" (last) " of " strong { (total) (plus) } " runs · page " (page) " of " (pages) (plus)
            }
            @if page > 1 { a href=(url(page - 1)) rel="prev" { "← Newer" } }
            @if page < pages || more { a href=(url(page + 1)) rel="next" { "Older →" } }
        }
    }
}

/// The part of the page that filters and live updates replace.
pub async fn runs_section(
    state: &AppState,
    viewer: &Viewer,
    f: &Filters,
) -> Result<Markup, Response> {
    let (q, hf) = f.query(&viewer.workspace_id);
    let store = state.engine.store().clone();
    let found = tokio::task::spawn_blocking(move || store.history(&q, &hf))
        .await
        .map_err(|e| layout::failure(&e.to_string()))?
        .map_err(|e| layout::failure(&e.to_string()))?;
    let runs: Vec<HistoryRun> = found.runs.iter().map(HistoryRun::new).collect();
    let views: Vec<&RunView> = runs.iter().map(|h| &h.run).collect();
    let plans = plans(state, &views, &viewer.workspace_id).await;
    let now = state.engine.clock().now();
    let url = f.url(f.page);
    Ok(html! {
        section #runs data-refresh hx-get=(url) hx-select="#runs" hx-target="this" hx-swap="outerHTML" hx-trigger="refresh" hx-sync="this:queue last" aria-live="polite" {
            @for p in &f.problems { p.error role="alert" { (p) } }
            (pager(found.total, found.more, f.page, f.size, |p| f.url(p)))
            @if let Some(read) = found.searched {
                p.muted role="note" {
                    "The search read the newest " (read) " runs that match the other filters. "
                    "To search older runs, set “To” to an earlier time."
                }
            }
            @if runs.is_empty() && f.url(1) == "/ui/runs" {
                p.card { "No runs yet. Start one from a workflow's page (" a href="/ui/definitions" { "Workflows" } "), the CLI or the API." }
            } @else if runs.is_empty() {
                p.card { "No runs match these filters." }
            } @else {
                (table(&runs, &plans, now))
            }
        }
    })
}

pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let f = Filters::read(&q);
    let store = state.engine.store().clone();
    let ws = viewer.workspace_id.clone();
    let workflows: Vec<String> = tokio::task::spawn_blocking(move || store.list_definitions(&ws))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.slug)
        .collect();
    let section = match runs_section(&state, &viewer, &f).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    layout::page(
        &viewer,
        Nav::Runs,
        "History",
        Some("/ui/live"),
        html! {
            h1 { "History" }
            (filter_form(&f, &workflows))
            (section)
        },
    )
    .into_response()
}
