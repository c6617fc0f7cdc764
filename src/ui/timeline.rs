//! The waterfall: one row per step attempt. The hatched part is time the attempt waited
//! to start (queued behind its needs, or backing off after the attempt before it); the solid
//! part is time it ran (or waited on an approval, a signal or a timer).

use std::collections::HashMap;

use jiff::Timestamp;
use maud::{Markup, html};

use super::text;
use crate::api::views::{AttemptView, RunDetail};
use crate::compile::Plan;

/// Rows drawn at most; a longer run says how many were left out.
const MAX_ROWS: usize = 1000;

struct Row<'a> {
    step: &'a str,
    attempt: &'a AttemptView,
    ready: Timestamp,
    start: Timestamp,
    end: Timestamp,
    backoff: bool,
}

fn rows<'a>(plan: &Plan, run: &'a RunDetail, now: Timestamp) -> Vec<Row<'a>> {
    // Finish times of every attempt, by step (definition index).
    let mut finished: HashMap<usize, Vec<Timestamp>> = HashMap::new();
    for s in &run.steps {
        if let Some(&i) = plan.order.get(s.index) {
            finished
                .entry(i)
                .or_default()
                .extend(s.attempts.iter().filter_map(|a| a.finished_at).map(|t| t.0));
        }
    }
    let mut out = Vec::new();
    for s in &run.steps {
        let me = plan.order.get(s.index).copied();
        for a in &s.attempts {
            let Some(start) = a.started_at.map(|t| t.0) else {
                continue;
            };
            let end = a.finished_at.map_or(now, |t| t.0).max(start);
            let previous = (a.attempt > 1)
                .then(|| {
                    me.and_then(|i| finished.get(&i))
                        .and_then(|fs| fs.iter().filter(|f| **f <= start).max().copied())
                })
                .flatten();
            let (ready, backoff) = match previous {
                Some(p) => (p, true),
                None => {
                    let needs = me.map(|i| plan.deps[i].as_slice()).unwrap_or_default();
                    let deps_done = needs
                        .iter()
                        .filter_map(|d| finished.get(d))
                        .flatten()
                        .filter(|f| **f <= start)
                        .max()
                        .copied();
                    (deps_done.unwrap_or(run.run.created_at.0).min(start), false)
                }
            };
            out.push(Row {
                step: &s.name,
                attempt: a,
                ready,
                start,
                end,
                backoff,
            });
        }
    }
    out.sort_by_key(|r| (r.ready, r.start));
    out
}

fn pct(t: Timestamp, t0: Timestamp, span: f64) -> f64 {
    let d = t.duration_since(t0).as_secs_f64();
    (d / span * 100.0).clamp(0.0, 100.0)
}

pub fn waterfall(plan: &Plan, run: &RunDetail, now: Timestamp) -> Markup {
    let all = rows(plan, run, now);
    if all.is_empty() {
        return html! { p.card { "No step has started yet." } };
    }
    let t0 = run.run.created_at.0;
    let t1 = all
        .iter()
        .map(|r| r.end)
        .max()
        .unwrap_or(now)
        .max(run.run.finished_at.map_or(t0, |t| t.0));
    let span = t1.duration_since(t0).as_secs_f64().max(0.001);
    let total_ms = t1.duration_since(t0).as_millis();
    html! {
        p.muted {
            span.key.queue style="background:repeating-linear-gradient(45deg,#c9ced6,#c9ced6 3px,#e3e6ea 3px,#e3e6ea 6px)" {} "queued / backing off  "
            span.key style="background:#1668b8" {} "running or waiting  · the run spans " (text::millis(total_ms))
        }
        div.wf role="list" aria-label="Step attempts over time" {
            @for r in all.iter().take(MAX_ROWS) {
                @let q_ms = r.start.duration_since(r.ready).as_millis();
                @let run_ms = r.end.duration_since(r.start).as_millis();
                @let label = format!("{} attempt {}: {} {} then {} {}", r.step, r.attempt.attempt,
                    if r.backoff { "backed off" } else { "queued" }, text::millis(q_ms), r.attempt.status.as_str().to_ascii_lowercase(), text::millis(run_ms));
                div.row role="listitem" aria-label=(label) {
                    span.name { (r.step) @if r.attempt.attempt > 1 { span.muted { " #" (r.attempt.attempt) } } }
                    span.track title=(label) {
                        @let qs = pct(r.ready, t0, span);
                        @let rs = pct(r.start, t0, span);
                        @let re = pct(r.end, t0, span);
                        span.bar.queue style={ "left:" (format!("{qs:.3}")) "%;width:" (format!("{:.3}", (rs - qs).max(0.0))) "%" } {}
                        span class={ "bar run st-" (r.attempt.status.as_str()) } style={ "left:" (format!("{rs:.3}")) "%;width:" (format!("{:.3}", (re - rs).max(0.2))) "%" } {}
                    }
                    span.len { (text::millis(run_ms)) @if q_ms > 0 { br; span { "+" (text::millis(q_ms)) (if r.backoff { " backoff" } else { " queue" }) } } }
                }
            }
        }
        @if all.len() > MAX_ROWS { p.muted { (all.len() - MAX_ROWS) " more attempts are not drawn." } }
    }
}
