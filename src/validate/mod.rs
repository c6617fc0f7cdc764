//! Lint: a source file in, every diagnostic out, and the definition when it has no errors.
//!
//! Each pass runs even when an earlier one found errors, so an author sees all problems of a
//! file at once; passes that need a well-formed piece skip only that piece.

pub mod dataflow;
pub mod schema;
pub mod scripts;
mod semantic;
pub mod tools;

use serde_json::Value;

use crate::definition::Definition;
use crate::diagnostics::{Code, Diagnostic, SourceFile};
use crate::yaml;

pub use tools::Catalog;

/// The outcome of linting one file.
#[derive(Debug)]
pub struct Lint {
    pub diagnostics: Vec<Diagnostic>,
    /// The definition, when the file has no errors (warnings allowed).
    pub definition: Option<Definition>,
    /// The trigger, when the file is a trigger without errors.
    pub trigger: Option<crate::triggers::Trigger>,
}

impl Lint {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

/// What lint is told about where the definition will run.
#[derive(Debug, Clone, Copy)]
pub struct LintOptions<'a> {
    /// Whether `script` steps may run there (`--allow-scripts`); when not, each is an error.
    pub allow_scripts: bool,
    /// The workflows agent tools may name; without one, tools are checked only within the
    /// file.
    pub catalog: Option<&'a Catalog>,
}

impl Default for LintOptions<'_> {
    fn default() -> Self {
        Self {
            allow_scripts: true,
            catalog: None,
        }
    }
}

/// Lint one file's text. Agent tools are checked only within the file (see [`lint_with`]).
pub fn lint(file: &SourceFile) -> Lint {
    lint_with(file, &LintOptions::default())
}

/// Lint one file's text for a place that runs workflows as `options` say.
pub fn lint_with(file: &SourceFile, options: &LintOptions<'_>) -> Lint {
    let doc = match yaml::parse(file) {
        Ok(doc) => doc,
        Err(d) => {
            return Lint {
                diagnostics: vec![d],
                definition: None,
                trigger: None,
            };
        }
    };
    lint_document(&doc.value, &doc.spans, &file.text, options)
}

/// Lint a definition given as JSON (e.g. an API body): spans are empty, messages still name
/// the field by its path.
pub fn lint_value(value: &Value) -> Lint {
    lint_document(
        value,
        &yaml::SpanIndex::default(),
        "",
        &LintOptions::default(),
    )
}

fn lint_document(
    value: &Value,
    spans: &yaml::SpanIndex,
    text: &str,
    options: &LintOptions<'_>,
) -> Lint {
    if !value.is_object() {
        return Lint {
            diagnostics: vec![
                Diagnostic::new(
                    Code::NotAMapping,
                    spans.value(""),
                    format!(
                        "a workflow definition is a mapping with `id` and `steps`, but this is {}",
                        schema::json_kind(value)
                    ),
                )
                .with_label("expected a mapping"),
            ],
            definition: None,
            trigger: None,
        };
    }
    if crate::testing::is_test_file(value) {
        // Checks against the workflow under test need its file: `testing::files` adds them.
        let diagnostics = crate::testing::lint::check_structure(value, spans);
        return Lint {
            diagnostics,
            definition: None,
            trigger: None,
        };
    }
    if crate::triggers::is_trigger(value) {
        let mut diagnostics = crate::triggers::lint::lint(value, spans);
        diagnostics.sort_by_key(|d| (d.span.start, d.code.as_str()));
        diagnostics.dedup();
        let ok = !diagnostics.iter().any(Diagnostic::is_error);
        return Lint {
            diagnostics,
            definition: None,
            trigger: if ok {
                crate::triggers::Trigger::from_value(value)
            } else {
                None
            },
        };
    }
    let mut diagnostics = schema::check(value, spans);
    let def = Definition::from_value(value);
    semantic::check(&def, spans, &mut diagnostics);
    dataflow::check(&def, spans, text, &mut diagnostics);
    if !options.allow_scripts {
        diagnostics.extend(scripts::refused(&def, spans));
    }
    tools::check(&def, spans, options.catalog, &mut diagnostics);
    diagnostics.sort_by_key(|d| (d.span.start, d.code.as_str()));
    diagnostics.dedup();
    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    Lint {
        diagnostics,
        definition: (!has_errors).then_some(def),
        trigger: None,
    }
}

/// The engine's default way to load a definition: lint it, then compile it into a plan.
impl Default for crate::engine::PlanLoader {
    fn default() -> Self {
        crate::engine::PlanLoader(std::sync::Arc::new(|file: &SourceFile, options| {
            let l = lint_with(file, options);
            let def = l.definition.ok_or_else(|| l.diagnostics.clone())?;
            crate::compile::compile(def).map_err(|_| l.diagnostics)
        }))
    }
}
