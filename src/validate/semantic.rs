//! Semantic checks that a JSON Schema cannot express: ids, `needs`, cycles, durations,
//! options, built-in action arguments, embedded JSON Schemas.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::builtins;
use crate::compile;
use crate::definition::{Definition, Retry, StepKind, When};
use crate::diagnostics::{Code, Diagnostic, did_you_mean};
use crate::duration;
use crate::template::single_expression;
use crate::yaml::{SpanIndex, pointer_push};

pub fn check(def: &Definition, spans: &SpanIndex, out: &mut Vec<Diagnostic>) {
    step_ids(def, spans, out);
    needs(def, spans, out);
    for step in &def.steps {
        durations(step, spans, out);
        match &step.kind {
            StepKind::Action(a) => action(step, a, spans, out),
            StepKind::Approval(a) => options(step, &a.options, spans, out),
            StepKind::Wait(w) => {
                if w.duration.is_some() == w.until.is_some() {
                    out.push(
                        Diagnostic::new(
                            Code::WaitNeedsOne,
                            spans.value(&step.field("type")),
                            if w.duration.is_some() {
                                "a `wait` step takes `duration` or `until`, not both"
                            } else {
                                "a `wait` step needs `duration` or `until`"
                            },
                        )
                        .with_label("this wait")
                        .with_help("`duration: 2h` sleeps for a time; `until: \"2026-12-01T09:00:00Z\"` sleeps until a moment"),
                    );
                }
                if let Some(until) = &w.until
                    && !until.contains("{{")
                    && until.trim().parse::<jiff::Timestamp>().is_err()
                {
                    out.push(
                        Diagnostic::new(
                            Code::InvalidTime,
                            spans.value(&step.field("until")),
                            format!("`{until}` is not an RFC 3339 time"),
                        )
                        .with_label("not a time")
                        .with_help(
                            "write e.g. `2026-12-01T09:00:00Z`, or a template that renders one",
                        ),
                    );
                }
            }
            StepKind::Agent(a) => json_schema(a.output.as_ref(), &step.field("output"), spans, out),
            StepKind::Script(s) => {
                super::scripts::check(def, step, s, spans, out);
                json_schema(s.output.as_ref(), &step.field("output"), spans, out);
            }
            StepKind::ExternalEvent(e) => {
                json_schema(e.schema.as_ref(), &step.field("schema"), spans, out);
                duration_at(e.buffer.as_deref(), &step.field("buffer"), spans, out);
                if e.buffer.is_some() && e.correlate.is_none() {
                    out.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            spans.key(&step.field("buffer")),
                            "`buffer` keeps correlated signals, but this step has no `correlate`",
                        )
                        .with_label("nothing to match")
                        .with_help("add e.g. `correlate: \"{{ input.orderId }}\"`"),
                    );
                }
            }
            StepKind::Invalid => {}
        }
        warnings(step, spans, out);
    }
    json_schema(def.input.as_ref(), "/input", spans, out);
    json_schema(def.output.as_ref(), "/output", spans, out);
    if let Some(r) = &def.rate {
        duration_at(Some(&r.per), "/rate/per", spans, out);
    }
}

fn step_ids(def: &Definition, spans: &SpanIndex, out: &mut Vec<Diagnostic>) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, step) in def.steps.iter().enumerate() {
        if step.id.is_empty() {
            continue;
        }
        if let Some(&j) = first.get(step.id.as_str()) {
            let earlier = &def.steps[j];
            out.push(
                Diagnostic::new(
                    Code::DuplicateStep,
                    spans.value(&step.field("id")),
                    format!("step id `{}` is used twice", step.id),
                )
                .with_label("second definition")
                .with_help(format!(
                    "step #{} (`{}`) already has this id; give this step another one",
                    j + 1,
                    earlier.id
                )),
            );
        } else {
            first.insert(&step.id, i);
        }
    }
}

