//! The lint corpus: every example is clean; every broken definition reports the diagnostic it
//! is named for, rendered exactly as in its snapshot (`INSTA_UPDATE=always` to refresh).

use std::path::Path;

use crate::util::{lint_path, rendered, repo};

#[test]
fn every_example_is_clean() {
    let dir = repo().join("examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // Test files (`*.test.yaml`) are checked by `stepwise test examples/`.
        if path.extension().is_some_and(|e| e == "yaml")
            && !path.to_string_lossy().ends_with(".test.yaml")
        {
            let rel = path.strip_prefix(repo()).unwrap();
            let (file, l) = lint_path(rel);
            assert!(l.diagnostics.is_empty(), "{}", rendered(&file, &l));
            assert!(l.definition.is_some());
            count += 1;
        }
    }
    assert!(count >= 6, "expected at least six examples, found {count}");
}

#[test]
fn broken_definitions_report_their_diagnostic() {
    insta::glob!("../lint/broken", "*.yaml", |path| {
        let rel = path.strip_prefix(repo()).unwrap();
        let (file, l) = lint_path(rel);
        let expected = file
            .text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: <code>`", rel.display()));
        assert!(
            l.diagnostics.iter().any(|d| d.code.as_str() == expected),
            "{} should report {expected}:\n{}",
            rel.display(),
            rendered(&file, &l)
        );
        insta::assert_snapshot!(rendered(&file, &l));
    });
}

#[test]
fn broken_corpus_covers_every_code() {
    use stepwise::diagnostics::Code::*;
    let all = [
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
    ];
    let dir = Path::new("tests/lint/broken");
    let mut expected = Vec::new();
    for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if let Some(code) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
        {
            expected.push(code.to_string());
        }
    }
    for code in all {
        assert!(
            expected.iter().any(|e| e == code.as_str()),
            "no broken definition in tests/lint/broken expects {code}"
        );
    }
}
