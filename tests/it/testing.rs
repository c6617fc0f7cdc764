//! `stepwise test` over the real binary: the examples pass, a broken copy fails with a
//! readable diff, the formats and exit codes hold, `--update` writes goldens.

use std::path::Path;

use crate::util::{repo, show, stepwise};

fn copy_example(dir: &Path, name: &str) {
    for file in [format!("{name}.yaml"), format!("{name}.test.yaml")] {
        std::fs::copy(repo().join("examples").join(&file), dir.join(&file)).unwrap();
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no `{from}`", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_example_has_a_passing_test_file() {
    let o = stepwise(&repo(), &["test", "examples/"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    assert!(out.contains(" 0 failed"), "{}", show(&o));
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !name.ends_with(".test.yaml") {
            let test = name.replace(".yaml", ".test.yaml");
            assert!(
                out.contains(&format!("examples/{test}")),
                "no test file ran for examples/{name}:\n{out}"
            );
        }
    }
}

#[test]
fn a_broken_copy_fails_with_a_diff_at_the_yaml_path() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path(), "expense-approval");
    edit(
        &dir.path().join("expense-approval.yaml"),
        "decision: \"{{ steps.review.output }}\"",
        "decision: \"{{ steps.review.output | upper }}\"",
    );
    let o = stepwise(dir.path(), &["test", "."]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains("FAIL  an approved expense waits for the payout"),
        "{out}"
    );
    assert!(
        out.contains("expense-approval.test.yaml:18:")
            && out.contains("tests[0].expect.output.decision")
            && out.contains("- expected: \"approve\"")
            && out.contains("+ actual:   \"APPROVE\""),
        "{out}"
    );
    assert!(out.contains("3 passed, 2 failed"), "{out}");
}

#[test]
fn unmocked_steps_fail_the_case_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path(), "weekly-sales-summary");
    edit(
        &dir.path().join("weekly-sales-summary.test.yaml"),
        "      send_email: {output: {status: 202, body: null}}\n    expect:\n      status: COMPLETED\n      output:",
        "    expect:\n      status: COMPLETED\n      output:",
    );
    let o = stepwise(dir.path(), &["test", "weekly-sales-summary.test.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stdout(&o).contains("step `send_email` (http) is not mocked"),
        "{}",
        show(&o)
    );
}

#[test]
fn json_and_junit_reports() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path(), "expense-approval");
    edit(
        &dir.path().join("expense-approval.test.yaml"),
        "output: {decision: reject, reference: null}",
        "output: {decision: rejected, reference: null}",
    );
    let o = stepwise(dir.path(), &["test", ".", "--format", "json", "--coverage"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passed"], 4);
    assert_eq!(v["failed"], 1);
    let case = &v["files"][0]["cases"][1];
    assert_eq!(case["passed"], false);
    assert_eq!(
        case["failures"][0]["path"],
        "tests[1].expect.output.decision"
    );
    assert_eq!(case["failures"][0]["expected"], "rejected");
    assert_eq!(case["failures"][0]["actual"], "reject");
    assert!(case["failures"][0]["line"].as_u64().unwrap() > 1);
    assert_eq!(v["files"][0]["coverage"]["stepsCovered"], 4);
    let o = stepwise(dir.path(), &["test", ".", "--format", "junit"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let xml = stdout(&o);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains("tests=\"5\" failures=\"1\"") && xml.contains("<failure message="),
        "{xml}"
    );
}

#[test]
fn update_writes_the_actual_output_into_the_expectation() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path(), "expense-approval");
    let test = dir.path().join("expense-approval.test.yaml");
    edit(
        &test,
        "output: {decision: reject, reference: null}",
        "output: {decision: rejected, reference: null}  # golden",
    );
    let o = stepwise(dir.path(), &["test", ".", "--update"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = std::fs::read_to_string(&test).unwrap();
    assert!(
        text.contains("output: {\"decision\":\"reject\",\"reference\":null}  # golden"),
        "{text}"
    );
    let o = stepwise(dir.path(), &["test", "."]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
}

#[test]
fn lint_errors_and_missing_files_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path(), "expense-approval");
    edit(
        &dir.path().join("expense-approval.test.yaml"),
        "approve: review",
        "approve: reviw",
    );
    let o = stepwise(dir.path(), &["test", "."]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("did you mean `review`?"),
        "{}",
        show(&o)
    );
    let o = stepwise(dir.path(), &["lint", "expense-approval.test.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let empty = tempfile::tempdir().unwrap();
    let o = stepwise(empty.path(), &["test", "."]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

#[test]
fn an_event_that_cannot_be_delivered_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path(), "expense-approval");
    // The approval comes after its 7-day timeout: the run has failed by then.
    edit(
        &dir.path().join("expense-approval.test.yaml"),
        "        option: approve\n        at: 2h",
        "        option: approve\n        at: 8d",
    );
    let o = stepwise(dir.path(), &["test", "."]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stdout(&o).contains(
            "event #1 (approve `review` with `approve`) could not be delivered at +8d: the run ended FAILED"
        ),
        "{}",
        show(&o)
    );
}

#[test]
fn mocked_tool_calls_run_the_tool_workflows_as_child_runs() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["support-agent", "lookup-order", "refund-order"] {
        copy_example(dir.path(), name);
    }
    // The refund workflow now sends the amount in cents: the case that refunds sees it in
    // the child run's rendered request.
    edit(
        &dir.path().join("refund-order.yaml"),
        "        amount: \"{{ input.amount }}\"",
        "        amount: \"{{ input.amount * 100 }}\"",
    );
    let o = stepwise(dir.path(), &["test", "support-agent.test.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains("ok    a failed tool run goes back to the model")
            && out.contains("FAIL  the agent looks the order up, refunds it, then answers")
            && out.contains("tests[1].expect.steps.refund.input.json.amount")
            && out.contains("- expected: 40")
            && out.contains("+ actual:   4000"),
        "{}",
        show(&o)
    );

    // A tool the agent does not offer is a lint error: the file does not run (exit 2).
    edit(
        &dir.path().join("support-agent.test.yaml"),
        "          - tool: refund-order",
        "          - tool: refund-orders",
    );
    let o = stepwise(dir.path(), &["test", "support-agent.test.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tool `refund-orders`, which agent step `answer` does not offer")
            && err.contains("did you mean `refund-order`?"),
        "{}",
        show(&o)
    );
}
