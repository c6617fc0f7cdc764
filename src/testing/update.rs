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
                let node = &text[start..end];
                let trimmed = strip_trailing_comment(node).trim_end().len();
                edits.push((start, start + trimmed, flow(v)));
            }
        };
        if case.expect.status.is_some() {
            replace("status", &Value::String(actual.status.clone()));
        }
        if case.expect.output.is_some() {
            replace("output", actual.output.as_ref().unwrap_or(&Value::Null));
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
