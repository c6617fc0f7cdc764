//! Commands for a run that another process executes right now go through the inbox: the
//! caller's process records them, the owner applies them, and the caller gets the answer a
//! local command would have had. Two engines on one Postgres schema stand for two
//! processes. Needs Postgres (`STEPWISE_TEST_POSTGRES`); without it the tests pass at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::engine::{CreateRun, Engine, EngineConfig, EngineError, Resume, SendSignal};
use stepwise::model::{EventKind, RunStatus, StepStatus, new_id};
use stepwise::store::test_backends::{self, Schemas};
use stepwise::store::{DEFAULT_WORKSPACE, PgOptions, PgStore, RunRecord, Store};

use crate::server::TestServer;

/// An approval, a signal and a slow call side by side: while the call runs, the run is
/// RUNNING and its process holds it, yet it waits for a person and for a signal.
fn definition(server: &TestServer) -> String {
    format!(
        r#"id: busy
input:
  type: object
  properties:
    order: {{type: string}}
steps:
  - id: review
    type: approval
    message: Ship it?
    options: [approve, reject]
    needs: []
  - id: paid
    type: external_event
    signal: payment.confirmed
    correlate: "{{{{ input.order }}}}"
    schema: {{type: object, required: [amount], properties: {{amount: {{type: number}}}}}}
    needs: []
  - id: slow
    type: action
    uses: http
    with: {{method: POST, url: "{}"}}
    needs: []
"#,
        server.url("/slow/4000")
    )
}

struct Pair {
    owner: Engine,
    other: Engine,
    store: PgStore,
}

/// Two engines on one fresh schema; `owner` applies the definition and starts the runs.
async fn pair(server: &TestServer, tag: &str) -> Pair {
    let url = test_backends::postgres_url().unwrap_or_default();
    let path = std::env::temp_dir().join(format!("inbox-{tag}-{}", new_id("t")));
    let store = test_backends::open_postgres(&path).unwrap();
    let schema = store.schema().unwrap_or_default().to_string();
    let engine = || {
        let mut opts = PgOptions::new(&url);
        opts.schema = Some(schema.clone());
        opts.lease = Duration::from_secs(60);
        opts.pool_size = 4;
        Engine::start(
            Arc::new(PgStore::open(&opts).unwrap()),
            Arc::new(stepwise::clock::SystemClock),
            EngineConfig::default(),
        )
        .unwrap()
    };
    let (owner, other) = (engine(), engine());
    owner
        .apply_definition(DEFAULT_WORKSPACE, "busy.yaml", &definition(server))
        .await
        .unwrap()
        .unwrap();
    Pair {
        owner,
        other,
        store,
    }
}

impl Pair {
    async fn start(&self, order: &str) -> RunRecord {
        let (run, _) = self
            .owner
            .create_run(CreateRun {
                workspace_id: DEFAULT_WORKSPACE.into(),
                definition: "busy".into(),
                input: json!({"order": order}),
                idempotency_key: None,
                trigger: json!({"kind": "api"}),
            })
            .await
            .unwrap();
        // Until both waits are recorded (the slow call keeps the run RUNNING and held).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = self
                .store
                .steps(&run.id)
                .unwrap()
                .iter()
                .filter(|s| s.status == StepStatus::Waiting)
                .count();
            if waiting == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "the run never waited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!self.store.claim_run(&run.id).unwrap(), "held by its owner");
        run
    }

