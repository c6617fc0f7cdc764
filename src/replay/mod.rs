//! Replay: will the runs in flight survive an edit? Each recorded run is checked against
//! the edited definition; the verdict is compatible, compatible with steps that would run
//! again or be skipped, or incompatible, with the place in the edited YAML that causes it.
//! Pure: the CLI fetches runs (`--db`, `--server`, export files) and prints.

mod recorded;

use serde::Serialize;
use serde_json::Value;

pub use recorded::{EXPORT_FORMAT, Recorded, RecordedStep};

use crate::definition::{Definition, Step, StepKind};
use crate::diagnostics::SourceFile;
use crate::yaml::{SpanIndex, pointer_push};

/// The edited definition, linted, with its source positions.
#[derive(Debug)]
pub struct Edited {
    pub file: SourceFile,
    pub doc: Value,
    pub spans: SpanIndex,
    pub def: Definition,
}

impl Edited {
    /// Parse and lint; `Err` with the first problem when it does not lint.
    pub fn load(file: SourceFile) -> Result<Edited, String> {
        let doc = crate::yaml::parse(&file).map_err(|d| d.message)?;
        let l = crate::validate::lint(&file);
        let errors = l.errors();
        let def = l.definition.ok_or_else(|| {
            format!(
                "{} does not lint ({errors} error(s)); run `stepwise lint` on it",
                file.name
            )
        })?;
        Ok(Edited {
            file,
            doc: doc.value,
            spans: doc.spans,
            def,
        })
    }
}

/// A reason, at a place in the edited definition (JSON Pointer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub pointer: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Compatible,
    CompatibleButRerunOrSkip,
    Incompatible,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Compatible => "compatible",
            Kind::CompatibleButRerunOrSkip => "compatible-but-rerun-or-skip",
            Kind::Incompatible => "incompatible",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub kind: Kind,
    /// Why it is incompatible.
    pub causes: Vec<Finding>,
    /// Steps that would run again, run anew, or be skipped.
    pub changes: Vec<Finding>,
}

/// Each step's `needs` as the engine resolves them: none given → the step before it.
fn needs(def: &Definition, i: usize) -> Vec<String> {
    match &def.steps[i].needs {
        Some(n) => n.clone(),
        None if i > 0 => vec![def.steps[i - 1].id.clone()],
        None => Vec::new(),
    }
}

fn kind_label(k: &StepKind) -> String {
    match k {
        StepKind::Action(a) => format!("action `{}`", a.uses),
        other => other.type_name().to_string(),
    }
}

/// Check one recorded run against the edited definition.
pub fn check(edited: &Edited, run: &Recorded) -> Verdict {
    let def = &edited.def;
    let old: Option<Definition> = run
        .source
        .as_deref()
        .and_then(|s| crate::yaml::parse(&SourceFile::new("recorded", s)).ok())
        .map(|d| Definition::from_value(&d.value));
    let old_doc: Option<Value> = run
        .source
        .as_deref()
        .and_then(|s| crate::yaml::parse(&SourceFile::new("recorded", s)).ok())
        .map(|d| d.value);
    let mut causes = Vec::new();
    let mut changes = Vec::new();

    // The input must still be accepted.
    if let Some(schema) = &def.input
        && let Ok(v) = jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
    {
        let problems: Vec<String> = v
            .iter_errors(&run.input)
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
            causes.push(Finding {
                pointer: "/input".into(),
                message: format!(
                    "the run's input no longer satisfies the input schema ({})",
                    problems.join("; ")
                ),
            });
        }
    }

    for rs in &run.steps {
        let new = def.step(&rs.id);
        match (rs.status.as_str(), new) {
            ("COMPLETED" | "WAITING" | "RUNNING", None) => {
                let what = match rs.status.as_str() {
                    "COMPLETED" => "completed",
                    "WAITING" => "the run waits at",
                    _ => "running",
                };
                causes.push(Finding {
                    pointer: "/steps".into(),
                    message: if rs.status == "WAITING" {
                        format!("{what} step `{}`, which no longer exists", rs.id)
                    } else {
                        format!("{what} step `{}` was removed", rs.id)
                    },
                });
            }
            ("COMPLETED" | "WAITING" | "RUNNING", Some(n)) => {
                let old_kind = old
                    .as_ref()
                    .and_then(|o| o.step(&rs.id))
                    .map(|s| kind_label(&s.kind));
                let changed_type = n.kind.type_name() != rs.step_type
                    || old_kind.as_ref().is_some_and(|k| *k != kind_label(&n.kind));
                if changed_type {
                    let was = old_kind.unwrap_or_else(|| rs.step_type.clone());
                    let field = if n.kind.type_name() == rs.step_type {
                        "uses"
                    } else {
                        "type"
                    };
                    causes.push(Finding {
                        pointer: n.field(field),
                        message: format!(
                            "step `{}` ({}) was {was} when the run recorded it; it is now {}",
                            rs.id,
                            rs.status,
                            kind_label(&n.kind)
                        ),
                    });
                }
            }
            _ => {}
        }
    }

    // A finished step must not now depend on one that has not finished.
    for (i, s) in def.steps.iter().enumerate() {
        let Some(rs) = run.step(&s.id) else { continue };
        if !(rs.status == "COMPLETED" || rs.status == "WAITING") {
            continue;
        }
        for need in needs(def, i) {
            if !run.done(&need) {
                let state = run
                    .step(&need)
                    .map_or("not in the run".to_string(), |x| x.status.clone());
                causes.push(Finding {
                    pointer: if s.needs.is_some() {
                        s.field("needs")
                    } else {
                        s.pointer.clone()
                    },
                    message: format!(
                        "step `{}` is {} in the run, but now comes after `{need}` ({state})",
                        s.id, rs.status
                    ),
                });
            }
        }
    }

    // Templates still to render must find the fields they read in recorded outputs.
    let steps_doc = edited.doc.get("steps").and_then(Value::as_array);
    for (i, s) in def.steps.iter().enumerate() {
        if run.done(&s.id) {
            continue;
        }
        if let Some(v) = steps_doc.and_then(|a| a.get(i)) {
            check_reads(v, &s.pointer, run, &mut causes);
        }
    }
    if let Some(v) = edited.doc.get("result") {
        check_reads(v, "/result", run, &mut causes);
    }

    // What would run again, run anew, or now be skipped.
    let ctx = context(run);
    for (i, s) in def.steps.iter().enumerate() {
        let ready = needs(def, i).iter().all(|n| run.done(n));
        match run.step(&s.id) {
            None if ready && !run.steps.is_empty() => changes.push(Finding {
                pointer: s.pointer.clone(),
                message: format!(
                    "step `{}` is new; its needs are done, so it would run now",
                    s.id
                ),
            }),
            Some(rs) if rs.status == "COMPLETED" || rs.status == "SKIPPED" => {
                if let Some(f) = when_change(s, rs, &ctx) {
                    changes.push(f);
                } else if rs.status == "COMPLETED"
                    && let (Some(old_doc), Some(new_v)) =
                        (&old_doc, steps_doc.and_then(|a| a.get(i)))
                    && let Some(old_v) =
                        old_doc
                            .get("steps")
                            .and_then(Value::as_array)
                            .and_then(|a| {
                                a.iter()
                                    .find(|x| x.get("id").and_then(Value::as_str) == Some(&s.id))
                            })
                    && old_v != new_v
                {
                    changes.push(Finding {
                        pointer: s.pointer.clone(),
                        message: format!(
                            "step `{}` changed after it ran: the run keeps its recorded output; a retry from an earlier step would run the new version",
                            s.id
                        ),
                    });
                }
            }
            _ => {}
        }
    }

    let kind = if !causes.is_empty() {
        Kind::Incompatible
    } else if !changes.is_empty() {
        Kind::CompatibleButRerunOrSkip
    } else {
        Kind::Compatible
    };
    Verdict {
        kind,
        causes,
        changes,
    }
}

