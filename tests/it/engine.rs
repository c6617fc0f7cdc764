//! The engine against a real store (SQLite, and Postgres: `both!`) and real local HTTP servers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stepwise::clock::SystemClock;
use stepwise::engine::{CreateRun, Engine, EngineConfig, EngineError, Resume};
use stepwise::model::{RunStatus, StepStatus};
use stepwise::store::{DEFAULT_WORKSPACE, RunRecord, Synchronous, test_backends};

use crate::server::TestServer;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub engine: Engine,
    pub server: TestServer,
}

pub fn config(server: &TestServer) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.llm.base_url = Some(server.url("/v1"));
    c.llm.model = Some("test-model".into());
    c
}

impl Env {
    pub async fn new() -> Env {
        let server = TestServer::start().await;
        let cfg = config(&server);
        Self::with(server, cfg).await
    }

    pub async fn with(server: TestServer, config: EngineConfig) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let engine = start(&dir.path().join("stepwise.db"), config);
        Env {
            dir,
            engine,
            server,
        }
    }

    pub fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("stepwise.db")
    }

    /// Stop the engine and start a new one on the same file, as after a restart.
    pub async fn restart(&mut self, config: EngineConfig) {
        self.engine.shutdown().await;
        self.engine = start(&self.db(), config);
    }

    pub async fn apply(&self, yaml: &str) -> String {
        let yaml = yaml.replace("{server}", &format!("http://{}", self.server.addr));
        match self
            .engine
            .apply_definition(DEFAULT_WORKSPACE, "test.yaml", &yaml)
            .await
            .unwrap()
        {
            Ok((rec, _)) => rec.slug,
            Err(rejected) => panic!("definition rejected: {:#?}", rejected.diagnostics),
        }
    }

    pub async fn create(
        &self,
        def: &str,
        input: Value,
        key: Option<&str>,
    ) -> Result<(RunRecord, bool), EngineError> {
        self.engine
            .create_run(CreateRun {
                workspace_id: DEFAULT_WORKSPACE.into(),
                definition: def.into(),
                input,
                idempotency_key: key.map(str::to_string),
                trigger: json!({"kind": "api", "label": "API"}),
            })
            .await
    }

    pub async fn start(&self, def: &str, input: Value) -> RunRecord {
        self.create(def, input, None).await.unwrap().0
    }

    /// Wait until the run stops moving (finished, paused or waiting).
    pub async fn settle(&self, id: &str) -> RunRecord {
        let r = self
            .engine
            .wait_for(DEFAULT_WORKSPACE, id, Duration::from_secs(20), |s| {
                s.is_terminal() || s.is_suspended()
            })
            .await
            .unwrap();
        assert!(
            r.status.is_terminal() || r.status.is_suspended(),
            "run did not settle: {r:?}"
        );
        r
    }

    pub async fn finish(&self, id: &str) -> RunRecord {
        self.engine
            .wait_for(
                DEFAULT_WORKSPACE,
                id,
                Duration::from_secs(20),
                RunStatus::is_terminal,
            )
            .await
            .unwrap()
    }

    pub fn steps(&self, id: &str) -> Vec<stepwise::store::StepRecord> {
        self.engine.store().steps(id).unwrap()
    }
}

/// Create a run of `def` with no input in a workspace.
pub async fn create_in(engine: &Engine, ws: &str, def: &str) -> Result<RunRecord, EngineError> {
    engine
        .create_run(CreateRun {
            workspace_id: ws.into(),
            definition: def.into(),
            input: json!({}),
            idempotency_key: None,
            trigger: json!({"kind": "api"}),
        })
        .await
        .map(|(r, _)| r)
}

/// Wait (up to 10 s) until a run of a workspace ends.
pub async fn finish_in(engine: &Engine, ws: &str, id: &str) -> RunRecord {
    engine
        .wait_for(ws, id, Duration::from_secs(10), RunStatus::is_terminal)
        .await
        .unwrap()
}