    async fn settle(&self, id: &str) -> RunRecord {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let run = self.store.run(id).unwrap().unwrap();
            if run.status.is_terminal() {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} did not finish: {run:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.owner.shutdown().await;
        self.other.shutdown().await;
    }
}

fn approve(option: &str) -> Resume {
    Resume::Approval {
        step: "review".into(),
        input: json!(option),
    }
}

fn signal(order: &str, payload: serde_json::Value) -> SendSignal {
    SendSignal {
        workspace_id: DEFAULT_WORKSPACE.into(),
        signal_type: "payment.confirmed".into(),
        correlate: order.into(),
        payload,
        via: "api".into(),
        start: None,
        delivery: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_for_a_run_held_elsewhere_get_the_answers_a_local_command_gets() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let server = TestServer::start().await;
    let p = pair(&server, "answers").await;
    let run = p.start("o-1").await;

    // Wrong answers come back with their status and field, and change nothing.
    let bad = p
        .other
        .resume(DEFAULT_WORKSPACE, &run.id, approve("maybe"), "key:t")
        .await;
    match bad {
        Err(EngineError::Validation { details, .. }) => assert_eq!(details["field"], "input"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    let hidden = p
        .other
        .resume("ws_other", &run.id, approve("approve"), "key:t")
        .await;
    assert!(
        matches!(hidden, Err(EngineError::NotFound(_))),
        "{hidden:?}"
    );
    let bad_payload = p
        .other
        .signal(signal("o-1", json!({"amount": "ten"})))
        .await;
    assert!(
        matches!(bad_payload, Err(EngineError::Validation { .. })),
        "{bad_payload:?}"
    );

    // The approval and the signal reach the run at its owner; the run is still running.
    let approved = p
        .other
        .resume(DEFAULT_WORKSPACE, &run.id, approve("approve"), "key:t")
        .await
        .unwrap();
    assert_eq!(approved.id, run.id);
    assert_eq!(approved.status, RunStatus::Running);
    let again = p
        .other
        .resume(DEFAULT_WORKSPACE, &run.id, approve("reject"), "key:t")
        .await;
    assert!(matches!(again, Err(EngineError::Conflict(_))), "{again:?}");
    let reached = p
        .other
        .signal(signal("o-1", json!({"amount": 12.5})))
        .await
        .unwrap();
    assert_eq!(
        reached
            .reached
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [run.id.as_str()]
    );
    assert!(!reached.buffered);

    let done = p.settle(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    let output = done.output.unwrap_or_default();
    assert_eq!(output["review"], "approve");
    assert_eq!(output["paid"], json!({"amount": 12.5}));
    assert_eq!(p.store.signals(&run.id).unwrap().len(), 1);
    let decided = p
        .store
        .events(&run.id)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::ApprovalDecided)
        .count();
    assert_eq!(decided, 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_sent_to_another_process_cancels_the_running_run() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let server = TestServer::start().await;
    let p = pair(&server, "cancel").await;
    let run = p.start("o-2").await;
    let cancelled = p.other.cancel(DEFAULT_WORKSPACE, &run.id).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    let again = p.other.cancel(DEFAULT_WORKSPACE, &run.id).await;
    assert!(matches!(again, Err(EngineError::Conflict(_))), "{again:?}");
    let steps = p.store.steps(&run.id).unwrap();
    assert!(
        steps.iter().all(|s| s.status == StepStatus::Cancelled),
        "{steps:?}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_waits_in_the_inbox_until_a_process_can_apply_it() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let server = TestServer::start().await;
    let p = pair(&server, "handover").await;
    let run = p.start("o-3").await;
    let Pair {
        owner,
        other,
        store,
    } = p;
    // The run moves to a holder that never reads its inbox (this test's own store).
    owner.shutdown().await;
    assert!(store.claim_run(&run.id).unwrap());
    let waiting = {
        let other = other.clone();
        let id = run.id.clone();
        tokio::spawn(async move {
            other
                .resume(DEFAULT_WORKSPACE, &id, approve("reject"), "key:t")
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.inbox_open(10).unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the command never reached the inbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!waiting.is_finished(), "answered before anyone applied it");
    // Its holder lets go: the caller's own process claims the run and applies it.
    store.release_all().unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answered.id, run.id);
    let steps = store.steps(&run.id).unwrap();
    let review = steps.iter().rfind(|s| s.step_id == "review").unwrap();
    assert_eq!(review.status, StepStatus::Completed);
    assert_eq!(review.output, Some(json!("reject")));
    assert!(store.inbox_open(10).unwrap().is_empty());
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_idempotency_key_sent_to_two_processes_at_once_makes_one_run() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let server = TestServer::start().await;
    let p = pair(&server, "dupkey").await;
    let create = |engine: Engine, key: String| async move {
        // A client retries what it was told changed nothing.
        for _ in 0..50 {
            let r = engine
                .create_run(CreateRun {
                    workspace_id: DEFAULT_WORKSPACE.into(),
                    definition: "busy".into(),
                    input: json!({"order": key}),
                    idempotency_key: Some(key.clone()),
                    trigger: json!({"kind": "api"}),
                })
                .await;
            match r {
                Ok((run, _)) => return run.id,
                Err(EngineError::Unavailable(_)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("create {key}: {e:?}"),
            }
        }
        panic!("create {key} never succeeded");
    };
    let keys: Vec<String> = (0..40).map(|i| format!("order-{i}")).collect();
    let mut calls = tokio::task::JoinSet::new();
    for key in &keys {
        for engine in [p.owner.clone(), p.other.clone()] {
            let key = key.clone();
            calls.spawn(create(engine, key.clone()).then_with(key));
        }
    }
    let mut ids: std::collections::HashMap<String, Vec<String>> = Default::default();
    while let Some(done) = calls.join_next().await {
        let (key, id) = done.unwrap();
        ids.entry(key).or_default().push(id);
    }
    for key in &keys {
        let found = &ids[key];
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], found[1], "two runs for {key}");
        let stored = p.store.run_by_key(DEFAULT_WORKSPACE, key).unwrap().unwrap();
        assert_eq!(stored.id, found[0]);
    }
    // A duplicate refused by the database is not a store outage.
    for engine in [&p.owner, &p.other] {
        assert_eq!(engine.metrics().store_errors.get(), 0);
        assert_eq!(engine.store_error(), None);
    }
    p.stop().await;
}

/// Pair a future's output with a tag.
trait ThenWith: std::future::Future + Sized {
    fn then_with<T>(self, tag: T) -> impl std::future::Future<Output = (T, Self::Output)> {
        async move { (tag, self.await) }
    }
}

impl<F: std::future::Future> ThenWith for F {}
