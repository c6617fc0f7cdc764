//! Templates and the data that flows through them: every `input.x` and `steps.y.output.z` a
//! template reads must exist, must be finished before the reader starts, and, where its
//! producer declares a schema, must be a field that schema can have.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::builtins;
use crate::compile;
use crate::definition::{Definition, StepKind};
use crate::diagnostics::{Code, Diagnostic, Span, did_you_mean};
use crate::template::{self, Site};
use crate::yaml::SpanIndex;

/// Globals minijinja provides; reading them is not reading workflow data.
const TEMPLATE_GLOBALS: &[&str] = &[
    "range",
    "dict",
    "debug",
    "namespace",
    "loop",
    "self",
    "super",
    "varargs",
    "kwargs",
    "caller",
];
/// Methods minijinja offers on maps; `x.items()` reads no field called `items`.
const MAP_METHODS: &[&str] = &["items", "keys", "values", "get"];
const STEP_ATTRS: &[&str] = &["output", "status"];
const RUN_ATTRS: &[&str] = &["id", "definitionId", "attempt"];

/// What a step produces, as far as lint can know it.
fn producer_schema(kind: &StepKind) -> Value {
    match kind {
        StepKind::Agent(a) => a
            .output
            .clone()
            .unwrap_or_else(|| json!({"type": "string"})),
        StepKind::ExternalEvent(e) => e.schema.clone().unwrap_or(json!(true)),
        StepKind::Approval(a) => json!({"type": "string", "enum": a.options}),
        StepKind::Wait(_) => json!({"type": "null"}),
        StepKind::Action(a) => builtins::output_schema(&a.uses, &a.with),
        StepKind::Script(s) => s.output.clone().unwrap_or(json!(true)),
        StepKind::Invalid => json!(true),
    }
}

struct Checker<'a> {
    def: &'a Definition,
    spans: &'a SpanIndex,
    text: &'a str,
    ids: Vec<&'a str>,
    ancestors: Vec<Vec<bool>>,
    producers: Vec<Value>,
    used_input: HashSet<String>,
    whole_input_used: bool,
    out: &'a mut Vec<Diagnostic>,
}

pub fn check(def: &Definition, spans: &SpanIndex, text: &str, out: &mut Vec<Diagnostic>) {
    let deps = compile::dependencies(def);
    let mut c = Checker {
        def,
        spans,
        text,
        ids: def.steps.iter().map(|s| s.id.as_str()).collect(),
        ancestors: compile::ancestors(&deps),
        producers: def.steps.iter().map(|s| producer_schema(&s.kind)).collect(),
        used_input: HashSet::new(),
        whole_input_used: false,
        out,
    };
    for (i, step) in def.steps.iter().enumerate() {
        for site in template::step_sites(step) {
            c.site(&site, Some(i));
        }
    }
    if let Some(result) = &def.result {
        let mut sites = Vec::new();
        template::collect_strings(result, "/result".into(), &mut sites);
        for site in sites {
            c.site(&site, None);
        }
    }
    if let Some(key) = def.concurrency.as_ref().and_then(|c| c.key.clone()) {
        c.concurrency_key(&Site {
            pointer: "/concurrency/key".into(),
            text: key,
            kind: template::SiteKind::Template,
        });
    }
    c.unused_input();
}

