//! The page shell (navigation, assets), status badges, payload blocks and times.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::assets;
use super::session::Viewer;
use super::text;
use crate::api::views::{RunView, Time};

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Runs,
    Approvals,
    Definitions,
    Triggers,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · stepwise" }
            link rel="stylesheet" href=(assets::url("ui.css"));
            script src=(assets::url("htmx.min.js")) defer {}
            script src=(assets::url("ui.js")) defer {}
        }
    }
}

/// A page without navigation (sign-in, refusals).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" { (head(title)) body { (body) } }
    }
}

/// A page of the UI. `live` is the event stream that refreshes its `[data-refresh]` parts.
pub fn page(viewer: &Viewer, nav: Nav, title: &str, live: Option<&str>, body: Markup) -> Markup {
    let hx_headers = format!(r#"{{"X-CSRF-Token": "{}"}}"#, viewer.csrf);
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body hx-headers=(hx_headers) data-live=[live] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/runs" { "stepwise" }
                    nav aria-label="Main" {
                        a href="/ui/runs" aria-current=[(nav == Nav::Runs).then_some("page")] { "History" }
                        a href="/ui/approvals" aria-current=[(nav == Nav::Approvals).then_some("page")] { "Approvals" }
                        a href="/ui/definitions" aria-current=[(nav == Nav::Definitions).then_some("page")] { "Workflows" }
                        a href="/ui/triggers" aria-current=[(nav == Nav::Triggers).then_some("page")] { "Triggers" }
                        a href="/docs" { "API" }
                    }
                    span.who {
                        span.muted { (viewer.workspace_id) }
                        @if viewer.signed_in {
                            form method="post" action="/ui/sign-out" {
                                input type="hidden" name="_csrf" value=(viewer.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A page that could not be made: the cause is logged, the visitor gets a short note.
pub fn failure(cause: &str) -> Response {
    tracing::error!("web UI: {cause}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        bare(
            "Error",
            html! { main { h1 { "Something went wrong" } p { "The server logged the cause." } } },
        ),
    )
        .into_response()
}

pub fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        bare(
            "Not found",
            html! { main { h1 { "Not found" } p { (what) } p { a href="/ui/runs" { "Back to History" } } } },
        ),
    )
        .into_response()
}

/// The words of a run's status as History shows it: the API's `waitingOn` label for the
/// waiting kinds ("Waiting for approval", "Waiting on hook", "Sleeping").
pub fn status_label(r: &RunView) -> String {
    match &r.waiting_on {
        Some(w) => w.label.to_string(),
        None => text::title_case(r.status.as_str()),
    }
}

pub fn badge(r: &RunView) -> Markup {
    html! { span class={ "badge st-" (r.status.as_str()) } { (status_label(r)) } }
}

pub fn step_badge(status: &str) -> Markup {
    html! { span class={ "badge st-" (status) } { (text::title_case(status)) } }
}

/// `2026-04-02 12:00:00 UTC`, with the exact time for machines.
pub fn time(t: Timestamp) -> Markup {
    html! { time datetime=(t.to_string()) { (t.strftime("%Y-%m-%d %H:%M:%S")) } }
}

pub fn opt_time(t: Option<Time>) -> Markup {
    match t {
        Some(t) => time(t.0),
        None => html! { span.muted { "—" } },
    }
}

/// `1.2 s`, `350 ms`, `3 min 5 s`.
pub fn duration(a: Option<Time>, b: Option<Time>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => text::millis(b.0.duration_since(a.0).as_millis()),
        _ => "—".into(),
    }
}

/// How long a run has taken: to its end, or until `now` while it goes on.
pub fn run_duration(r: &RunView, now: Timestamp) -> String {
    let end = r
        .finished_at
        .or_else(|| (!r.status.is_terminal()).then_some(Time(now)));
    duration(r.started_at, end)
}

/// A payload, as JSON or YAML (the page's toggle picks), with a copy button. Long ones fold.
pub fn payload(id: &str, label: &str, v: &Value) -> Markup {
    let json = serde_json::to_string_pretty(v).unwrap_or_default();
    let yaml = text::yaml(v);
    let lines = json.lines().count();
    let body = html! {
        div.payload {
            div.tools {
                button type="button" data-copy=(format!("{id}-json")) aria-label={ "Copy " (label) " as JSON" } { "Copy JSON" }
                button type="button" data-copy=(format!("{id}-yaml")) aria-label={ "Copy " (label) " as YAML" } { "Copy YAML" }
            }
            pre.fmt-json id=(format!("{id}-json")) tabindex="0" { code { (json) } }
            pre.fmt-yaml id=(format!("{id}-yaml")) tabindex="0" { code { (yaml) } }
        }
    };
    html! {
        section.block aria-label=(label) {
            h3 { (label) }
            @if lines > 40 {
                details { summary { "Show " (lines) " lines" } (body) }
            } @else { (body) }
        }
    }
}

/// The JSON/YAML switch for the payloads of a page.
pub fn format_toggle() -> Markup {
    html! {
        div.toggle role="group" aria-label="Payload format" {
            button type="button" data-format="json" aria-pressed="true" { "JSON" }
            button type="button" data-format="yaml" aria-pressed="false" { "YAML" }
        }
    }
}

/// An inline JSON value, short (ids and small objects), wrapping anywhere.
pub fn inline(v: &Value) -> Markup {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 300 {
        let short: String = s.chars().take(300).collect();
        return html! { details.inline { summary { code { (short) "…" } } pre { code { (s) } } } };
    }
    html! { code { (s) } }
}
