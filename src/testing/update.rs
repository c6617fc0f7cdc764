//! `--update`: write what the runs did into the expectations they state (golden style).
//! Only `expect.status` and `expect.output` that a case already has are rewritten, in place;
//! the rest of the file (comments included) is left as it is.

use serde_json::Value;

use super::files::Suite;
use super::runner::Actual;
use crate::yaml::pointer_push;

/// The test file's text with the expectations of failing cases replaced; `None` when
/// nothing changes.
pub fn updated_text(suite: &Suite, actuals: &[Actual], failing: &[bool]) -> Option<String> {
    let text: &str = &suite.file.text;
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for ((case, actual), failed) in suite.test.cases.iter().zip(actuals).zip(failing) {
        if !failed {
            continue;
        }
        let xp = &case.expect.pointer;
        let mut replace = |field: &str, v: &Value| {
            let p = pointer_push(xp, field);
            if let Some(span) = suite.spans.get(&p) {
                let start = span.value.start;
                let end = span.end.max(start + span.value.len).min(text.len());
                let len = match flow_end(&text[start..]) {
                    Some(n) => n,
                    None => strip_trailing_comment(&text[start..end]).trim_end().len(),
                };
                edits.push((start, start + len, flow(v)));
            }
        };
        if case
            .expect
            .status
            .as_ref()
            .is_some_and(|s| *s != actual.status)
        {
            replace("status", &Value::String(actual.status.clone()));
        }
        let output = actual.output.clone().unwrap_or(Value::Null);
        if let Some(want) = &case.expect.output {
            let mut diffs = Vec::new();
            super::expect::diff("", want, &output, false, &mut diffs);
            if !diffs.is_empty() {
                replace("output", &output);
            }
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = text.to_string();
    for (start, end, with) in edits {
        out.replace_range(start..end, &with);
    }
    (out != text).then_some(out)
}

/// A value as one line of YAML flow style (JSON is valid YAML 1.2).
fn flow(v: &Value) -> String {
    v.to_string()
}

/// A one-line scalar may carry a trailing `# comment`; keep it out of the replaced range.
fn strip_trailing_comment(node: &str) -> &str {
    if node.contains('\n') {
        return node;
    }
    match node.find(" #") {
        Some(i) if !node.starts_with(['"', '\'', '{', '[']) => &node[..i],
        _ => node,
    }
}

/// Length of a flow collection (`{…}` or `[…]`) at the start of `text`, brackets balanced
/// and quoted text skipped; `None` for anything else.
fn flow_end(text: &str) -> Option<usize> {
    if !text.starts_with(['{', '[']) {
        return None;
    }
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}
