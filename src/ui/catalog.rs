//! Workflows (`/ui/definitions`: versions, source with lint diagnostics inline, graph, a Run
//! form from the input schema) and Triggers (`/ui/triggers`).

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::forms::{self, Form, Problem};
use super::graph;
use super::layout::{self, Nav};
use super::session::Viewer;
use crate::api::{ApiError, AppState};
use crate::diagnostics::SourceFile;

/// `/ui/definitions`: the API's definition list (`api::definitions::views`).
pub async fn definitions(State(state): State<AppState>, viewer: Viewer) -> Response {
    let defs = match crate::api::definitions::views(&state, &viewer.workspace_id).await {
        Ok(d) => d,
        Err(e) => return layout::failure(&e.message()),
    };
    let body = html! {
        h1 { "Workflows" }
        @if defs.is_empty() {
            p.card { "No workflow yet: apply one with " code { "stepwise definitions apply FILE" } " or serve a folder with " code { "--definitions" } "." }
        } @else {
            div.table-wrap { table {
                thead { tr { th scope="col" { "Workflow" } th scope="col" { "Latest version" } th.opt scope="col" { "Label" } th.opt scope="col" { "Applied" } th scope="col" { "Runs" } } }
                tbody { @for d in &defs { tr {
                    td { a href={ "/ui/definitions/" (d.definition_id) } { (d.definition_id) } }
                    td { (d.version) " " code.muted { (d.id) } }
                    td.opt { (d.label.clone().unwrap_or_default()) }
                    td.opt { (layout::time(d.created_at.0)) }
                    td { a href={ "/ui/runs?workflow=" (d.definition_id) } { "History" } }
                } } }
            } }
        }
    };
    layout::page(&viewer, Nav::Definitions, "Workflows", None, body).into_response()
}

/// The source with each diagnostic under the line it points at.
fn source_with_diagnostics(slug: &str, source: &str) -> Markup {
    let file = SourceFile::new(format!("{slug}.yaml"), source);
    let lint = crate::validate::lint(&file);
    let mut by_line: HashMap<usize, Vec<(bool, String)>> = HashMap::new();
    for d in &lint.diagnostics {
        let (line, col) = file.line_col(d.span.start);
        by_line.entry(line).or_default().push((
            d.is_error(),
            format!(
                "{}:{col} {}: {}{}",
                line,
                d.code.as_str(),
                d.message,
                d.help
                    .as_ref()
                    .map(|h| format!(" (help: {h})"))
                    .unwrap_or_default()
            ),
        ));
    }
    html! {
        p.muted { (lint.diagnostics.len()) " diagnostic(s)" }
        pre.source aria-label="Source" tabindex="0" {
            @for (n, line) in source.lines().enumerate() {
                span.ln { (line) }
                @for (error, text) in by_line.get(&(n + 1)).into_iter().flatten() {
                    span class={ "diag " (if *error { "error" } else { "warning" }) } role="note" { (text) }
                }
            }
        }
    }
}

