//! Lint of test files: the schema (`schemas/test.schema.json`), then checks against the
//! workflow under test (and the child workflows it starts): mocks and expectations must name
//! its steps, events must fit a step that waits for them, an expected output must satisfy
//! the output schema. Pure: the caller reads the files ([`super::files`]).

use std::collections::BTreeSet;

use serde_json::Value;

use super::model::DEFAULT_START;
use crate::definition::{Definition, StepKind};
use crate::diagnostics::{Code, Diagnostic, did_you_mean};
use crate::validate::schema::{Format, check_format, json_kind};
use crate::yaml::{SpanIndex, pointer_push};

/// The fields allowed at a place in a test file (for "unknown field" messages).
pub fn allowed_fields(pointer: &str) -> (Vec<&'static str>, String) {
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    match segments.as_slice() {
        [] => (
            vec!["$schema", "workflow", "description", "start", "tests"],
            " at the top of the test file".into(),
        ),
        ["tests", _] => (
            vec![
                "name", "input", "mocks", "live", "events", "runFor", "expect",
            ],
            " in a test case".into(),
        ),
        ["tests", _, "mocks", _] | ["tests", _, "mocks", _, _] => {
            (vec!["output", "error", "toolCalls"], " in a mock".into())
        }
        ["tests", _, "mocks", _, "toolCalls", _] | ["tests", _, "mocks", _, _, "toolCalls", _] => {
            (vec!["tool", "input"], " in a tool call".into())
        }
        ["tests", _, "events", _] => (
            vec!["approve", "option", "signal", "hook", "payload", "at"],
            " in an event".into(),
        ),
        ["tests", _, "expect"] => (
            vec![
                "status",
                "output",
                "outputContains",
                "error",
                "ran",
                "skipped",
                "order",
                "steps",
            ],
            " in `expect`".into(),
        ),
        ["tests", _, "expect", "steps", _] => (
            vec!["status", "attempts", "output", "input"],
            " in a step expectation".into(),
        ),
        _ => (Vec::new(), String::new()),
    }
}

/// The checks that need only the test file itself.
pub fn check_structure(doc: &Value, spans: &SpanIndex) -> Vec<Diagnostic> {
    if !doc.is_object() {
        return vec![
            Diagnostic::new(
                Code::NotAMapping,
                spans.value(""),
                format!(
                    "a test file is a mapping with `workflow` and `tests`, but this is {}",
                    json_kind(doc)
                ),
            )
            .with_label("expected a mapping"),
        ];
    }
    let mut out = check_format(Format::Test, doc, spans);
    if let Some(s) = doc.get("start").and_then(Value::as_str)
        && s.parse::<jiff::Timestamp>().is_err()
    {
        out.push(
            Diagnostic::new(
                Code::InvalidTime,
                spans.value("/start"),
                format!("`start` must be an RFC 3339 time, such as {DEFAULT_START}"),
            )
            .with_label("not an RFC 3339 time"),
        );
    }
    out
}

