//! Claims by commands: a run whose process stopped can be claimed by a command before any
//! takeover pass finds it (the process that claims it must recover it as a takeover
//! would), and a command refused on a waiting run must not leave the run held.

use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::engine::{EngineError, Resume};
use stepwise::model::{EventKind, RunStatus};
use stepwise::store::test_backends::{self, Schemas};
use stepwise::store::{DEFAULT_WORKSPACE, Store};

use super::{database, engine, start};
use crate::server::TestServer;

/// A graceful stop lets go of a run whose first step is in flight (after kill -9 its lease
/// runs out the same way, between two takeover passes). A refused approval at another
/// process is what claims it: that process must run the step again, or it holds the run,
/// renewing its lease, and nothing ever runs it (every other process answers 503 forever).
#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_claims_a_stopped_processs_run_recovers_its_steps() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let server = TestServer::start().await;
    let (url, store) = database("command-claims");
    let def = format!(
        "id: claimed\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {{method: POST, url: \"{}\"}}\n  - id: review\n    type: approval\n    message: Go on?\n    options: [approve, reject]\n",
        server.url("/hold-first")
    );
    let a = engine(&url);
    let run = start(&a, "claimed", &def).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.seen().is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.shutdown().await;

    // Hold the run's row: takeover passes skip locked rows, so the command claims it.
    let base = test_backends::postgres_url().unwrap_or_default();
    let (mut client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let lock = client.transaction().await.unwrap();
    let schema = store.schema().unwrap_or_default().to_string();
    lock.query(
        &format!("SELECT 1 FROM \"{schema}\".runs WHERE id = $1 FOR UPDATE"),
        &[&run.id],
    )
    .await
    .unwrap();
    let b = engine(&url);
    let (b2, id) = (b.clone(), run.id.clone());
    let answer = tokio::spawn(async move {
        let approve = Resume::Approval {
            step: "review".into(),
            input: json!("approve"),
        };
        b2.resume(DEFAULT_WORKSPACE, &id, approve, "test").await
    });
    // Its start and a takeover pass go by; the command waits for the row.
    tokio::time::sleep(Duration::from_millis(700)).await;
    lock.commit().await.unwrap();
    let answer = answer.await.unwrap();
    assert!(
        matches!(answer, Err(EngineError::Conflict(_))),
        "the run is still at `call`: {answer:?}"
    );

    // `call` runs again (hold-first answers its second request) and the run pauses.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = store.run(&run.id).unwrap().unwrap();
        if now.status == RunStatus::Paused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run stayed {} with its step never run again: {:#?}",
            now.status,
            store.steps(&run.id).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].idempotency_key, seen[1].idempotency_key);
    let recovered = store
        .events(&run.id)
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::StepRecovered)
        .count();
    assert_eq!(recovered, 1);
    b.shutdown().await;
}

/// A command a process refuses (here a decision that is not an option) claimed the waiting
/// run to judge it: the run must not stay held by that process for a lease, or every
/// other process answers the corrected command 503 until the lease runs out.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_command_lets_go_of_the_waiting_run_it_claimed() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let (url, store) = database("refused");
    let (a, b) = (engine(&url), engine(&url));
    let def = "id: refused\nsteps:\n  - id: review\n    type: approval\n    message: Go on?\n    options: [approve, reject]\n";
    let run = start(&a, "refused", def).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.run(&run.id).unwrap().unwrap().status != RunStatus::Paused {
        assert!(Instant::now() < deadline, "the run never paused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let decide = |input: &str| Resume::Approval {
        step: "review".into(),
        input: json!(input),
    };
    let refused = a
        .resume(DEFAULT_WORKSPACE, &run.id, decide("maybe"), "test")
        .await;
    assert!(
        matches!(refused, Err(EngineError::Validation { .. })),
        "{refused:?}"
    );
    // The leases here are 300 s: only a release lets B take the run before that.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match b
            .resume(DEFAULT_WORKSPACE, &run.id, decide("approve"), "test")
            .await
        {
            Ok(done) => {
                assert_eq!(done.status, RunStatus::Completed);
                break;
            }
            Err(EngineError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("B could not approve: {e:?}"),
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}
