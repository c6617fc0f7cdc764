//! The `stepwise` binary as a user runs it: exit codes, formats, directories.

use crate::util::{repo, show, stepwise};

#[test]
fn lint_examples_exits_zero() {
    let o = stepwise(&repo(), &["lint", "examples/"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no problems"),
        "{}",
        show(&o)
    );
}

#[test]
fn lint_broken_exits_one_with_every_file_line_and_column() {
    let o = stepwise(
        &repo(),
        &[
            "lint",
            "tests/lint/broken/cycle.yaml",
            "tests/lint/broken/unknown_step.yaml",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("[tests/lint/broken/cycle.yaml:7:12]"), "{err}");
    assert!(
        err.contains("[tests/lint/broken/unknown_step.yaml:10:13]"),
        "{err}"
    );
    assert!(err.contains("stepwise::definition::cycle"), "{err}");
    assert!(err.contains("2 files checked: 2 errors"), "{err}");
}

#[test]
fn lint_missing_file_exits_two() {
    let o = stepwise(&repo(), &["lint", "examples/", "no/such/file.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read no/such/file.yaml"));
}

#[test]
fn warnings_pass_unless_denied() {
    let file = "tests/lint/broken/unused_input.yaml";
    let o = stepwise(&repo(), &["lint", file]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = stepwise(&repo(), &["lint", "--deny-warnings", file]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
}

#[test]
fn json_format_is_machine_readable() {
    let o = stepwise(
        &repo(),
        &[
            "lint",
            "--format",
            "json",
            "tests/lint/broken/unknown_action.yaml",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["errors"], 1);
    let d = &doc["diagnostics"][0];
    assert_eq!(d["code"], "stepwise::action::unknown");
    assert_eq!(d["file"], "tests/lint/broken/unknown_action.yaml");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(6), Some(11))
    );
    assert_eq!(d["help"], "did you mean `http`?");
}

#[test]
fn github_format_emits_workflow_commands() {
    let o = stepwise(
        &repo(),
        &[
            "lint",
            "--format",
            "github",
            "tests/lint/broken/unknown_action.yaml",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("::error file=tests/lint/broken/unknown_action.yaml,line=6,col=11,endColumn=15,title=stepwise%3A%3Aaction%3A%3Aunknown::`htpp` is not a built-in action"),
        "{out}"
    );
}

#[test]
fn lint_recurses_into_directories_and_skips_other_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("a/b/bad.yml"), "id: x\nsteps: 3\n").unwrap();
    std::fs::write(dir.path().join("a/notes.txt"), "not yaml: [").unwrap();
    let o = stepwise(dir.path(), &["lint", "."]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 file checked"),
        "{}",
        show(&o)
    );
}

#[test]
fn schema_command_prints_the_bundled_schema() {
    let o = stepwise(&repo(), &["schema"]);
    assert_eq!(o.status.code(), Some(0));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("schemas/workflow.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(printed, file);
}

#[test]
fn graph_prints_mermaid_and_dot() {
    let o = stepwise(&repo(), &["graph", "examples/parallel-enrichment.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("flowchart TD\n"), "{out}");
    assert!(out.contains(" --> "), "{out}");
    let o = stepwise(
        &repo(),
        &[
            "graph",
            "--format",
            "dot",
            "examples/parallel-enrichment.yaml",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("digraph \"parallel-enrichment\""));
    let o = stepwise(&repo(), &["graph", "tests/lint/broken/cycle.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
}

#[test]
fn run_executes_a_workflow_and_waits_through_timers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nap.yaml"),
        "id: nap\ninput:\n  type: object\n  properties:\n    who: {type: string}\nsteps:\n  - {id: sleep, type: wait, duration: 300ms}\n  - id: greet\n    type: action\n    uses: transform\n    with: {value: \"rested {{ input.who }}\"}\n",
    )
    .unwrap();
    let o = stepwise(
        dir.path(),
        &["run", "nap.yaml", "--input", "{\"who\": \"Ada\"}", "--wait"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "\"rested Ada\"");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("sleep"),
        "{}",
        show(&o)
    );

    // Without --wait the command returns at the first wait; the run is saved.
    let o = stepwise(
        dir.path(),
        &["run", "nap.yaml", "--input", "{\"who\": \"Bob\"}"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["status"], "WAITING");
    // An input that fails the schema starts nothing and exits 1.
    let o = stepwise(dir.path(), &["run", "nap.yaml", "--input", "{\"who\": 1}"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/who"),
        "{}",
        show(&o)
    );
    // A file with lint errors is refused with its diagnostics.
    let o = stepwise(
        &repo(),
        &[
            "run",
            "tests/lint/broken/cycle.yaml",
            "--db",
            dir.path().join("x.db").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stepwise::definition::cycle"));
}
