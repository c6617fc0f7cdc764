//! `stepwise runs export` and `stepwise replay` over the real binary: a corpus of edits to
//! expense-approval, each with the verdict it must get for a run paused at `review` (one test
//! per verdict and cause), and `stepwise test --from-run` over a recorded run.

use std::path::Path;

use crate::util::{repo, show, stepwise};

/// A database with one run of expense-approval paused at `review`, and its export.
fn recorded(dir: &Path) -> String {
    std::fs::copy(
        repo().join("examples/expense-approval.yaml"),
        dir.join("expense-approval.yaml"),
    )
    .unwrap();
    let o = stepwise(
        dir,
        &[
            "run",
            "expense-approval.yaml",
            "--input",
            r#"{"employee": "Ada", "amount": 12}"#,
            "--db",
            "r.db",
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    let o = stepwise(dir, &["runs", "list", "--db", "r.db", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let o = stepwise(
        dir,
        &["runs", "export", &id, "--db", "r.db", "--out", "run.json"],
    );
    assert!(o.status.success(), "{}", show(&o));
    id
}

/// `edited.yaml`: expense-approval with each `(from, to)` applied in turn (every occurrence).
fn edited(dir: &Path, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(repo().join("examples/expense-approval.yaml")).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "no `{from}`");
        text = text.replace(from, to);
    }
    std::fs::write(dir.join("edited.yaml"), text).unwrap();
}

/// `stepwise replay` of the recorded run (from `source`) against expense-approval with `edits`.
fn verdict(edits: &[(&str, &str)], source: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    recorded(dir.path());
    edited(dir.path(), edits);
    replay(dir.path(), source)
}

/// The paused run is incompatible with expense-approval after `edits`, for `cause`.
fn assert_incompatible(edits: &[(&str, &str)], cause: &str) {
    let (code, out) = verdict(edits, &["run.json"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("(PAUSED): incompatible") && out.contains(cause),
        "{out}"
    );
}

fn replay(dir: &Path, source: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["replay", "--definition", "edited.yaml"];
    args.extend_from_slice(source);
    let o = stepwise(dir, &args);
    (
        o.status.code(),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), show(&o)),
    )
}

#[test]
fn export_holds_the_run_its_steps_and_the_pinned_definition() {
    let dir = tempfile::tempdir().unwrap();
    let id = recorded(dir.path());
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap())
            .unwrap();
    assert_eq!(doc["format"], "stepwise.run-export/1");
    assert_eq!(doc["run"]["id"], id.as_str());
    assert_eq!(doc["run"]["status"], "PAUSED");
    assert_eq!(doc["run"]["steps"][0]["name"], "summary");
    assert!(
        doc["run"]["trace"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        doc["definition"]["source"]
            .as_str()
            .unwrap()
            .contains("id: expense-approval")
    );
}

#[test]
fn an_edit_to_steps_not_yet_run_is_compatible() {
    let dir = tempfile::tempdir().unwrap();
    recorded(dir.path());
    edited(
        dir.path(),
        &[("message: \"Expense of", "message: \"Expense claim of")],
    );
    for source in [&["run.json"][..], &["--db", "r.db"][..]] {
        let (code, out) = replay(dir.path(), source);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("(PAUSED): compatible\n"), "{out}");
    }
}