/// The definition's page (the API's `api::definitions::detail`); the Run form shows
/// `problems` when a start was refused.
pub async fn definition_page(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    form: &Form,
    problems: &[Problem],
) -> Response {
    let detail = match crate::api::definitions::detail(state, &viewer.workspace_id, id).await {
        Ok(d) => d,
        Err(ApiError::NotFound(m)) => return layout::not_found(&m),
        Err(e) => return layout::failure(&e.message()),
    };
    let rec = &detail.definition;
    let versions = &detail.versions;
    let compiled = match state.engine.compiled(&viewer.workspace_id, &rec.id).await {
        Ok(c) => c,
        Err(e) => return layout::failure(&e.to_string()),
    };
    let latest = versions.last().map(|v| v.id.clone());
    let schema = compiled.plan.definition.input.clone();
    let slug = rec.definition_id.clone();
    let body = html! {
        p { a href="/ui/definitions" { "← Workflows" } }
        h1 { (slug) " " span.muted { "version " (rec.version) } }
        @if let Some(d) = &compiled.plan.definition.description { p { (d) } }
        section.card aria-label="Run this workflow" {
            h2 { "Run" }
            @if latest.as_deref() != Some(rec.id.as_str()) {
                p.muted { "A run always starts on the latest version." }
            }
            form method="post" action={ "/ui/definitions/" (slug) "/run" } {
                input type="hidden" name="_csrf" value=(viewer.csrf);
                (forms::fields("in", schema.as_ref(), form, problems))
                button.primary type="submit" { "Run " (slug) }
            }
        }
        section aria-label="Versions" {
            h2 { "Versions" }
            div.table-wrap { table {
                thead { tr { th scope="col" { "Version" } th scope="col" { "Id" } th.opt scope="col" { "Label" } th scope="col" { "Applied" } } }
                tbody { @for v in versions.iter().rev() { tr {
                    td { @if v.id == rec.id { strong { (v.version) } } @else { a href={ "/ui/definitions/" (v.id) } { (v.version) } } }
                    td.id { code { (v.id) } }
                    td.opt { (v.label.clone().unwrap_or_default()) }
                    td { (layout::time(v.created_at.0)) }
                } } }
            } }
        }
        section aria-label="Graph" {
            h2 { "Graph" }
            div.graph { (graph::svg(&compiled.plan, &HashMap::new(), None, |s| format!("#step-{s}"))) }
        }
        section aria-label="Source" {
            h2 { "Source" }
            (source_with_diagnostics(&slug, &detail.source))
        }
    };
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        // Shown in place by the browser; htmx is not involved in this form.
        StatusCode::BAD_REQUEST
    };
    (
        status,
        layout::page(viewer, Nav::Definitions, &slug, None, body),
    )
        .into_response()
}

pub async fn definition(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    definition_page(&state, &viewer, &id, &Form::default(), &[]).await
}

fn or_dash(v: Option<&String>) -> Markup {
    match v {
        Some(t) => html! { (t) },
        None => html! { span.muted { "—" } },
    }
}

/// `/ui/triggers`: the API's trigger list (`api::triggers::views`), one row each.
pub async fn triggers(State(state): State<AppState>, viewer: Viewer) -> Response {
    let rows = match crate::api::triggers::views(&state, &viewer.workspace_id).await {
        Ok(r) => r,
        Err(e) => return layout::failure(&e.message()),
    };
    let body = html! {
        h1 { "Triggers" }
        @if rows.is_empty() {
            p.card { "No trigger runs here. Triggers are files in the folder given to " code { "stepwise serve --definitions" } "." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Trigger" } th scope="col" { "Kind" } th scope="col" { "Workflow" }
                    th scope="col" { "Next firing" } th scope="col" { "Last firing" } th scope="col" { "Last error" }
                } }
                tbody { @for t in &rows { tr data-trigger=(t.name) {
                    td { (t.name) @if !t.enabled { " " span.badge.st-CANCELLED { "disabled" } } @if let Some(why) = &t.inactive { br; span.error { "inactive: " (why) } } }
                    td { (t.kind) @if let Some(s) = &t.signal { br; span.muted { "signal " code { (s.signal_type) } } } }
                    td { @match &t.workflow { Some(w) => { a href={ "/ui/definitions/" (w) } { (w) } }, None => { span.muted { "—" } } } }
                    td { (or_dash(t.next_firing.as_ref())) }
                    td { (or_dash(t.last_firing.as_ref())) }
                    td {
                        @match &t.last_error {
                            Some(e) => { span.error { (e) } @if let Some(at) = &t.last_error_at { br; span.muted { "at " (at) } } },
                            None => { span.muted { "—" } },
                        }
                    }
                } } }
            } }
        }
    };
    layout::page(&viewer, Nav::Triggers, "Triggers", None, body).into_response()
}