/// The checks against the workflow under test (`defs[0]`) and its children (`defs[1..]`).
pub fn check_against(doc: &Value, spans: &SpanIndex, defs: &[Definition]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some(main) = defs.first() else {
        return out;
    };
    let steps: Vec<(&Definition, &crate::definition::Step)> = defs
        .iter()
        .flat_map(|d| d.steps.iter().map(move |s| (d, s)))
        .collect();
    let ids: BTreeSet<&str> = steps.iter().map(|(_, s)| s.id.as_str()).collect();
    let find = |id: &str| steps.iter().find(|(_, s)| s.id == id).map(|(_, s)| *s);
    let unknown = |out: &mut Vec<Diagnostic>, ptr: &str, key: bool, id: &str, what: &str| {
        let span = if key {
            spans.key(ptr)
        } else {
            spans.value(ptr)
        };
        out.push(
            Diagnostic::new(
                Code::TestUnknownStep,
                span,
                format!(
                    "{what} names step `{id}`, which `{}` does not have",
                    main.id
                ),
            )
            .with_label("no such step")
            .with_help_opt(did_you_mean(id, ids.iter().copied()).or_else(|| {
                Some(format!(
                    "steps: {}",
                    ids.iter().copied().collect::<Vec<_>>().join(", ")
                ))
            })),
        );
    };
    let Some(cases) = doc.get("tests").and_then(Value::as_array) else {
        return out;
    };
    for (n, case) in cases.iter().enumerate() {
        let cp = pointer_push("/tests", &n.to_string());
        if let Some(Value::Object(mocks)) = case.get("mocks") {
            for id in mocks.keys() {
                let ptr = pointer_push(&pointer_push(&cp, "mocks"), id);
                match find(id) {
                    None => unknown(&mut out, &ptr, true, id, "a mock"),
                    Some(s)
                        if !matches!(
                            s.kind,
                            StepKind::Action(_) | StepKind::Agent(_) | StepKind::Script(_)
                        ) =>
                    {
                        out.push(
                            Diagnostic::new(
                                Code::TestWrongStepType,
                                spans.key(&ptr),
                                format!(
                                    "step `{id}` is {} step: it has no executor to mock",
                                    article(s.kind.type_name())
                                ),
                            )
                            .with_label("cannot be mocked")
                            .with_help(
                                "answer approvals, signals and hooks with `events`; waits pass on the virtual clock",
                            ),
                        );
                    }
                    Some(s) => check_tool_calls(&mut out, spans, &ptr, &mocks[id], s),
                }
            }
        }
        for (i, id) in strs(case.get("live")) {
            if find(id).is_none() {
                let ptr = pointer_push(&pointer_push(&cp, "live"), &i.to_string());
                unknown(&mut out, &ptr, false, id, "`live`");
            }
        }
        if let Some(events) = case.get("events").and_then(Value::as_array) {
            for (i, e) in events.iter().enumerate() {
                let ep = pointer_push(&pointer_push(&cp, "events"), &i.to_string());
                check_event(&mut out, spans, &ep, e, &steps, &unknown);
            }
        }
        let xp = pointer_push(&cp, "expect");
        let Some(expect) = case.get("expect") else {
            continue;
        };
        for field in ["ran", "skipped", "order"] {
            for (i, id) in strs(expect.get(field)) {
                if find(id).is_none() {
                    let ptr = pointer_push(&pointer_push(&xp, field), &i.to_string());
                    unknown(&mut out, &ptr, false, id, &format!("`expect.{field}`"));
                }
            }
        }
        if let Some(Value::Object(m)) = expect.get("steps") {
            for id in m.keys() {
                if find(id).is_none() {
                    let ptr = pointer_push(&pointer_push(&xp, "steps"), id);
                    unknown(&mut out, &ptr, true, id, "`expect.steps`");
                }
            }
        }
        if let (Some(want), Some(schema)) = (expect.get("output"), &main.output)
            && let Ok(v) = jsonschema::options()
                .should_validate_formats(true)
                .build(schema)
        {
            let problems: Vec<String> = v
                .iter_errors(want)
                .map(|e| {
                    let p = e.instance_path().as_str().to_string();
                    if p.is_empty() {
                        e.masked().to_string()
                    } else {
                        format!("{p}: {}", e.masked())
                    }
                })
                .collect();
            if !problems.is_empty() {
                out.push(
                    Diagnostic::new(
                        Code::TestImpossibleOutput,
                        spans.value(&pointer_push(&xp, "output")),
                        format!(
                            "this expected output can never be the result: it does not satisfy the output schema of `{}` ({})",
                            main.id,
                            problems.join("; ")
                        ),
                    )
                    .with_label("fails the workflow's `output` schema"),
                );
            }
        }
    }
    out
}

type Unknown<'a> = dyn Fn(&mut Vec<Diagnostic>, &str, bool, &str, &str) + 'a;