/// An engine on `db`: the SQLite file, or on Postgres (in a `both!` test's Postgres half)
/// the schema it maps to.
pub fn start(db: &std::path::Path, config: EngineConfig) -> Engine {
    let store = test_backends::open(db, Synchronous::Full).unwrap();
    Engine::start(store, Arc::new(SystemClock), config).unwrap()
}

const SEQUENCE: &str = r#"
id: seq
input:
  type: object
  required: [name]
  properties:
    name: {type: string}
steps:
  - id: greet
    type: action
    uses: transform
    with: {value: {text: "Hello {{ input.name }}"}}
  - id: shout
    type: action
    uses: transform
    with: {value: "{{ steps.greet.output.text | upper }}"}
  - id: done
    type: action
    uses: transform
    with: {value: {result: "{{ steps.shout.output }}", run: "{{ run.id }}"}}
"#;

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_sequence_completes_and_records_each_step_once() {
    let env = Env::new().await;
    let def = env.apply(SEQUENCE).await;
    let run = env.start(&def, json!({"name": "Ada"})).await;
    assert_eq!(run.status, RunStatus::Pending);
    assert!(run.id.starts_with("wfrun_"));
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(
        run.output,
        Some(json!({"result": "HELLO ADA", "run": run.id}))
    );
    assert_eq!(run.current_step_index, 3);
    assert!(run.started_at.is_some() && run.finished_at.is_some());
    let steps = env.steps(&run.id);
    assert_eq!(steps.len(), 3);
    assert!(
        steps
            .iter()
            .all(|s| s.status == StepStatus::Completed && s.attempt == 1)
    );
    assert_eq!(
        steps.iter().map(|s| s.step_index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let kinds: Vec<String> = env
        .engine
        .store()
        .events(&run.id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run.created"));
    assert_eq!(kinds.last().map(String::as_str), Some("run.completed"));
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn invalid_input_creates_nothing() {
    let env = Env::new().await;
    let def = env.apply(SEQUENCE).await;
    let err = env
        .create(&def, json!({"name": 3}), None)
        .await
        .unwrap_err();
    let EngineError::Validation { details, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(details["problems"][0]["path"], "/name");
    let err = env.create(&def, json!({}), None).await.unwrap_err();
    assert!(matches!(err, EngineError::Validation { .. }), "{err:?}");
    let err = env
        .create("no-such-workflow", json!({}), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotFound(_)), "{err:?}");
    let long = "k".repeat(256);
    let err = env
        .create(&def, json!({"name": "x"}), Some(&long))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Validation { .. }), "{err:?}");
    let (runs, total) = env
        .engine
        .store()
        .list_runs(&stepwise::store::RunQuery {
            workspace_id: DEFAULT_WORKSPACE.into(),
            page: 1,
            page_size: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((runs.len(), total), (0, 0));
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn racing_creates_with_one_key_make_one_run() {
    let env = Arc::new(Env::new().await);
    let def = env.apply(SEQUENCE).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (env, def) = (env.clone(), def.clone());
        tasks.push(tokio::spawn(async move {
            env.create(&def, json!({"name": "Ada"}), Some("signup-ada"))
                .await
                .unwrap()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (run, new) = t.await.unwrap();
        ids.insert(run.id);
        created += usize::from(new);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);
    // A later create with the key returns the same run, whatever its status now.
    let id = ids.into_iter().next().unwrap();
    env.finish(&id).await;
    let (again, new) = env
        .create(&def, json!({"name": "Other"}), Some("signup-ada"))
        .await
        .unwrap();
    assert_eq!((again.id.as_str(), new), (id.as_str(), false));
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn http_retries_with_backoff_and_one_idempotency_key() {
    let env = Env::new().await;
    let def = env
        .apply(
            r#"
id: flaky
steps:
  - id: call
    type: action
    uses: http
    retry: {max_attempts: 4, initial_delay: 10ms, max_delay: 50ms}
    with:
      method: POST
      url: "{server}/flaky/2"
      json: {hello: "{{ run.id }}"}
"#,
        )
        .await;
    let run = env.start(&def, json!({})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(
        run.output.as_ref().unwrap()["body"],
        json!({"ok": true, "calls": 3})
    );
    let seen = env.server.seen();
    assert_eq!(seen.len(), 3);
    let key = format!("{}:call", run.id);
    assert!(
        seen.iter()
            .all(|s| s.idempotency_key.as_deref() == Some(key.as_str()))
    );
    assert_eq!(seen[0].body, json!({"hello": run.id}));
    let steps = env.steps(&run.id);
    let statuses: Vec<(i64, StepStatus)> = steps.iter().map(|s| (s.attempt, s.status)).collect();
    assert_eq!(
        statuses,
        vec![
            (1, StepStatus::Failed),
            (2, StepStatus::Failed),
            (3, StepStatus::Completed)
        ]
    );
    assert_eq!(steps[0].error.as_ref().unwrap()["kind"], "http_status");
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_retries_from_the_failed_step_keeping_earlier_outputs() {
    let env = Env::new().await;
    let def = env
        .apply(
            r#"
id: retry-me
steps:
  - id: first
    type: action
    uses: http
    with: {url: "{server}/echo"}
  - id: second
    type: action
    uses: http
    with: {url: "{server}/flaky/1"}
"#,
        )
        .await;
    let run = env.start(&def, json!({})).await;
    let failed = env.finish(&run.id).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.as_ref().unwrap()["step"], "second");
    assert_eq!(failed.current_step_index, 1);
    let err = env
        .engine
        .cancel(DEFAULT_WORKSPACE, &run.id)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");

    let retried = env.engine.retry(DEFAULT_WORKSPACE, &run.id).await.unwrap();
    assert_eq!(retried.status, RunStatus::Running);
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.attempt, 2);
    let echo_calls = env
        .server
        .seen()
        .iter()
        .filter(|s| s.path == "/echo")
        .count();
    assert_eq!(echo_calls, 1, "the completed step must not run again");
    let err = env
        .engine
        .retry(DEFAULT_WORKSPACE, &run.id)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn permanent_http_errors_fail_without_retry() {
    let env = Env::new().await;
    let def = env
        .apply("id: bad\nsteps:\n  - id: call\n    type: action\n    uses: http\n    retry: 5\n    with: {url: \"{server}/status/404\"}\n")
        .await;
    let run = env.start(&def, json!({})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(env.server.seen().len(), 1);
    assert_eq!(run.error.as_ref().unwrap()["kind"], "http_status");
}
}

const APPROVAL: &str = r#"
id: lead-router
input:
  type: object
  properties:
    leadId: {type: string}
steps:
  - id: classify
    type: agent
    prompt: "Classify lead {{ input.leadId }}"
    output:
      type: object
      required: [category]
      properties:
        category: {type: string, enum: [enterprise, smb]}
  - id: approval
    type: approval
    message: "Route to {{ steps.classify.output.category }} sales team?"
    options: [approve, reject, escalate]
  - id: route
    type: action
    uses: transform
    when: steps.approval.output == "approve"
    with: {value: {team: "{{ steps.classify.output.category }}"}}
"#;

both! {
#[tokio::test(flavor = "multi_thread")]
async fn approval_pauses_then_resumes_with_an_option() {
    let env = Env::new().await;
    env.server
        .answer_llm(&["not json", "{\"category\": \"enterprise\"}"]);
    let def = env.apply(APPROVAL).await;
    let run = env.start(&def, json!({"leadId": "lead-123"})).await;
    let paused = env.settle(&run.id).await;
    assert_eq!(
        paused.status,
        RunStatus::Failed,
        "an invalid answer with no retry fails: {paused:?}"
    );

    // With retries the invalid answer is one failed attempt.
    let env = Env::new().await;
    env.server
        .answer_llm(&["not json", "{\"category\": \"enterprise\"}"]);
    let def = env
        .apply(&APPROVAL.replace(
            "    type: agent\n",
            "    type: agent\n    retry: {max_attempts: 2, initial_delay: 10ms}\n",
        ))
        .await;
    let run = env.start(&def, json!({"leadId": "lead-123"})).await;
    let paused = env.settle(&run.id).await;
    assert_eq!(paused.status, RunStatus::Paused, "{paused:?}");
    assert_eq!(paused.current_step_index, 1);
    assert_eq!(
        paused.pending_action,
        Some(
            json!({"step": "approval", "type": "approval", "message": "Route to enterprise sales team?", "options": ["approve", "reject", "escalate"]})
        )
    );
    let steps = env.steps(&run.id);
    let classify: Vec<_> = steps.iter().filter(|s| s.step_id == "classify").collect();
    assert_eq!(classify.len(), 2);
    assert_eq!(classify[0].error.as_ref().unwrap()["kind"], "agent_output");
    let usage = classify[1].usage.as_ref().unwrap();
    assert_eq!(
        (
            usage["promptTokens"].as_u64(),
            usage["totalTokens"].as_u64()
        ),
        (Some(12), Some(17))
    );
    assert!(usage["durationMs"].is_u64());

    // A wrong option is refused and the run stays paused.
    let err = env
        .engine
        .resume(
            DEFAULT_WORKSPACE,
            &run.id,
            Resume::Approval {
                step: "approval".into(),
                input: json!("maybe"),
            },
            "test",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Validation { .. }), "{err:?}");
    let err = env
        .engine
        .resume(
            DEFAULT_WORKSPACE,
            &run.id,
            Resume::Signal {
                signal_type: "x".into(),
                payload: json!({}),
            },
            "test",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    let err = env
        .engine
        .resume(
            DEFAULT_WORKSPACE,
            &run.id,
            Resume::Approval {
                step: "classify".into(),
                input: json!("approve"),
            },
            "test",
        )
        .await
        .unwrap_err();
    // Naming a step that is not an approval is a bad request, naming the field.
    assert!(
        matches!(&err, EngineError::Validation { details, .. } if details["field"] == "input.resume.step"),
        "{err:?}"
    );
    assert_eq!(
        env.engine
            .run(DEFAULT_WORKSPACE, &run.id)
            .await
            .unwrap()
            .status,
        RunStatus::Paused
    );

    let resumed = env
        .engine
        .resume(
            DEFAULT_WORKSPACE,
            &run.id,
            Resume::Approval {
                step: "approval".into(),
                input: json!("approve"),
            },
            "ada@example.com",
        )
        .await
        .unwrap();
    assert!(
        matches!(resumed.status, RunStatus::Running | RunStatus::Completed),
        "{resumed:?}"
    );
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(json!({"team": "enterprise"})));
    let approval = env
        .steps(&run.id)
        .into_iter()
        .find(|s| s.step_id == "approval")
        .unwrap();
    assert_eq!(approval.output, Some(json!("approve")));
    assert_eq!(
        approval.meta.as_ref().unwrap()["decidedBy"],
        "ada@example.com"
    );
    let hooks = env.engine.store().hooks_for_run(&run.id).unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].status.as_str(), "resumed");
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_approval_skips_the_guarded_step() {
    let env = Env::new().await;
    env.server.answer_llm(&["{\"category\": \"smb\"}"]);
    let def = env.apply(APPROVAL).await;
    let run = env.start(&def, json!({"leadId": "x"})).await;
    assert_eq!(env.settle(&run.id).await.status, RunStatus::Paused);
    let hooks = env.engine.store().hooks_for_run(&run.id).unwrap();
    // The hook token alone resumes the run: no workspace, no key.
    env.engine
        .resume_hook(&hooks[0].token, json!({"option": "reject"}), "hook")
        .await
        .unwrap();
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(Value::Null));
    let route = env
        .steps(&run.id)
        .into_iter()
        .find(|s| s.step_id == "route")
        .unwrap();
    assert_eq!(route.status, StepStatus::Skipped);
    let err = env
        .engine
        .resume_hook(&hooks[0].token, json!("approve"), "hook")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
}
}

const PAYMENT: &str = r#"
id: payment-onboarding
input:
  type: object
  properties:
    companyName: {type: string}
steps:
  - id: link
    type: action
    uses: transform
    with: {value: {company: "{{ input.companyName }}"}}
  - id: paid
    type: external_event
    signal: payment.confirmed
    schema:
      type: object
      required: [transactionId, amount]
      properties:
        transactionId: {type: string}
        amount: {type: number}
  - id: welcome
    type: action
    uses: transform
    with: {value: {company: "{{ steps.link.output.company }}", tx: "{{ steps.paid.output.transactionId }}"}}
"#;

both! {
#[tokio::test(flavor = "multi_thread")]
async fn external_event_waits_for_its_signal_and_validates_the_payload() {
    let env = Env::new().await;
    let def = env.apply(PAYMENT).await;
    let run = env.start(&def, json!({"companyName": "Acme"})).await;
    let waiting = env.settle(&run.id).await;
    assert_eq!(waiting.status, RunStatus::Waiting);
    assert_eq!(
        waiting.pending_action.as_ref().unwrap()["signalType"],
        "payment.confirmed"
    );
    let resume = |t: &str, p: Value| Resume::Signal {
        signal_type: t.into(),
        payload: p,
    };
    let err = env
        .engine
        .resume(
            DEFAULT_WORKSPACE,
            &run.id,
            resume("payment.failed", json!({})),
            "api",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    let err = env
        .engine
        .resume(
            DEFAULT_WORKSPACE,
            &run.id,
            resume("payment.confirmed", json!({"transactionId": 5})),
            "api",
        )
        .await
        .unwrap_err();
    let EngineError::Validation { details, .. } = err else {
        panic!("{err:?}")
    };
    assert!(!details["problems"].as_array().unwrap().is_empty());
    assert_eq!(
        env.engine
            .run(DEFAULT_WORKSPACE, &run.id)
            .await
            .unwrap()
            .status,
        RunStatus::Waiting
    );

    env.engine
        .resume(
            DEFAULT_WORKSPACE,
            &run.id,
            resume(
                "payment.confirmed",
                json!({"transactionId": "txn_1", "amount": 499.0}),
            ),
            "api",
        )
        .await
        .unwrap();
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(json!({"company": "Acme", "tx": "txn_1"})));
    let signals = env.engine.store().signals(&run.id).unwrap();
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].signal_type, "payment.confirmed");
    let err = env
        .engine
        .resume(
            DEFAULT_WORKSPACE,
            &run.id,
            resume("payment.confirmed", json!({})),
            "api",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_waiting_and_running_runs_and_refuses_finished_ones() {
    let env = Env::new().await;
    let def = env.apply(PAYMENT).await;
    let run = env.start(&def, json!({"companyName": "Acme"})).await;
    env.settle(&run.id).await;
    let cancelled = env.engine.cancel(DEFAULT_WORKSPACE, &run.id).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    let paid = env
        .steps(&run.id)
        .into_iter()
        .find(|s| s.step_id == "paid")
        .unwrap();
    assert_eq!(paid.status, StepStatus::Cancelled);
    let err = env
        .engine
        .cancel(DEFAULT_WORKSPACE, &run.id)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
    let err = env.engine.cancel("ws_other", &run.id).await.unwrap_err();
    assert!(matches!(err, EngineError::NotFound(_)), "{err:?}");
    let err = env
        .engine
        .cancel(DEFAULT_WORKSPACE, "wfrun_nope")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotFound(_)), "{err:?}");
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn waits_fire_by_themselves_also_after_a_restart() {
    let mut env = Env::new().await;
    let def = env
        .apply("id: nap\nsteps:\n  - id: sleep\n    type: wait\n    duration: 700ms\n  - id: after\n    type: action\n    uses: transform\n    with: {value: woke}\n")
        .await;
    let run = env.start(&def, json!({})).await;
    let waiting = env.settle(&run.id).await;
    assert_eq!(waiting.status, RunStatus::Waiting);
    assert_eq!(waiting.pending_action.as_ref().unwrap()["type"], "wait");
    let cfg = config(&env.server);
    env.restart(cfg).await;
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.output, Some(json!("woke")));
    let finished = done.finished_at.unwrap();
    let waited = finished.duration_since(run.created_at);
    assert!(
        waited >= jiff::SignedDuration::from_millis(700),
        "{waited:?}"
    );
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn suspended_runs_fail_after_their_maximum_lifetime() {
    let server = TestServer::start().await;
    let mut cfg = config(&server);
    cfg.max_suspended = Duration::from_millis(300);
    let env = Env::with(server, cfg).await;
    let def = env.apply(PAYMENT).await;
    let run = env.start(&def, json!({"companyName": "Acme"})).await;
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.error.as_ref().unwrap()["kind"], "timeout");
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn parallel_branches_join() {
    let env = Env::new().await;
    let def = env
        .apply(
            r#"
id: fan
steps:
  - id: a
    type: action
    uses: http
    needs: []
    with: {url: "{server}/echo", method: POST, json: {branch: a}}
  - id: b
    type: action
    uses: http
    needs: []
    with: {url: "{server}/echo", method: POST, json: {branch: b}}
  - id: join
    type: action
    uses: transform
    needs: [a, b]
    with: {value: ["{{ steps.a.output.body.got.branch }}", "{{ steps.b.output.body.got.branch }}"]}
"#,
        )
        .await;
    let run = env.start(&def, json!({})).await;
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.output, Some(json!(["a", "b"])));
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_step_runs_a_child_and_waits_for_it() {
    let env = Env::new().await;
    env.apply(SEQUENCE).await;
    let def = env
        .apply("id: parent\nsteps:\n  - id: child\n    type: action\n    uses: workflow\n    with: {definition: seq, input: {name: Bob}}\n")
        .await;
    let run = env.start(&def, json!({})).await;
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.output.as_ref().unwrap()["result"], "HELLO BOB");
    let children = env.engine.store().child_runs(&run.id).unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(
        children[0].trigger["label"],
        format!("child of run {}", run.id)
    );
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_requests_but_not_history() {
    let server = TestServer::start().await;
    let mut cfg = config(&server);
    cfg.secrets.insert("TOKEN".into(), "tok-123456".into());
    let env = Env::with(server, cfg).await;
    let def = env
        .apply("id: sec\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/echo\", method: POST, json: {auth: \"Bearer {{ secrets.TOKEN }}\"}}\n")
        .await;
    let run = env.start(&def, json!({})).await;
    env.finish(&run.id).await;
    assert_eq!(
        env.server.seen()[0].body,
        json!({"auth": "Bearer tok-123456"})
    );
    let step = &env.steps(&run.id)[0];
    assert_eq!(step.input.as_ref().unwrap()["json"]["auth"], "Bearer ***");
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_step_timeout_fails_the_attempt_and_is_retried() {
    let env = Env::new().await;
    let def = env
        .apply("id: slow\nsteps:\n  - id: call\n    type: action\n    uses: http\n    timeout: 200ms\n    retry: {max_attempts: 2, initial_delay: 10ms}\n    with: {url: \"{server}/slow/3000\"}\n")
        .await;
    let run = env.start(&def, json!({})).await;
    let started = std::time::Instant::now();
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Failed, "{done:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout did not cut the call short"
    );
    let steps = env.steps(&run.id);
    assert_eq!(steps.len(), 2);
    assert!(
        steps
            .iter()
            .all(|s| s.error.as_ref().unwrap()["kind"] == "timeout"),
        "{steps:#?}"
    );
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_run_cancels_its_in_flight_step() {
    let env = Env::new().await;
    let def = env
        .apply("id: long\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/slow/5000\"}\n  - id: after\n    type: action\n    uses: transform\n    with: {value: 1}\n")
        .await;
    let run = env.start(&def, json!({})).await;
    env.engine
        .wait_for(DEFAULT_WORKSPACE, &run.id, Duration::from_secs(5), |s| {
            s == RunStatus::Running
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cancelled = env.engine.cancel(DEFAULT_WORKSPACE, &run.id).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    let steps = env.steps(&run.id);
    assert_eq!(steps.len(), 1, "{steps:#?}");
    assert_eq!(steps[0].status, StepStatus::Cancelled);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        env.engine
            .run(DEFAULT_WORKSPACE, &run.id)
            .await
            .unwrap()
            .status,
        RunStatus::Cancelled
    );
}
}
