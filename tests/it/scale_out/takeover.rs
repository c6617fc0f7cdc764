//! A run whose process stopped can be claimed by a command before any takeover pass finds
//! it: the process that claims it must recover it as a takeover would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::engine::{CreateRun, Engine, EngineConfig, EngineError, Resume};
use stepwise::model::{EventKind, RunStatus};
use stepwise::store::test_backends::{self, Schemas};
use stepwise::store::{DEFAULT_WORKSPACE, PgOptions, PgStore, Store};

use super::database;
use crate::server::TestServer;

fn engine(url: &str) -> Engine {
    let mut opts = PgOptions::new(url);
    opts.lease = Duration::from_secs(300);
    Engine::start(
        Arc::new(PgStore::open(&opts).unwrap()),
        Arc::new(stepwise::clock::SystemClock),
        EngineConfig::default(),
    )
    .unwrap()
}

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
    a.apply_definition(DEFAULT_WORKSPACE, "claimed.yaml", &def)
        .await
        .unwrap()
        .unwrap();
    let (run, _) = a
        .create_run(CreateRun {
            workspace_id: DEFAULT_WORKSPACE.into(),
            definition: "claimed".into(),
            input: json!({}),
            idempotency_key: None,
            trigger: json!({"kind": "api"}),
        })
        .await
        .unwrap();
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
