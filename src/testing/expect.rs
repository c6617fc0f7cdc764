//! Checking a case's expectations against what its run did. Every failure names the place
//! in the test file (a JSON Pointer, shown as a YAML path with its line) and the values.

use serde_json::Value;

use super::model::Case;
use super::runner::Actual;
use crate::model::StepStatus;
use crate::store::StepRecord;
use crate::yaml::pointer_push;

/// One difference between expected and actual.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Where in the test file (JSON Pointer); the nearest existing node gives the line.
    pub pointer: String,
    pub message: String,
    pub expected: Option<Value>,
    pub actual: Option<Value>,
}

impl Failure {
    fn new(pointer: String, message: impl Into<String>) -> Self {
        Self {
            pointer,
            message: message.into(),
            expected: None,
            actual: None,
        }
    }

    fn values(mut self, expected: Option<Value>, actual: Option<Value>) -> Self {
        self.expected = expected;
        self.actual = actual;
        self
    }
}

/// `/tests/0/expect/output/items/2` → `tests[0].expect.output.items[2]`.
pub fn yaml_path(pointer: &str) -> String {
    let mut out = String::new();
    for tok in pointer.split('/').skip(1) {
        let tok = tok.replace("~1", "/").replace("~0", "~");
        if tok.parse::<usize>().is_ok() {
            out.push_str(&format!("[{tok}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&tok);
        }
    }
    out
}

/// The final attempt of each step, in the order the steps first started.
pub fn last_attempts(steps: &[StepRecord]) -> Vec<&StepRecord> {
    let mut order: Vec<&StepRecord> = Vec::new();
    for s in steps {
        match order
            .iter_mut()
            .find(|o| o.run_id == s.run_id && o.step_id == s.step_id)
        {
            Some(o) if s.attempt >= o.attempt => *o = s,
            Some(_) => {}
            None => order.push(s),
        }
    }
    order.sort_by_key(|s| (s.started_at, s.finished_at));
    order
}

/// Steps in the order they started (first attempts), skipped ones left out.
pub fn start_order(actual: &Actual) -> Vec<String> {
    let mut v: Vec<&StepRecord> = actual
        .steps
        .iter()
        .filter(|s| s.status != StepStatus::Skipped)
        .collect();
    v.sort_by_key(|s| (s.started_at, s.step_index));
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.contains(&s.step_id) {
            out.push(s.step_id.clone());
        }
    }
    out
}

fn ran(s: &StepRecord) -> bool {
    matches!(s.status, StepStatus::Completed | StepStatus::Failed)
}

/// Every failed expectation of a case (empty: the case passed).
pub fn check(case: &Case, actual: &Actual) -> Vec<Failure> {
    let mut out: Vec<Failure> = actual
        .problems
        .iter()
        .map(|p| Failure::new(p.pointer.clone(), p.message.clone()))
        .collect();
    let x = &case.expect;
    let xp = |f: &str| pointer_push(&x.pointer, f);
    let last = last_attempts(&actual.steps);
    let find = |id: &str| last.iter().find(|s| s.step_id == id).copied();
    if let Some(want) = &x.status
        && *want != actual.status
    {
        let mut msg = format!("status: expected {want}, got {}", actual.status);
        if let Some(e) = &actual.error {
            msg.push_str(&format!(
                " ({})",
                e.get("message").and_then(Value::as_str).unwrap_or_default()
            ));
        }
        out.push(Failure::new(xp("status"), msg).values(
            Some(Value::String(want.clone())),
            Some(Value::String(actual.status.clone())),
        ));
    }
    let got_output = actual.output.clone().unwrap_or(Value::Null);
    if let Some(want) = &x.output {
        diff(&xp("output"), want, &got_output, false, &mut out);
    }
    if let Some(want) = &x.output_contains {
        diff(&xp("outputContains"), want, &got_output, true, &mut out);
    }
    if let Some(want) = &x.error {
        let got = actual.error.clone().unwrap_or(Value::Null);
        match want {
            Value::String(text) => {
                let msg = got.get("message").and_then(Value::as_str).unwrap_or("");
                if !msg.contains(text.as_str()) {
                    out.push(
                        Failure::new(
                            xp("error"),
                            format!("error: expected a message containing {text:?}"),
                        )
                        .values(Some(want.clone()), Some(got)),
                    );
                }
            }
            _ => diff(&xp("error"), want, &got, true, &mut out),
        }
    }
    for (field, list, want_ran) in [("ran", &x.ran, true), ("skipped", &x.skipped, false)] {
        for (i, id) in list.iter().flatten().enumerate() {
            let s = find(id);
            let ok = match s {
                Some(s) if want_ran => ran(s),
                Some(s) => s.status == StepStatus::Skipped,
                None => false,
            };
            if !ok {
                let got = s.map_or("did not start".to_string(), |s| s.status.to_string());
                let word = if want_ran { "run" } else { "be skipped" };
                out.push(
                    Failure::new(
                        pointer_push(&xp(field), &i.to_string()),
                        format!("step `{id}` should {word}, but it is {got}"),
                    )
                    .values(None, Some(Value::String(got))),
                );
            }
        }
    }
    if let Some(order) = &x.order {
        let actual_order = start_order(actual);
        let positions: Vec<Option<usize>> = order
            .iter()
            .map(|id| actual_order.iter().position(|a| a == id))
            .collect();
        let in_order =
            positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]);
        if !in_order {
            out.push(
                Failure::new(xp("order"), "steps did not start in this order").values(
                    Some(Value::from(order.clone())),
                    Some(Value::from(actual_order)),
                ),
            );
        }
    }
    for (id, want) in &x.steps {
        let sp = pointer_push(&xp("steps"), id);
        let Some(s) = find(id) else {
            out.push(Failure::new(sp, format!("step `{id}` did not start")));
            continue;
        };
        if let Some(st) = &want.status
            && *st != s.status.as_str()
        {
            out.push(
                Failure::new(
                    pointer_push(&sp, "status"),
                    format!("step `{id}`: expected {st}, got {}", s.status),
                )
                .values(
                    Some(Value::String(st.clone())),
                    Some(Value::String(s.status.to_string())),
                ),
            );
        }
        if let Some(n) = want.attempts {
            let got = i64::try_from(
                actual
                    .steps
                    .iter()
                    .filter(|r| {
                        r.step_id == *id && r.run_id == s.run_id && r.status != StepStatus::Skipped
                    })
                    .count(),
            )
            .unwrap_or(i64::MAX);
            if got != n {
                out.push(
                    Failure::new(
                        pointer_push(&sp, "attempts"),
                        format!("step `{id}`: expected {n} attempt(s), got {got}"),
                    )
                    .values(Some(Value::from(n)), Some(Value::from(got))),
                );
            }
        }
        if let Some(o) = &want.output {
            let got = s.output.clone().unwrap_or(Value::Null);
            diff(&pointer_push(&sp, "output"), o, &got, false, &mut out);
        }
        if let Some(i) = &want.input {
            let got = s.input.clone().unwrap_or(Value::Null);
            diff(&pointer_push(&sp, "input"), i, &got, true, &mut out);
        }
    }
    out
}

/// Compare `want` with `got` at `pointer`; with `subset`, fields `got` has beyond `want`
/// are fine (lists must still have the same length).
pub fn diff(pointer: &str, want: &Value, got: &Value, subset: bool, out: &mut Vec<Failure>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = pointer_push(pointer, k);
                match g.get(k) {
                    Some(gv) => diff(&p, wv, gv, subset, out),
                    None => out.push(
                        Failure::new(p.clone(), format!("{}: missing", yaml_path(&p)))
                            .values(Some(wv.clone()), None),
                    ),
                }
            }
            if !subset {
                for (k, gv) in g {
                    if !w.contains_key(k) {
                        let p = pointer_push(pointer, k);
                        out.push(
                            Failure::new(p.clone(), format!("{}: not expected", yaml_path(&p)))
                                .values(None, Some(gv.clone())),
                        );
                    }
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                diff(&pointer_push(pointer, &i.to_string()), wv, gv, subset, out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        _ if want == got => {}
        _ => out.push(
            Failure::new(pointer.to_string(), yaml_path(pointer))
                .values(Some(want.clone()), Some(got.clone())),
        ),
    }
}