impl Checker<'_> {
    /// Byte range of a site's string in the source, first line and whole extent.
    fn site_range(&self, site: &Site) -> (Span, usize) {
        let first = self.spans.value(&site.pointer);
        let end = self
            .spans
            .get(&site.pointer)
            .map_or(first.start + first.len, |s| s.end);
        (first, end.min(self.text.len()))
    }

    /// Where `needle` appears inside the site's source text; the site itself otherwise.
    fn locate(&self, site: &Site, needle: &str, highlight: &str) -> Span {
        let (first, end) = self.site_range(site);
        let region = self.text.get(first.start..end).unwrap_or_default();
        let mut from = 0;
        while let Some(pos) = region[from..].find(needle) {
            let at = from + pos;
            let before_ok = region[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
            if before_ok {
                let off = needle.find(highlight).unwrap_or(0);
                let len = if needle.contains(highlight) {
                    highlight.len()
                } else {
                    needle.len()
                };
                return Span::new(first.start + at + off, len);
            }
            from = at + needle.len().max(1);
        }
        first
    }

    fn site(&mut self, site: &Site, reader: Option<usize>) {
        let refs = match template::references(site) {
            Ok(r) => r,
            Err(e) => {
                // What a broken template reads is unknown: don't call any input unused.
                self.whole_input_used = true;
                let span = e
                    .range
                    .as_ref()
                    .and_then(|r| site.text.get(r.clone()))
                    .filter(|snippet| !snippet.trim().is_empty())
                    .map_or_else(
                        || self.spans.value(&site.pointer),
                        |snippet| self.locate(site, snippet, snippet),
                    );
                self.out.push(
                    Diagnostic::new(
                        Code::TemplateSyntax,
                        span,
                        format!("this template does not parse: {}", e.message),
                    )
                    .with_label("syntax error")
                    .with_help("templates use minijinja (Jinja2) syntax, e.g. `{{ input.name }}`"),
                );
                return;
            }
        };
        for path in refs {
            self.reference(site, reader, &path);
        }
        self.options_compared(site);
    }

    /// The concurrency key is rendered before any step runs: it reads `input` (and `run`).
    fn concurrency_key(&mut self, site: &Site) {
        let Ok(refs) = template::references(site) else {
            return self.site(site, None);
        };
        for path in refs {
            if path == "steps" || path.starts_with("steps.") {
                let span = self.locate(site, "steps", "steps");
                self.out.push(
                    Diagnostic::new(
                        Code::TemplateUnknownVariable,
                        span,
                        "the concurrency key is rendered before any step runs: it cannot read `steps`",
                    )
                    .with_label("no step has run yet")
                    .with_help("build the key from `input`, e.g. `{{ input.customerId }}`"),
                );
            } else {
                self.reference(site, None, &path);
            }
        }
    }

    fn reference(&mut self, site: &Site, reader: Option<usize>, path: &str) {
        let parts: Vec<&str> = path.split('.').collect();
        match parts[0] {
            "input" => {
                match parts.get(1) {
                    Some(field) => {
                        self.used_input.insert((*field).to_string());
                    }
                    None => self.whole_input_used = true,
                }
                let schema = self.def.input.clone().unwrap_or(json!(true));
                self.fields(site, &schema, &parts, 1, "the workflow `input` schema");
            }
            "steps" => self.step_reference(site, reader, &parts),
            // Secrets come from the server's environment; their names are not known at lint time.
            "secrets" => {}
            "run" => {
                if let Some(attr) = parts.get(1)
                    && !RUN_ATTRS.contains(attr)
                {
                    let span = self.locate(site, &parts[..2].join("."), attr);
                    self.out.push(
                        Diagnostic::new(
                            Code::TemplateUnknownField,
                            span,
                            format!("`run` has no field `{attr}`"),
                        )
                        .with_label("unknown field")
                        .with_help(
                            did_you_mean(attr, RUN_ATTRS.iter().copied())
                                .unwrap_or_else(|| format!("`run` has {}", RUN_ATTRS.join(", "))),
                        ),
                    );
                }
            }
            name if TEMPLATE_GLOBALS.contains(&name) => {}
            name => {
                let span = self.locate(site, name, name);
                self.out.push(
                    Diagnostic::new(Code::TemplateUnknownVariable, span, format!("templates have no variable `{name}`"))
                        .with_label("undefined")
                        .with_help(
                            did_you_mean(name, ["input", "steps", "run", "secrets"])
                                .unwrap_or_else(|| "templates can read `input`, `steps.<id>.output`, `run` and `secrets`".into()),
                        ),
                );
            }
        }
    }

    fn step_reference(&mut self, site: &Site, reader: Option<usize>, parts: &[&str]) {
        let Some(&id) = parts.get(1) else { return };
        let needle = parts[..2].join(".");
        let Some(producer) = self.ids.iter().position(|s| *s == id) else {
            let span = self.locate(site, &needle, id);
            self.out.push(
                Diagnostic::new(
                    Code::TemplateUnknownStep,
                    span,
                    format!("there is no step `{id}`"),
                )
                .with_label("unknown step")
                .with_help_opt(did_you_mean(id, self.ids.iter().copied())),
            );
            return;
        };
        if let Some(r) = reader
            && !self.ancestors[r][producer]
        {
            let reader_id = self.def.steps[r].id.as_str();
            let span = self.locate(site, &needle, id);
            let (message, help) = if r == producer {
                (
                    format!("step `{reader_id}` reads its own output"),
                    "a step's output exists only after it finishes".to_string(),
                )
            } else {
                (
                    format!(
                        "step `{reader_id}` reads `steps.{id}`, but `{id}` is not guaranteed to finish before `{reader_id}` starts"
                    ),
                    format!("add `{id}` to the `needs` of `{reader_id}`"),
                )
            };
            self.out.push(
                Diagnostic::new(Code::TemplateNotUpstream, span, message)
                    .with_label("not upstream")
                    .with_help(help),
            );
            return;
        }
        let Some(&attr) = parts.get(2) else { return };
        if !STEP_ATTRS.contains(&attr) {
            let span = self.locate(site, &parts[..3].join("."), attr);
            self.out.push(
                Diagnostic::new(
                    Code::TemplateUnknownField,
                    span,
                    format!("`steps.{id}` has no field `{attr}`"),
                )
                .with_label("unknown field")
                .with_help(
                    did_you_mean(attr, STEP_ATTRS.iter().copied())
                        .unwrap_or_else(|| "a step has `output` and `status`".to_string()),
                ),
            );
            return;
        }
        if attr == "output" {
            let schema = self.producers[producer].clone();
            let what = format!("the output of `{id}`");
            self.fields(site, &schema, parts, 3, &what);
        }
    }

    /// Check `parts[from..]` against `schema`, reporting the first field it cannot have.
    fn fields(&mut self, site: &Site, root: &Value, parts: &[&str], from: usize, what: &str) {
        let mut schema = root;
        for i in from..parts.len() {
            let field = parts[i];
            match step_into(root, schema, field) {
                Lookup::Field(next) => schema = next,
                Lookup::Unknown => return,
                Lookup::Null => {
                    let span = self.locate(site, &parts[..=i].join("."), field);
                    self.out.push(
                        Diagnostic::new(
                            Code::TemplateUnknownField,
                            span,
                            format!(
                                "`{}` is always null, so it has no field `{field}`",
                                parts[..i].join(".")
                            ),
                        )
                        .with_label("no such field"),
                    );
                    return;
                }
                Lookup::Missing(known) => {
                    let span = self.locate(site, &parts[..=i].join("."), field);
                    let help = did_you_mean(field, known.iter().map(String::as_str))
                        .unwrap_or_else(|| {
                            if known.is_empty() {
                                format!("{what} declares no fields")
                            } else {
                                format!(
                                    "{what} declares {}",
                                    known
                                        .iter()
                                        .map(|k| format!("`{k}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            }
                        });
                    let owner = if i == from {
                        what.to_string()
                    } else {
                        format!("`{}`", parts[..i].join("."))
                    };
                    self.out.push(
                        Diagnostic::new(
                            Code::TemplateUnknownField,
                            span,
                            format!("`{field}` is not a field of {owner}"),
                        )
                        .with_label("not in the schema")
                        .with_help(help),
                    );
                    return;
                }
            }
        }
    }

    /// `steps.review.output == "aprove"` compares an approval's choice with a value it can never take.
    fn options_compared(&mut self, site: &Site) {
        let text = site.text.as_str();
        for (i, step) in self.def.steps.iter().enumerate() {
            let StepKind::Approval(a) = &step.kind else {
                continue;
            };
            let needle = format!("steps.{}.output", self.ids[i]);
            let mut from = 0;
            while let Some(pos) = text[from..].find(&needle) {
                let after = &text[from + pos + needle.len()..];
                from += pos + needle.len();
                let rest = after.trim_start();
                let Some(rest) = rest.strip_prefix("==").or_else(|| rest.strip_prefix("!=")) else {
                    continue;
                };
                let rest = rest.trim_start();
                let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                    continue;
                };
                let Some(end) = rest[1..].find(quote) else {
                    continue;
                };
                let literal = &rest[1..1 + end];
                if !a.options.iter().any(|o| o == literal) {
                    let quoted = format!("{quote}{literal}{quote}");
                    let span = self.locate(site, &quoted, literal);
                    self.out.push(
                        Diagnostic::new(
                            Code::TemplateUnknownOption,
                            span,
                            format!("`{literal}` is not an option of approval `{}`", step.id),
                        )
                        .with_label("never equal")
                        .with_help(
                            did_you_mean(literal, a.options.iter().map(String::as_str))
                                .unwrap_or_else(|| {
                                    format!("its options are {}", a.options.join(", "))
                                }),
                        ),
                    );
                }
            }
        }
    }

    fn unused_input(&mut self) {
        if self.whole_input_used {
            return;
        }
        let Some(props) = self
            .def
            .input
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
        else {
            return;
        };
        for name in props.keys() {
            if !self.used_input.contains(name) {
                let pointer = crate::yaml::pointer_push("/input/properties", name);
                self.out.push(
                    Diagnostic::new(
                        Code::UnusedInput,
                        self.spans.key(&pointer),
                        format!("input field `{name}` is never read"),
                    )
                    .with_label("unused")
                    .with_help(format!("read it in a template as `{{{{ input.{name} }}}}`, or remove it from `input`")),
                );
            }
        }
    }
}

enum Lookup<'a> {
    Field(&'a Value),
    /// The schema says nothing definite: stop checking.
    Unknown,
    Null,
    Missing(Vec<String>),
}

/// The first of `path`'s fields `schema` cannot have: its index and the fields the schema
/// declares there. `None` when the path may exist (or the schema says nothing definite).
pub fn missing_field(schema: &Value, path: &[&str]) -> Option<(usize, Vec<String>)> {
    let mut at = schema;
    for (i, field) in path.iter().enumerate() {
        match step_into(schema, at, field) {
            Lookup::Field(next) => at = next,
            Lookup::Unknown => return None,
            Lookup::Null => return Some((i, Vec::new())),
            Lookup::Missing(known) => return Some((i, known)),
        }
    }
    None
}

/// One step down a schema by property name. Objects with `properties` are taken as closed
/// unless `additionalProperties` or `patternProperties` open them.
fn step_into<'a>(root: &'a Value, schema: &'a Value, field: &str) -> Lookup<'a> {
    let schema = resolve(root, schema, 0);
    let Some(obj) = schema.as_object() else {
        return Lookup::Unknown;
    };
    if obj.get("type").and_then(Value::as_str) == Some("null") {
        return Lookup::Null;
    }
    let mut known = Vec::new();
    let mut branches: Vec<&Value> = vec![schema];
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = obj.get(key).and_then(Value::as_array) {
            branches.extend(list.iter().map(|b| resolve(root, b, 0)));
        }
    }
    let mut any_properties = false;
    for b in &branches {
        let Some(bo) = b.as_object() else {
            return Lookup::Unknown;
        };
        if let Some(props) = bo.get("properties").and_then(Value::as_object) {
            any_properties = true;
            if let Some(next) = props.get(field) {
                return Lookup::Field(next);
            }
            known.extend(props.keys().cloned());
        }
        let open = bo
            .get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false))
            || bo.contains_key("patternProperties");
        if open {
            return Lookup::Unknown;
        }
    }
    if !any_properties || MAP_METHODS.contains(&field) {
        return Lookup::Unknown;
    }
    known.sort();
    known.dedup();
    Lookup::Missing(known)
}

/// Follow local `$ref`s (`#/...`) a bounded number of times.
fn resolve<'a>(root: &'a Value, schema: &'a Value, depth: usize) -> &'a Value {
    if depth > 16 {
        return schema;
    }
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) if r.starts_with('#') => match root.pointer(&r[1..]) {
            Some(target) => resolve(root, target, depth + 1),
            None => schema,
        },
        _ => schema,
    }
}