#[test]
fn a_new_step_whose_needs_are_done_would_run() {
    let dir = tempfile::tempdir().unwrap();
    recorded(dir.path());
    edited(
        dir.path(),
        &[(
            "  - id: review\n",
            "  - id: audit\n    type: action\n    needs: [summary]\n    uses: log\n    with: {message: audit}\n\n  - id: review\n    needs: [summary]\n",
        )],
    );
    let (code, out) = replay(dir.path(), &["run.json"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("compatible-but-rerun-or-skip"), "{out}");
    assert!(
        out.contains(
            "edited.yaml:34:5: step `audit` is new; its needs are done, so it would run now"
        ),
        "{out}"
    );
}

#[test]
fn a_changed_completed_step_is_reported_as_kept() {
    let dir = tempfile::tempdir().unwrap();
    recorded(dir.path());
    edited(
        dir.path(),
        &[(
            "asks for {{ input.amount }} EUR",
            "asks for {{ input.amount }} euros",
        )],
    );
    let (code, out) = replay(dir.path(), &["run.json"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("compatible-but-rerun-or-skip")
            && out.contains("step `summary` changed after it ran"),
        "{out}"
    );
}

#[test]
fn removing_the_waiting_step_is_incompatible() {
    assert_incompatible(
        &[
            ("  - id: review\n", "  - id: manager_review\n"),
            ("steps.review.", "steps.manager_review."),
        ],
        "the run waits at step `review`, which no longer exists",
    );
}

#[test]
fn a_read_of_a_field_the_recorded_output_lacks_is_incompatible() {
    assert_incompatible(
        &[
            (
                "        large: \"{{ input.amount > 1000 }}\"",
                "        large: \"{{ input.amount > 1000 }}\"\n        currency: EUR",
            ),
            (
                "message: \"Expense of {{ input.employee }}",
                "message: \"Expense in {{ steps.summary.output.currency }} of {{ input.employee }}",
            ),
        ],
        "reads `steps.summary.output.currency`, but the output `summary` recorded has no field `currency`",
    );
}

#[test]
fn an_input_the_new_schema_refuses_is_incompatible() {
    let (code, out) = verdict(
        &[(
            "  required: [employee, amount]",
            "  required: [employee, amount, currency]",
        )],
        &["--db", "r.db", "--status", "PAUSED"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("edited.yaml:12:3: the run's input no longer satisfies the input schema"),
        "{out}"
    );
}

#[test]
fn from_run_replays_a_recorded_run_as_a_golden_test() {
    let dir = tempfile::tempdir().unwrap();
    let id = recorded(dir.path());
    for resume in [
        &["--step", "review", "--input", "approve"][..],
        &[
            "--signal",
            "payout.sent",
            "--payload",
            r#"{"reference": "PAY-1"}"#,
        ][..],
    ] {
        let mut args = vec!["runs", "resume", id.as_str(), "--db", "r.db"];
        args.extend_from_slice(resume);
        let o = stepwise(dir.path(), &args);
        assert!(o.status.success(), "{}", show(&o));
    }
    let o = stepwise(
        dir.path(),
        &["runs", "export", &id, "--db", "r.db", "--out", "run.json"],
    );
    assert!(o.status.success(), "{}", show(&o));

    // Against the version it ran on, and against an edit that keeps its behaviour.
    let o = stepwise(dir.path(), &["test", "--from-run", "run.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("ok    recorded run {id}")));
    edited(
        dir.path(),
        &[("message: \"Expense of", "message: \"Expense claim of")],
    );
    let o = stepwise(
        dir.path(),
        &[
            "test",
            "--from-run",
            "run.json",
            "--definition",
            "edited.yaml",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    // An edit that changes the result fails with a diff at the expectation.
    edited(
        dir.path(),
        &[(
            "  decision: \"{{ steps.review.output }}\"",
            "  decision: \"{{ steps.review.output | upper }}\"",
        )],
    );
    let o = stepwise(
        dir.path(),
        &[
            "test",
            "--from-run",
            "run.json",
            "--definition",
            "edited.yaml",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        out.contains(&format!("FAIL  recorded run {id}"))
            && out.contains("tests[0].expect.output.decision")
            && out.contains("- expected: \"approve\"")
            && out.contains("+ actual:   \"APPROVE\""),
        "{}",
        show(&o)
    );
}

#[test]
fn a_completed_step_that_changed_type_is_incompatible() {
    assert_incompatible(
        &[(
            "    type: action\n    uses: transform\n    with:\n      value:\n        text: \"{{ input.employee }} asks for {{ input.amount }} EUR\"\n        large: \"{{ input.amount > 1000 }}\"\n",
            "    type: agent\n    prompt: \"Summarise: {{ input.employee }} asks for {{ input.amount }} EUR\"\n",
        )],
        "edited.yaml:27:11: step `summary` (COMPLETED) was action `transform` when the run recorded it; it is now agent",
    );
}

#[test]
fn a_removed_completed_step_is_incompatible() {
    assert_incompatible(
        &[
            (
                "  - id: summary\n    type: action\n    uses: transform\n    with:\n      value:\n        text: \"{{ input.employee }} asks for {{ input.amount }} EUR\"\n        large: \"{{ input.amount > 1000 }}\"\n\n",
                "",
            ),
            ("{{ steps.summary.output.text }}", "An expense"),
        ],
        "completed step `summary` was removed",
    );
}

#[test]
fn a_completed_step_now_after_an_unfinished_one_is_incompatible() {
    assert_incompatible(
        &[(
            "steps:\n  - id: summary\n",
            "steps:\n  - id: precheck\n    type: action\n    uses: log\n    with: {message: check}\n\n  - id: summary\n",
        )],
        "step `summary` is COMPLETED in the run, but now comes after `precheck` (not in the run)",
    );
}