fn needs(def: &Definition, spans: &SpanIndex, out: &mut Vec<Diagnostic>) {
    let ids: Vec<&str> = def.steps.iter().map(|s| s.id.as_str()).collect();
    for step in &def.steps {
        let Some(needs) = &step.needs else { continue };
        for (j, name) in needs.iter().enumerate() {
            // For `needs: x` (a string) the lookup falls back to the `needs` node itself.
            let pointer = pointer_push(&step.field("needs"), &j.to_string());
            if !ids.contains(&name.as_str()) {
                out.push(
                    Diagnostic::new(
                        Code::UnknownStep,
                        spans.value(&pointer),
                        format!("step `{}` needs `{name}`, which is not a step", step.id),
                    )
                    .with_label("no step has this id")
                    .with_help_opt(did_you_mean(name, ids.iter().copied())),
                );
            }
        }
    }
    let deps = compile::dependencies(def);
    for cycle in compile::cycles(&deps) {
        let names: Vec<String> = cycle
            .iter()
            .map(|&i| format!("`{}`", def.steps[i].id))
            .collect();
        let first = &def.steps[cycle[0]];
        let at = if first.needs.is_some() {
            spans.value(&first.field("needs"))
        } else {
            spans.value(&first.field("id"))
        };
        let message = if cycle.len() == 2 {
            format!("step `{}` needs itself", first.id)
        } else {
            format!("steps {} form a cycle", names.join(" → "))
        };
        out.push(
            Diagnostic::new(Code::Cycle, at, message)
                .with_label("this dependency closes the cycle")
                .with_help("a step cannot wait for itself, directly or through other steps; remove one of these `needs`"),
        );
    }
    // Needs that another need already implies clutter the graph without changing it.
    let ancestors = compile::ancestors(&deps);
    for (i, step) in def.steps.iter().enumerate() {
        let Some(needs) = &step.needs else { continue };
        for (j, name) in needs.iter().enumerate() {
            let Some(d) = ids.iter().position(|id| id == name) else {
                continue;
            };
            let implied_by = deps[i]
                .iter()
                .find(|&&other| other != d && ancestors[other][d] && !ancestors[d][other]);
            if let Some(&other) = implied_by {
                out.push(
                    Diagnostic::new(
                        Code::RedundantNeed,
                        spans.value(&pointer_push(&step.field("needs"), &j.to_string())),
                        format!(
                            "`{name}` is already guaranteed to finish before `{}`, through `{}`",
                            step.id, def.steps[other].id
                        ),
                    )
                    .with_label("redundant")
                    .with_help("remove it from `needs`"),
                );
            }
        }
    }
}

fn duration_at(text: Option<&str>, pointer: &str, spans: &SpanIndex, out: &mut Vec<Diagnostic>) {
    let Some(text) = text else { return };
    if text.contains("{{") {
        return;
    }
    if let Err(e) = duration::parse(text) {
        out.push(
            Diagnostic::new(Code::InvalidDuration, spans.value(pointer), e.to_string())
                .with_label("not a duration")
                .with_help(
                    "write a number and a unit (ms, s, m, h, d), e.g. `90s`, `2h`, `7d` or `1h30m`",
                ),
        );
    }
}

fn durations(step: &crate::definition::Step, spans: &SpanIndex, out: &mut Vec<Diagnostic>) {
    duration_at(step.timeout.as_deref(), &step.field("timeout"), spans, out);
    if let Some(Retry::Policy(p)) = &step.retry {
        let retry = step.field("retry");
        duration_at(
            p.initial_delay.as_deref(),
            &pointer_push(&retry, "initial_delay"),
            spans,
            out,
        );
        duration_at(
            p.max_delay.as_deref(),
            &pointer_push(&retry, "max_delay"),
            spans,
            out,
        );
    }
    if let StepKind::Wait(w) = &step.kind {
        duration_at(w.duration.as_deref(), &step.field("duration"), spans, out);
    }
    if let StepKind::Action(a) = &step.kind
        && a.uses == "http"
    {
        let timeout = a.with.get("timeout").and_then(Value::as_str);
        duration_at(
            timeout,
            &pointer_push(&step.field("with"), "timeout"),
            spans,
            out,
        );
    }
}

