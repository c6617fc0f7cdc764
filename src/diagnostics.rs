//! Diagnostics: what the linter reports, where, and how it is rendered.
//!
//! Every check produces [`Diagnostic`]s with a byte span into the source file; nothing in the
//! validation pipeline prints. Rendering (miette for humans, JSON, GitHub annotations) happens
//! only here, on request.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;

/// A source file being linted: its display name and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A byte range in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

impl Span {
    pub fn new(start: usize, len: usize) -> Self {
        Self { start, len }
    }
}

impl From<Span> for SourceSpan {
    fn from(s: Span) -> Self {
        SourceSpan::new(s.start.into(), s.len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// Stable diagnostic codes. Each is documented in `docs/diagnostics.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Code {
    YamlSyntax,
    NotAMapping,
    Schema,
    UnknownField,
    MissingField,
    InvalidType,
    InvalidValue,
    DuplicateStep,
    UnknownStep,
    Cycle,
    TemplateSyntax,
    TemplateUnknownVariable,
    TemplateUnknownStep,
    TemplateNotUpstream,
    TemplateUnknownField,
    TemplateUnknownOption,
    UnknownAction,
    MissingArgument,
    UnknownArgument,
    InvalidArgument,
    InvalidDuration,
    InvalidTime,
    WaitNeedsOne,
    EmptyOptions,
    DuplicateOption,
    InvalidJsonSchema,
    UnusedInput,
    RedundantNeed,
    RetryIgnored,
    NeverRuns,
    TriggerSource,
    InvalidCron,
    InvalidTimezone,
    TestWorkflow,
    TestUnknownStep,
    TestWrongStepType,
    TestUnknownSignal,
    TestImpossibleOutput,
    TestUnknownTool,
    ScriptNeedsOne,
    ScriptNeedsWorkspace,
    ScriptNotRendered,
    ScriptsNotAllowed,
    UnknownTool,
    DuplicateTool,
    ToolCanSuspend,
    FilesNeedWorkspace,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::YamlSyntax => "stepwise::yaml::syntax",
            Code::NotAMapping => "stepwise::yaml::not_a_mapping",
            Code::Schema => "stepwise::schema::invalid",
            Code::UnknownField => "stepwise::schema::unknown_field",
            Code::MissingField => "stepwise::schema::missing_field",
            Code::InvalidType => "stepwise::schema::invalid_type",
            Code::InvalidValue => "stepwise::schema::invalid_value",
            Code::DuplicateStep => "stepwise::definition::duplicate_step",
            Code::UnknownStep => "stepwise::definition::unknown_step",
            Code::Cycle => "stepwise::definition::cycle",
            Code::TemplateSyntax => "stepwise::template::syntax",
            Code::TemplateUnknownVariable => "stepwise::template::unknown_variable",
            Code::TemplateUnknownStep => "stepwise::template::unknown_step",
            Code::TemplateNotUpstream => "stepwise::template::not_upstream",
            Code::TemplateUnknownField => "stepwise::template::unknown_field",
            Code::TemplateUnknownOption => "stepwise::template::unknown_option",
            Code::UnknownAction => "stepwise::action::unknown",
            Code::MissingArgument => "stepwise::action::missing_argument",
            Code::UnknownArgument => "stepwise::action::unknown_argument",
            Code::InvalidArgument => "stepwise::action::invalid_argument",
            Code::InvalidDuration => "stepwise::definition::invalid_duration",
            Code::InvalidTime => "stepwise::definition::invalid_time",
            Code::WaitNeedsOne => "stepwise::definition::wait_needs_one",
            Code::EmptyOptions => "stepwise::definition::empty_options",
            Code::DuplicateOption => "stepwise::definition::duplicate_option",
            Code::InvalidJsonSchema => "stepwise::definition::invalid_json_schema",
            Code::UnusedInput => "stepwise::definition::unused_input",
            Code::RedundantNeed => "stepwise::definition::redundant_need",
            Code::RetryIgnored => "stepwise::definition::retry_ignored",
            Code::NeverRuns => "stepwise::definition::never_runs",
            Code::TriggerSource => "stepwise::trigger::source",
            Code::InvalidCron => "stepwise::trigger::invalid_cron",
            Code::InvalidTimezone => "stepwise::trigger::invalid_timezone",
            Code::TestWorkflow => "stepwise::test::workflow",
            Code::TestUnknownStep => "stepwise::test::unknown_step",
            Code::TestWrongStepType => "stepwise::test::wrong_step_type",
            Code::TestUnknownSignal => "stepwise::test::unknown_signal",
            Code::TestImpossibleOutput => "stepwise::test::impossible_output",
            Code::TestUnknownTool => "stepwise::test::unknown_tool",
            Code::ScriptNeedsOne => "stepwise::script::needs_one",
            Code::ScriptNeedsWorkspace => "stepwise::script::needs_workspace",
            Code::ScriptNotRendered => "stepwise::script::not_rendered",
            Code::ScriptsNotAllowed => "stepwise::script::not_allowed",
            Code::UnknownTool => "stepwise::agent::unknown_tool",
            Code::DuplicateTool => "stepwise::agent::duplicate_tool",
            Code::ToolCanSuspend => "stepwise::agent::tool_can_suspend",
            Code::FilesNeedWorkspace => "stepwise::agent::files_need_workspace",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Code::UnusedInput
            | Code::RedundantNeed
            | Code::RetryIgnored
            | Code::NeverRuns
            | Code::ScriptNotRendered => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding: a code, a message, a primary span with a label, and an optional hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub span: Span,
    pub label: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Self {
        Self {
            code,
            severity: code.severity(),
            message: message.into(),
            span,
            label: String::new(),
            help: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A diagnostic bound to its file, in the shape miette renders.
struct Report<'a> {
    diag: &'a Diagnostic,
    source: NamedSource<Arc<str>>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diag, f)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let label = (!self.diag.label.is_empty()).then(|| self.diag.label.clone());
        Some(Box::new(std::iter::once(
            LabeledSpan::new_primary_with_span(label, self.diag.span),
        )))
    }
}

/// How diagnostics are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// miette's graphical report, with colours when `color` is set.
    Human { color: bool, width: usize },
    /// One JSON object per run: `{"files": [...], "errors": n, "warnings": n}`.
    Json,
    /// GitHub Actions workflow commands (`::error file=...`).
    Github,
}

/// Render one diagnostic as a human report (no trailing newline guarantees).
pub fn render_human(file: &SourceFile, diag: &Diagnostic, color: bool, width: usize) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(width)
        .with_links(false);
    let (line, col) = file.line_col(diag.span.start);
    let report = Report {
        diag,
        source: NamedSource::new(file.name.clone(), file.text.clone()),
    };
    let mut out = String::new();
    if handler.render_report(&mut out, &report).is_err() {
        out = format!(
            "{}: {}:{line}:{col}: {}\n",
            diag.code, file.name, diag.message
        );
    }
    out
}