/// The template context of the recorded run: input and finished steps.
fn context(run: &Recorded) -> minijinja::Value {
    let mut steps = std::collections::BTreeMap::new();
    for s in &run.steps {
        if s.status == "COMPLETED" || s.status == "SKIPPED" {
            steps.insert(
                s.id.clone(),
                minijinja::context! {
                    output => crate::template::context(&s.output.clone().unwrap_or(Value::Null)),
                    status => s.status.clone(),
                },
            );
        }
    }
    minijinja::context! {
        input => crate::template::context(&run.input),
        steps => minijinja::Value::from(steps),
        run => minijinja::context! { id => run.id.clone(), attempt => 1 },
        secrets => minijinja::Value::from(std::collections::BTreeMap::<String, String>::new()),
    }
}

/// A step whose `when` now decides differently from what the run recorded.
fn when_change(s: &Step, rs: &RecordedStep, ctx: &minijinja::Value) -> Option<Finding> {
    let now = match &s.when {
        None => true,
        Some(w) => crate::template::eval_condition(w, ctx, &s.field("when")).ok()?,
    };
    let pointer = if s.when.is_some() {
        s.field("when")
    } else {
        s.pointer.clone()
    };
    match (rs.status.as_str(), now) {
        ("COMPLETED", false) => Some(Finding {
            pointer,
            message: format!(
                "step `{}` ran, but its `when` is now false for this run: it would be skipped",
                s.id
            ),
        }),
        ("SKIPPED", true) => Some(Finding {
            pointer,
            message: format!(
                "step `{}` was skipped, but would now run for this run",
                s.id
            ),
        }),
        _ => None,
    }
}

/// Every `steps.ID.output.FIELD` in the strings under `v` must exist in a finished step's
/// recorded output.
fn check_reads(v: &Value, pointer: &str, run: &Recorded, causes: &mut Vec<Finding>) {
    match v {
        Value::String(text) => {
            for (step, field) in output_reads(text) {
                let Some(rs) = run.step(&step).filter(|r| r.status == "COMPLETED") else {
                    continue;
                };
                let has = rs
                    .output
                    .as_ref()
                    .and_then(Value::as_object)
                    .is_some_and(|o| o.contains_key(&field));
                if !has {
                    causes.push(Finding {
                        pointer: pointer.to_string(),
                        message: format!(
                            "reads `steps.{step}.output.{field}`, but the output `{step}` recorded has no field `{field}`"
                        ),
                    });
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check_reads(x, &pointer_push(pointer, &i.to_string()), run, causes);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                check_reads(x, &pointer_push(pointer, k), run, causes);
            }
        }
        _ => {}
    }
}

/// `(step, field)` for each `steps.<step>.output.<field>` in a text.
fn output_reads(text: &str) -> Vec<(String, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in text.match_indices("steps.") {
        if i > 0 && text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            continue;
        }
        let rest = &text[i + "steps.".len()..];
        let step = ident(rest);
        let Some(after) = rest[step.len()..].strip_prefix(".output.") else {
            continue;
        };
        let field = ident(after);
        if !step.is_empty() && !field.is_empty() {
            out.push((step, field));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::output_reads;

    #[test]
    fn output_reads_finds_step_fields() {
        assert_eq!(
            output_reads(
                "{{ steps.a.output.x }} and {{ steps.b_2.output.y.z }} {{ steps.c.status }}"
            ),
            vec![("a".into(), "x".into()), ("b_2".into(), "y".into())]
        );
    }
}