fn action(
    step: &crate::definition::Step,
    a: &crate::definition::ActionStep,
    spans: &SpanIndex,
    out: &mut Vec<Diagnostic>,
) {
    let Some(spec) = builtins::find(&a.uses) else {
        let names = builtins::ACTIONS.iter().map(|a| a.name);
        out.push(
            Diagnostic::new(
                Code::UnknownAction,
                spans.value(&step.field("uses")),
                format!("`{}` is not a built-in action", a.uses),
            )
            .with_label("unknown action")
            .with_help(did_you_mean(&a.uses, names).unwrap_or_else(|| {
                format!(
                    "the built-in actions are {}",
                    builtins::ACTIONS
                        .iter()
                        .map(|a| a.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })),
        );
        return;
    };
    let with = step.field("with");
    for arg in spec.args.iter().filter(|a| a.required) {
        if !a.with.contains_key(arg.name) {
            let at = if spans.get(&with).is_some() {
                spans.key(&with)
            } else {
                spans.value(&step.field("uses"))
            };
            out.push(
                Diagnostic::new(
                    Code::MissingArgument,
                    at,
                    format!("the `{}` action needs `with.{}`", spec.name, arg.name),
                )
                .with_label(format!("`{}` missing", arg.name))
                .with_help(format!("`{}`: {}", arg.name, arg.doc)),
            );
        }
    }
    let names: Vec<&str> = spec.args.iter().map(|a| a.name).collect();
    for key in a.with.keys() {
        if !names.contains(&key.as_str()) {
            out.push(
                Diagnostic::new(
                    Code::UnknownArgument,
                    spans.key(&pointer_push(&with, key)),
                    format!("the `{}` action has no argument `{key}`", spec.name),
                )
                .with_label("unknown argument")
                .with_help(
                    did_you_mean(key, names.iter().copied())
                        .unwrap_or_else(|| format!("its arguments are {}", names.join(", "))),
                ),
            );
        }
    }
    let invalid = |key: &str, message: String, help: String| {
        Diagnostic::new(
            Code::InvalidArgument,
            spans.value(&pointer_push(&with, key)),
            message,
        )
        .with_label("invalid")
        .with_help(help)
    };
    match spec.name {
        "http" => {
            if let Some(m) = a.with.get("method").and_then(Value::as_str)
                && !m.contains("{{")
                && !builtins::HTTP_METHODS.contains(&m.to_ascii_uppercase().as_str())
            {
                out.push(invalid(
                    "method",
                    format!("`{m}` is not an HTTP method"),
                    format!("use one of {}", builtins::HTTP_METHODS.join(", ")),
                ));
            }
            if a.with.contains_key("json") && a.with.contains_key("body") {
                out.push(invalid(
                    "body",
                    "an `http` action takes `json` or `body`, not both".into(),
                    "`json` sends a JSON document; `body` sends text as it is".into(),
                ));
            }
            if let Some(v) = a.with.get("expect_status") {
                let ok = |v: &Value| v.as_u64().is_some_and(|n| (100..=599).contains(&n));
                let valid = match v {
                    Value::Array(items) => !items.is_empty() && items.iter().all(ok),
                    other => ok(other),
                };
                if !valid {
                    out.push(invalid(
                        "expect_status",
                        "`expect_status` must be a status code (100-599) or a list of them".into(),
                        "e.g. `expect_status: 201` or `expect_status: [200, 404]`".into(),
                    ));
                }
            }
            if let Some(v) = a.with.get("max_response_bytes")
                && !v.as_str().is_some_and(|s| s.contains("{{"))
                && builtins::max_response_bytes(v).is_none()
            {
                out.push(invalid(
                    "max_response_bytes",
                    builtins::max_response_bytes_rule(),
                    format!(
                        "e.g. `max_response_bytes: 52428800` (50 MiB); the default is {} ({})",
                        crate::http_client::DEFAULT_MAX_BODY,
                        crate::http_client::size(crate::http_client::DEFAULT_MAX_BODY)
                    ),
                ));
            }
            if let Some(h) = a.with.get("headers")
                && !h.is_object()
            {
                out.push(invalid(
                    "headers",
                    "`headers` must be a mapping of header names to values".into(),
                    "e.g. `headers: {Authorization: \"Bearer {{ input.token }}\"}`".into(),
                ));
            }
        }
        "log" => {
            if let Some(l) = a.with.get("level").and_then(Value::as_str)
                && !l.contains("{{")
                && !builtins::LOG_LEVELS.contains(&l)
            {
                out.push(invalid(
                    "level",
                    format!("`{l}` is not a log level"),
                    did_you_mean(l, builtins::LOG_LEVELS.iter().copied()).unwrap_or_else(|| {
                        format!("use one of {}", builtins::LOG_LEVELS.join(", "))
                    }),
                ));
            }
        }
        "workflow" => {
            if let Some(d) = a.with.get("definition")
                && !d.is_string()
            {
                out.push(invalid(
                    "definition",
                    "`definition` must be a definitionId".into(),
                    "e.g. `definition: signup-pipeline`".into(),
                ));
            }
        }
        _ => {}
    }
}

fn options(
    step: &crate::definition::Step,
    options: &[String],
    spans: &SpanIndex,
    out: &mut Vec<Diagnostic>,
) {
    let pointer = step.field("options");
    if options.is_empty() {
        out.push(
            Diagnostic::new(
                Code::EmptyOptions,
                spans.value(&pointer),
                "an approval needs at least one option",
            )
            .with_label("no options")
            .with_help("e.g. `options: [approve, reject]`"),
        );
    }
    let mut seen = HashSet::new();
    for (i, o) in options.iter().enumerate() {
        if !seen.insert(o.as_str()) {
            out.push(
                Diagnostic::new(
                    Code::DuplicateOption,
                    spans.value(&pointer_push(&pointer, &i.to_string())),
                    format!("option `{o}` is listed twice"),
                )
                .with_label("duplicate")
                .with_help("each option must be distinct: the choice is the step's output"),
            );
        }
    }
}

/// An embedded JSON Schema (input, output, agent output, event payload) must itself be valid.
pub(super) fn json_schema(
    schema: Option<&Value>,
    pointer: &str,
    spans: &SpanIndex,
    out: &mut Vec<Diagnostic>,
) {
    let Some(schema) = schema else { return };
    if !(schema.is_object() || schema.is_boolean()) {
        return; // the structural check already reported it
    }
    if let Err(e) = jsonschema::options()
        .should_validate_formats(false)
        .build(schema)
    {
        let inner = e.instance_path().as_str();
        let at = format!("{pointer}{inner}");
        out.push(
            Diagnostic::new(
                Code::InvalidJsonSchema,
                spans.value(&at),
                format!(
                    "`{}` is not a valid JSON Schema: {}",
                    pointer.trim_start_matches('/').replace('/', "."),
                    e.masked()
                ),
            )
            .with_label("invalid schema")
            .with_help("see https://json-schema.org/understanding-json-schema/ for the keywords"),
        );
    }
}

fn warnings(step: &crate::definition::Step, spans: &SpanIndex, out: &mut Vec<Diagnostic>) {
    let waits = matches!(
        step.kind,
        StepKind::Approval(_) | StepKind::Wait(_) | StepKind::ExternalEvent(_)
    );
    if waits && step.retry.is_some() {
        out.push(
            Diagnostic::new(
                Code::RetryIgnored,
                spans.key(&step.field("retry")),
                format!(
                    "`retry` has no effect on {} `{}` step",
                    if step.kind.type_name().starts_with(['a', 'e']) {
                        "an"
                    } else {
                        "a"
                    },
                    step.kind.type_name()
                ),
            )
            .with_label("ignored")
            .with_help("only action and agent steps are retried; remove `retry`"),
        );
    }
    if matches!(step.kind, StepKind::Wait(_)) && step.timeout.is_some() {
        out.push(
            Diagnostic::new(
                Code::RetryIgnored,
                spans.key(&step.field("timeout")),
                "`timeout` has no effect on a `wait` step",
            )
            .with_label("ignored")
            .with_help("a wait ends when its `duration` or `until` is reached; remove `timeout`"),
        );
    }
    let never = match &step.when {
        Some(When::Always(false)) => true,
        Some(When::Expr(e)) => {
            let body = single_expression(e).unwrap_or(e).trim();
            body == "false" || body == "False"
        }
        _ => false,
    };
    if never {
        out.push(
            Diagnostic::new(
                Code::NeverRuns,
                spans.value(&step.field("when")),
                format!(
                    "step `{}` never runs: its condition is always false",
                    step.id
                ),
            )
            .with_label("always false")
            .with_help("remove the step, or give it a real condition"),
        );
    }
}