fn check_event(
    out: &mut Vec<Diagnostic>,
    spans: &SpanIndex,
    ep: &str,
    e: &Value,
    steps: &[(&Definition, &crate::definition::Step)],
    unknown: &Unknown<'_>,
) {
    let find = |id: &str| steps.iter().find(|(_, s)| s.id == id).map(|(_, s)| *s);
    if let Some(id) = e.get("approve").and_then(Value::as_str) {
        let ptr = pointer_push(ep, "approve");
        match find(id).map(|s| &s.kind) {
            None => unknown(out, &ptr, false, id, "an approval event"),
            Some(StepKind::Approval(a)) => {
                if let Some(opt) = e.get("option").and_then(Value::as_str)
                    && !a.options.iter().any(|o| o == opt)
                {
                    out.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            spans.value(&pointer_push(ep, "option")),
                            format!(
                                "`{opt}` is not an option of approval `{id}` (options: {})",
                                a.options.join(", ")
                            ),
                        )
                        .with_label("not one of the step's options")
                        .with_help_opt(did_you_mean(opt, a.options.iter().map(String::as_str))),
                    );
                }
            }
            Some(k) => out.push(wrong_type(spans, &ptr, id, k, "an `approval`")),
        }
    }
    if let Some(id) = e.get("hook").and_then(Value::as_str) {
        let ptr = pointer_push(ep, "hook");
        match find(id).map(|s| &s.kind) {
            None => unknown(out, &ptr, false, id, "a hook event"),
            Some(StepKind::Approval(_) | StepKind::ExternalEvent(_)) => {}
            Some(k) => out.push(wrong_type(
                spans,
                &ptr,
                id,
                k,
                "an `approval` or `external_event`",
            )),
        }
    }
    if let Some(sig) = e.get("signal").and_then(Value::as_str) {
        let waiting: Vec<&str> = steps
            .iter()
            .filter_map(|(_, s)| match &s.kind {
                StepKind::ExternalEvent(x) => Some(x.signal.as_str()),
                _ => None,
            })
            .collect();
        if !waiting.contains(&sig) {
            out.push(
                Diagnostic::new(
                    Code::TestUnknownSignal,
                    spans.value(&pointer_push(ep, "signal")),
                    format!("no `external_event` step waits for signal `{sig}`"),
                )
                .with_label("nothing waits for this signal")
                .with_help_opt(did_you_mean(sig, waiting.iter().copied()).or_else(|| {
                    Some(if waiting.is_empty() {
                        "the workflow waits for no signal".to_string()
                    } else {
                        format!("signals waited for: {}", waiting.join(", "))
                    })
                })),
            );
        }
    }
}

fn wrong_type(spans: &SpanIndex, ptr: &str, id: &str, k: &StepKind, want: &str) -> Diagnostic {
    Diagnostic::new(
        Code::TestWrongStepType,
        spans.value(ptr),
        format!(
            "step `{id}` is {} step, not {want} step",
            article(k.type_name())
        ),
    )
    .with_label("wrong step type")
}

fn article(t: &str) -> String {
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an `{t}`")
    } else {
        format!("a `{t}`")
    }
}

fn strs(v: Option<&Value>) -> impl Iterator<Item = (usize, &str)> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, x)| x.as_str().map(|s| (i, s)))
}

/// `toolCalls` in a mock: only for an agent step, each naming one of its tools.
fn check_tool_calls(
    out: &mut Vec<Diagnostic>,
    spans: &SpanIndex,
    ptr: &str,
    spec: &Value,
    step: &crate::definition::Step,
) {
    let outcomes: Vec<(String, &Value)> = match spec {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(j, o)| (pointer_push(ptr, &j.to_string()), o))
            .collect(),
        other => vec![(ptr.to_string(), other)],
    };
    for (op, o) in outcomes {
        let Some(calls) = o.get("toolCalls").and_then(Value::as_array) else {
            continue;
        };
        let cp = pointer_push(&op, "toolCalls");
        let StepKind::Agent(a) = &step.kind else {
            out.push(
                Diagnostic::new(
                    Code::TestWrongStepType,
                    spans.key(&cp),
                    format!(
                        "step `{}` is {} step: only agent steps call tools",
                        step.id,
                        article(step.kind.type_name())
                    ),
                )
                .with_label("not an agent")
                .with_help("mock its outcome with `output` or `error`"),
            );
            continue;
        };
        let names: Vec<&str> = a.tools.iter().map(|t| t.name()).collect();
        for (k, c) in calls.iter().enumerate() {
            let Some(tool) = c.get("tool").and_then(Value::as_str) else {
                continue;
            };
            if names.contains(&tool) {
                continue;
            }
            let tp = pointer_push(&pointer_push(&cp, &k.to_string()), "tool");
            let help = if names.is_empty() {
                Some(format!("step `{}` has no `tools`", step.id))
            } else {
                did_you_mean(tool, names.iter().copied())
                    .or_else(|| Some(format!("its tools: {}", names.join(", "))))
            };
            out.push(
                Diagnostic::new(
                    Code::TestUnknownTool,
                    spans.value(&tp),
                    format!(
                        "a mocked tool call names tool `{tool}`, which agent step `{}` does not offer",
                        step.id
                    ),
                )
                .with_label("no such tool")
                .with_help_opt(help),
            );
        }
    }
}
