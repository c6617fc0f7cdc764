//! Checks of `script` steps: a command to run, a workspace to run it in, and, on a server
//! that does not run scripts, a refusal at each script step.

use crate::definition::{Definition, ScriptStep, Step, StepKind};
use crate::diagnostics::{Code, Diagnostic};
use crate::yaml::{SpanIndex, pointer_push};

pub(super) fn check(
    def: &Definition,
    step: &Step,
    s: &ScriptStep,
    spans: &SpanIndex,
    out: &mut Vec<Diagnostic>,
) {
    if s.run.is_some() == s.command.is_some() {
        let (at, message) = if s.run.is_some() {
            (
                spans.key(&step.field("command")),
                "a `script` step takes `run` or `command`, not both",
            )
        } else {
            (
                spans.value(&step.field("type")),
                "a `script` step needs `run` or `command`",
            )
        };
        out.push(
            Diagnostic::new(Code::ScriptNeedsOne, at, message)
                .with_label("this script")
                .with_help(
                    "`run: |` takes a shell script (run with `sh -e -c`); `command: [python3, main.py]` runs a program with these arguments",
                ),
        );
    }
    if let Some(argv) = &s.command
        && argv.first().is_none_or(|a| a.is_empty())
    {
        out.push(
            Diagnostic::new(
                Code::InvalidValue,
                spans.value(&step.field("command")),
                "`command` needs at least the program to run",
            )
            .with_label("no program")
            .with_help("e.g. `command: [python3, report.py]`"),
        );
    }
    if !def.workspace {
        out.push(
            Diagnostic::new(
                Code::ScriptNeedsWorkspace,
                spans.value(&step.field("type")),
                format!(
                    "script step `{}` runs in the run's workspace, but this workflow has none",
                    step.id
                ),
            )
            .with_label("needs a workspace")
            .with_help("add `workspace: true` at the top level of the workflow"),
        );
    }
    // Scripts get values through env and stdin; a template in the command would be run
    // as written, which is rarely what its author meant.
    let mut not_rendered = |pointer: String, text: &str| {
        if text.contains("{{") {
            out.push(
                Diagnostic::new(Code::ScriptNotRendered, spans.value(&pointer), format!(
                    "`{}` is run as written: templates in it are not rendered",
                    pointer.rsplit('/').find(|p| p.parse::<usize>().is_err()).unwrap_or("run")
                ))
                .with_label("not rendered")
                .with_help(
                    "pass values through `env` (e.g. `env: {NAME: \"{{ input.name }}\"}`, read as $NAME) or `with` (JSON on stdin)",
                ),
            );
        }
    };
    if let Some(run) = &s.run {
        not_rendered(step.field("run"), run);
    }
    for (i, arg) in s.command.iter().flatten().enumerate() {
        not_rendered(pointer_push(&step.field("command"), &i.to_string()), arg);
    }
}

/// What lint says on a server that does not run scripts: an error at every script step.
pub fn refused(def: &Definition, spans: &SpanIndex) -> Vec<Diagnostic> {
    def.steps
        .iter()
        .filter(|s| matches!(s.kind, StepKind::Script(_)))
        .map(|step| {
            Diagnostic::new(
                Code::ScriptsNotAllowed,
                spans.value(&step.field("type")),
                format!(
                    "step `{}` is a script, and scripts are not allowed here",
                    step.id
                ),
            )
            .with_label("not allowed")
            .with_help(
                "start the server (or worker) with --allow-scripts (STEPWISE_ALLOW_SCRIPTS=1) to run script steps; see docs/scripts.md",
            )
        })
        .collect()
}
