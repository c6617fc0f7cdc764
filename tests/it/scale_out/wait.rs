//! Waiting for a run (`?wait=`, MCP calls, seed 003's agents endpoint) at a process that
//! does not execute it: its updates are broadcast in the process that does.

use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::engine::Resume;
use stepwise::model::RunStatus;
use stepwise::store::test_backends::{self, Schemas};
use stepwise::store::{DEFAULT_WORKSPACE, Store};

use super::{database, engine, start};

/// Process B waits for a run that process A resumes and completes: B answers when the run
/// completes, not when its wait runs out.
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_at_another_process_ends_when_the_run_does() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let (url, _store) = database("wait");
    let (a, b) = (engine(&url), engine(&url));
    let def = "id: approved\nsteps:\n  - id: review\n    type: approval\n    message: Go on?\n    options: [approve, reject]\n";
    let run = start(&a, "approved", def).await;
    let paused = a
        .wait_for(DEFAULT_WORKSPACE, &run.id, Duration::from_secs(10), |s| {
            s == RunStatus::Paused
        })
        .await
        .unwrap();
    assert_eq!(paused.status, RunStatus::Paused);

    let (b2, id) = (b.clone(), run.id.clone());
    let waited = tokio::spawn(async move {
        let began = Instant::now();
        let run = b2
            .wait_for(DEFAULT_WORKSPACE, &id, Duration::from_secs(20), |s| {
                s.is_terminal()
            })
            .await;
        (run, began.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let approve = Resume::Approval {
        step: "review".into(),
        input: json!("approve"),
    };
    a.resume(DEFAULT_WORKSPACE, &run.id, approve, "test")
        .await
        .unwrap();
    let (done, took) = waited.await.unwrap();
    assert_eq!(done.unwrap().status, RunStatus::Completed);
    assert!(took < Duration::from_secs(5), "B answered after {took:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// A child run (a `workflow` step's) that waits for an approval is let go like any waiting
/// run; the process its approval reaches completes it, and the parent, which its own
/// process holds, must hear of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_child_completed_at_another_process_finishes_its_parents_step() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let (url, store) = database("child");
    let (a, b) = (engine(&url), engine(&url));
    let child = "id: kid\nsteps:\n  - id: review\n    type: approval\n    message: Go on?\n    options: [approve, reject]\n";
    let parent = "id: parent\nsteps:\n  - id: kid\n    type: action\n    uses: workflow\n    with: {definition: kid}\n";
    a.apply_definition(DEFAULT_WORKSPACE, "kid.yaml", child)
        .await
        .unwrap()
        .unwrap();
    let run = start(&a, "parent", parent).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let kid = loop {
        let kids = store.child_runs(&run.id).unwrap();
        if let Some(k) = kids.iter().find(|k| k.status == RunStatus::Paused) {
            break k.id.clone();
        }
        assert!(Instant::now() < deadline, "the child never paused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let approve = Resume::Approval {
        step: "review".into(),
        input: json!("approve"),
    };
    b.resume(DEFAULT_WORKSPACE, &kid, approve, "test")
        .await
        .unwrap();
    let done = b
        .wait_for(DEFAULT_WORKSPACE, &run.id, Duration::from_secs(5), |s| {
            s.is_terminal()
        })
        .await
        .unwrap();
    assert_eq!(
        store.run(&kid).unwrap().unwrap().status,
        RunStatus::Completed
    );
    // A holds the parent (renewing its lease); the child's end reaches it through the inbox,
    // in the commit that records the end.
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    a.shutdown().await;
    b.shutdown().await;
}