/// A diagnostic flattened for machines: `--format json`.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    pub code: &'static str,
    pub severity: Severity,
    pub message: &'a str,
    pub file: &'a str,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub offset: usize,
    pub length: usize,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub label: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<&'a str>,
}

impl<'a> JsonDiagnostic<'a> {
    pub fn new(file: &'a SourceFile, d: &'a Diagnostic) -> Self {
        let (line, column) = file.line_col(d.span.start);
        let (end_line, end_column) = file.line_col(d.span.start + d.span.len);
        Self {
            code: d.code.as_str(),
            severity: d.severity,
            message: &d.message,
            file: &file.name,
            line,
            column,
            end_line,
            end_column,
            offset: d.span.start,
            length: d.span.len,
            label: &d.label,
            help: d.help.as_deref(),
        }
    }
}

/// One GitHub Actions workflow command for a diagnostic.
pub fn render_github(file: &SourceFile, d: &Diagnostic) -> String {
    let (line, col) = file.line_col(d.span.start);
    let (end_line, end_col) = file.line_col(d.span.start + d.span.len);
    let kind = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    let mut out = format!(
        "::{kind} file={},line={line},col={col}",
        escape_property(&file.name)
    );
    if end_line == line {
        out.push_str(&format!(",endColumn={end_col}"));
    } else {
        out.push_str(&format!(",endLine={end_line}"));
    }
    out.push_str(&format!(
        ",title={}::{}\n",
        escape_property(d.code.as_str()),
        escape_data(&message)
    ));
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// "did you mean" for a misspelt name among candidates.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let f = SourceFile::new("a.yaml", "ab\nçd: x\n");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(3), (2, 1));
        // 'ç' is two bytes; 'd' starts at byte 5 and is the second character.
        assert_eq!(f.line_col(5), (2, 2));
    }

    #[test]
    fn did_you_mean_finds_close_names() {
        assert_eq!(
            did_you_mean("emial", ["name", "email"]).as_deref(),
            Some("did you mean `email`?")
        );
        assert_eq!(did_you_mean("zzz", ["name", "email"]), None);
    }

    #[test]
    fn github_escapes_newlines_and_commas() {
        let f = SourceFile::new("dir/a,b.yaml", "x: 1\n");
        let d = Diagnostic::new(Code::Schema, Span::new(0, 1), "bad\nthing").with_help("50%");
        let out = render_github(&f, &d);
        assert_eq!(
            out,
            "::error file=dir/a%2Cb.yaml,line=1,col=1,endColumn=2,title=stepwise%3A%3Aschema%3A%3Ainvalid::bad%0Athing%0Ahelp: 50%25\n"
        );
    }
}
