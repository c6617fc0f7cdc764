//! The compiled DAG as SVG: steps in layers (a step sits one layer below the deepest step
//! it needs), each box coloured by its status and linking to its attempts.

use std::collections::HashMap;

use maud::{Markup, html};

use crate::compile::Plan;
use crate::model::StepStatus;

const W: usize = 170;
const H: usize = 38;
const GAP_X: usize = 24;
const GAP_Y: usize = 34;
const PAD: usize = 12;

/// Longest-path depth of each step (index into `definition.steps`), in plan order.
fn layers(plan: &Plan) -> Vec<usize> {
    let mut depth = vec![0usize; plan.definition.steps.len()];
    for &i in &plan.order {
        depth[i] = plan.deps[i]
            .iter()
            .map(|&d| depth[d] + 1)
            .max()
            .unwrap_or(0);
    }
    depth
}

fn short(name: &str) -> String {
    if name.chars().count() <= 22 {
        name.to_string()
    } else {
        let s: String = name.chars().take(21).collect();
        format!("{s}…")
    }
}

/// `status` names each step's status by step id (none: a definition's graph); `link` makes
/// each box's URL. A graph of 500 steps weighs about 200 KB: what repeats per box is kept
/// short (styles in ui.css, relative links).
pub fn svg(
    plan: &Plan,
    status: &HashMap<&str, StepStatus>,
    selected: Option<&str>,
    link: impl Fn(&str) -> String,
) -> Markup {
    let depth = layers(plan);
    let mut rows: Vec<Vec<usize>> = Vec::new();
    for &i in &plan.order {
        let d = depth[i];
        if rows.len() <= d {
            rows.resize(d + 1, Vec::new());
        }
        rows[d].push(i);
    }
    let mut pos: HashMap<usize, (usize, usize)> = HashMap::new();
    for (d, row) in rows.iter().enumerate() {
        for (k, &i) in row.iter().enumerate() {
            pos.insert(i, (PAD + k * (W + GAP_X), PAD + d * (H + GAP_Y)));
        }
    }
    let widest = rows.iter().map(Vec::len).max().unwrap_or(1);
    let width = PAD * 2 + widest * (W + GAP_X);
    let height = PAD * 2 + rows.len() * (H + GAP_Y);
    let steps = &plan.definition.steps;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) }
            role="img" aria-label={ "Graph of " (steps.len()) " steps" } {
            defs {
                marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" fill="#9aa1ab" {}
                }
            }
            @for &i in &plan.order {
                @for &d in &plan.deps[i] {
                    @let (x1, y1) = pos.get(&d).copied().unwrap_or_default();
                    @let (x2, y2) = pos.get(&i).copied().unwrap_or_default();
                    path.e d={ "M" (x1 + W / 2) " " (y1 + H) "C" (x1 + W / 2) " " (y1 + H + GAP_Y / 2) " " (x2 + W / 2) " " (y2 - GAP_Y / 2) " " (x2 + W / 2) " " (y2) } {}
                }
            }
            @for &i in &plan.order {
                @let step = &steps[i];
                @let (x, y) = pos.get(&i).copied().unwrap_or_default();
                @let st = status.get(step.id.as_str()).map_or("PENDING", |s| s.as_str());
                @let class = if selected == Some(step.id.as_str()) { format!("st-{st} selected") } else { format!("st-{st}") };
                a href=(link(&step.id)) aria-label={ (step.id) ": " (step.kind.type_name()) ", " (st.to_ascii_lowercase()) } data-step=(step.id) {
                    title { (step.id) " (" (step.kind.type_name()) "): " (st) }
                    rect class=(class) x=(x) y=(y) width=(W) height=(H) rx="6" {}
                    text x=(x + 8) y=(y + 16) { (short(&step.id)) }
                    text.sub x=(x + 8) y=(y + 31) {
                        (step.kind.type_name())
                        // A definition's graph has no statuses to show.
                        @if !status.is_empty() { " · " (st.to_ascii_lowercase()) }
                    }
                }
            }
        }
    }
}
