//! The engine defects found by driving a real server, one test each: hooks, signals,
//! retries, timers, secrets, memory, limits.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stepwise::clock::ManualClock;
use stepwise::engine::{Engine, EngineConfig, EngineError, Resume};
use stepwise::model::{RunStatus, StepStatus};
use stepwise::store::{DEFAULT_WORKSPACE, HookStatus, Synchronous, test_backends};

use crate::engine::{Env, config, create_in, finish_in};
use crate::server::TestServer;

const TWO_EVENTS: &str = r#"
id: two-events
steps:
  - id: a
    type: external_event
    signal: a
    needs: []
  - id: b
    type: external_event
    signal: b
    needs: []
"#;

fn hook_of(env: &Env, run_id: &str, step: &str) -> String {
    let hooks = env.engine.store().hooks_for_run(run_id).unwrap();
    hooks
        .into_iter()
        .find(|h| h.step_id == step)
        .map(|h| h.token)
        .unwrap()
}

fn step(env: &Env, run_id: &str, id: &str) -> stepwise::store::StepRecord {
    env.steps(run_id)
        .into_iter()
        .filter(|s| s.step_id == id)
        .max_by_key(|s| s.attempt)
        .unwrap()
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_hook_resumes_exactly_its_own_step_once() {
    let env = Env::new().await;
    let def = env.apply(TWO_EVENTS).await;
    let run = env.start(&def, json!({})).await;
    assert_eq!(env.settle(&run.id).await.status, RunStatus::Waiting);
    let b = hook_of(&env, &run.id, "b");
    env.engine
        .resume_hook(&b, json!({"from": "b"}), "hook")
        .await
        .unwrap();
    assert_eq!(step(&env, &run.id, "a").status, StepStatus::Waiting);
    let got_b = step(&env, &run.id, "b");
    assert_eq!(got_b.status, StepStatus::Completed);
    assert_eq!(got_b.output, Some(json!({"from": "b"})));

    // Used once: again it is refused and changes nothing.
    let again = env
        .engine
        .resume_hook(&b, json!({"from": "b-again"}), "hook")
        .await
        .unwrap_err();
    assert!(matches!(again, EngineError::Conflict(_)), "{again:?}");
    assert_eq!(step(&env, &run.id, "a").status, StepStatus::Waiting);
    assert_eq!(step(&env, &run.id, "b").output, Some(json!({"from": "b"})));

    let a = hook_of(&env, &run.id, "a");
    env.engine
        .resume_hook(&a, json!({"from": "a"}), "hook")
        .await
        .unwrap();
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(step(&env, &run.id, "a").output, Some(json!({"from": "a"})));
    let hooks = env.engine.store().hooks_for_run(&run.id).unwrap();
    assert!(
        hooks.iter().all(|h| h.status == HookStatus::Resumed),
        "{hooks:?}"
    );
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn racing_hook_posts_complete_the_step_once() {
    let env = Env::new().await;
    let def = env.apply(TWO_EVENTS).await;
    let run = env.start(&def, json!({})).await;
    env.settle(&run.id).await;
    let a = hook_of(&env, &run.id, "a");
    let calls = (0..8).map(|n| {
        let engine = env.engine.clone();
        let token = a.clone();
        tokio::spawn(async move { engine.resume_hook(&token, json!({"n": n}), "hook").await })
    });
    let results = futures_join(calls).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let completed = env
        .engine
        .store()
        .events(&run.id)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str() == "step.completed")
        .count();
    assert_eq!(completed, 1);
    assert_eq!(step(&env, &run.id, "b").status, StepStatus::Waiting);
}
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_signal_reaches_its_step_while_another_branch_runs() {
    let env = Env::new().await;
    let def = env
        .apply(
            r#"
id: busy
steps:
  - id: slow
    type: action
    uses: http
    needs: []
    with: {url: "{server}/slow/1500"}
  - id: go
    type: external_event
    signal: go
    needs: []
"#,
        )
        .await;
    let run = env.start(&def, json!({})).await;
    env.engine
        .wait_for(DEFAULT_WORKSPACE, &run.id, Duration::from_secs(5), |s| {
            s == RunStatus::Running
        })
        .await
        .unwrap();
    while env
        .engine
        .store()
        .hooks_for_run(&run.id)
        .unwrap()
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = env
        .engine
        .resume(
            DEFAULT_WORKSPACE,
            &run.id,
            Resume::Signal {
                signal_type: "go".into(),
                payload: json!({"ok": true}),
            },
            "test",
        )
        .await
        .unwrap();
    assert_eq!(resumed.status, RunStatus::Running);
    assert_eq!(step(&env, &run.id, "go").status, StepStatus::Completed);
    assert_eq!(env.finish(&run.id).await.status, RunStatus::Completed);
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_run_retry_gives_failed_steps_their_full_retry_count() {
    let env = Env::new().await;
    let def = env
        .apply("id: flaky\nsteps:\n  - id: call\n    type: action\n    uses: http\n    retry: {max_attempts: 3, initial_delay: 10ms, backoff: fixed}\n    with: {url: \"{server}/status/503\"}\n")
        .await;
    let run = env.start(&def, json!({})).await;
    assert_eq!(env.finish(&run.id).await.status, RunStatus::Failed);
    assert_eq!(env.server.seen().len(), 3);
    env.engine.retry(DEFAULT_WORKSPACE, &run.id).await.unwrap();
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.attempt, 2);
    assert_eq!(env.server.seen().len(), 6, "three more attempts");
    let steps = env.steps(&run.id);
    assert_eq!(
        steps.iter().map(|s| s.run_attempt).collect::<Vec<_>>(),
        vec![1, 1, 1, 2, 2, 2]
    );
}
}

fn start_at(db: &std::path::Path, clock: Arc<ManualClock>, cfg: EngineConfig) -> Engine {
    let store = test_backends::open(db, Synchronous::Normal).unwrap();
    Engine::start(store, clock, cfg).unwrap()
}

/// Let the scheduler notice a clock change (it looks at least once a second).
async fn tick(engine: &Engine, run_id: &str) -> stepwise::store::RunRecord {
    tokio::time::sleep(Duration::from_millis(1300)).await;
    engine.until_idle().await.unwrap();
    engine.run(DEFAULT_WORKSPACE, run_id).await.unwrap()
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_wait_is_not_woken_by_its_old_timer() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
    let engine = start_at(&dir.path().join("t.db"), clock.clone(), config(&server));
    let yaml = format!(
        "id: nap\nsteps:\n  - id: sleep\n    type: wait\n    duration: 10s\n    needs: []\n  - id: call\n    type: action\n    uses: http\n    needs: []\n    with: {{url: \"{}\"}}\n",
        server.url("/flaky/1")
    );
    engine
        .apply_definition(DEFAULT_WORKSPACE, "nap.yaml", &yaml)
        .await
        .unwrap()
        .unwrap();
    let run = create_in(&engine, DEFAULT_WORKSPACE, "nap").await.unwrap();
    let failed = finish_in(&engine, DEFAULT_WORKSPACE, &run.id).await;
    assert_eq!(failed.status, RunStatus::Failed);
    clock.advance(Duration::from_secs(5));
    engine.retry(DEFAULT_WORKSPACE, &run.id).await.unwrap();
    engine.until_idle().await.unwrap();
    // The first wait was due at 10 s; the retried one at 15 s.
    clock.advance(Duration::from_secs(6));
    let r = tick(&engine, &run.id).await;
    assert_eq!(r.status, RunStatus::Waiting, "woke early: {r:?}");
    clock.advance(Duration::from_secs(5));
    let r = tick(&engine, &run.id).await;
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_longer_than_the_suspension_limit_finishes() {
    let server = TestServer::start().await;
    let mut cfg = config(&server);
    cfg.max_suspended = Duration::from_millis(200);
    let env = Env::with(server, cfg).await;
    let def = env
        .apply("id: long-nap\nsteps:\n  - id: sleep\n    type: wait\n    duration: 600ms\n")
        .await;
    let run = env.start(&def, json!({})).await;
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn refused_commands_leave_no_run_in_memory() {
    let env = Env::new().await;
    let def = env
        .apply("id: quick\nsteps:\n  - id: one\n    type: action\n    uses: transform\n    with: {value: 1}\n")
        .await;
    let run = env.start(&def, json!({})).await;
    env.finish(&run.id).await;
    env.engine.until_idle().await.unwrap();
    for _ in 0..50 {
        let _ = env
            .engine
            .cancel(DEFAULT_WORKSPACE, &run.id)
            .await
            .unwrap_err();
        let _ = env
            .engine
            .retry(DEFAULT_WORKSPACE, &run.id)
            .await
            .unwrap_err();
        let _ = env.engine.cancel("ws_other", &run.id).await.unwrap_err();
        let _ = env
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
    }
    assert_eq!(env.engine.stats().await.unwrap().active_runs, 0);
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_of_another_workflow_is_a_conflict() {
    let env = Env::new().await;
    let one = env
        .apply("id: one\nsteps:\n  - id: s\n    type: action\n    uses: transform\n    with: {value: 1}\n")
        .await;
    let two = env
        .apply("id: two\nsteps:\n  - id: s\n    type: action\n    uses: transform\n    with: {value: 2}\n")
        .await;
    let (first, created) = env.create(&one, json!({}), Some("order-7")).await.unwrap();
    assert!(created);
    let (same, created) = env.create(&one, json!({}), Some("order-7")).await.unwrap();
    assert!(!created);
    assert_eq!(same.id, first.id);
    let err = env
        .create(&two, json!({}), Some("order-7"))
        .await
        .unwrap_err();
    match err {
        EngineError::Conflict(m) => assert!(m.contains("order-7"), "{m}"),
        other => panic!("{other:?}"),
    }
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_step_run_again_after_a_restart_is_marked_in_the_trace() {
    let mut env = Env::new().await;
    let def = env
        .apply("id: slowly\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/slow/800\"}\n")
        .await;
    let run = env.start(&def, json!({})).await;
    while env.server.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cfg = config(&env.server);
    env.restart(cfg).await;
    assert_eq!(env.finish(&run.id).await.status, RunStatus::Completed);
    let kinds: Vec<String> = env
        .engine
        .store()
        .events(&run.id)
        .unwrap()
        .into_iter()
        .filter(|e| e.step_id.as_deref() == Some("call"))
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "step.started",
            "step.recovered",
            "step.started",
            "step.completed"
        ]
    );
}
}

const SECRET: &str = "tok-123456";

both! {
#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_outputs_errors_children_or_the_trace() {
    let server = TestServer::start().await;
    let mut cfg = config(&server);
    cfg.secrets.insert("TOKEN".into(), SECRET.into());
    let env = Env::with(server, cfg).await;
    env.apply("id: kid\nsteps:\n  - id: echo\n    type: action\n    uses: transform\n    with: {value: \"{{ input.t }}\"}\n")
        .await;
    let def = env
        .apply(
            r#"
id: leaky
steps:
  - id: echo
    type: action
    uses: transform
    with: {value: {token: "{{ secrets.TOKEN }}"}}
  - id: say
    type: action
    uses: log
    with: {message: "token is {{ secrets.TOKEN }}"}
  - id: child
    type: action
    uses: workflow
    with: {definition: kid, input: {t: "{{ secrets.TOKEN }}"}}
  - id: fail
    type: action
    uses: http
    with: {url: "{server}/status/400?key={{ secrets.TOKEN }}"}
"#,
        )
        .await;
    let run = env.start(&def, json!({})).await;
    let done = env.finish(&run.id).await;
    assert_eq!(done.status, RunStatus::Failed, "{done:?}");
    // The request itself carried the secret.
    assert!(env.server.seen().iter().any(|s| s.path == "/status/400"));
    let store = env.engine.store();
    let children = store.child_runs(&run.id).unwrap();
    assert_eq!(children.len(), 1);
    for id in [run.id.clone(), children[0].id.clone()] {
        let everything = json!({
            "run": format!("{:?}", store.run(&id).unwrap()),
            "steps": format!("{:?}", store.steps(&id).unwrap()),
            "events": format!("{:?}", store.events(&id).unwrap()),
        })
        .to_string();
        assert!(!everything.contains(SECRET), "{everything}");
        assert!(everything.contains("***"), "{everything}");
    }
    assert_eq!(
        step(&env, &run.id, "echo").output,
        Some(json!({"token": "***"}))
    );
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_reads_only_the_secrets_granted_to_it() {
    let server = TestServer::start().await;
    let mut cfg = config(&server);
    cfg.secrets.insert("TOKEN".into(), SECRET.into());
    cfg.secrets.insert("SHARED".into(), "shared-secret".into());
    cfg.secret_grants
        .insert("SHARED".into(), vec!["ws_team".into()]);
    let env = Env::with(server, cfg).await;
    let yaml = format!(
        "id: peek\nsteps:\n  - id: shared\n    type: action\n    uses: http\n    with: {{url: \"{0}\", method: POST, json: {{s: \"{{{{ secrets.SHARED }}}}\"}}}}\n  - id: own\n    type: action\n    uses: http\n    with: {{url: \"{0}\", method: POST, json: {{s: \"{{{{ secrets.TOKEN }}}}\"}}}}\n",
        env.server.url("/echo")
    );
    env.engine
        .apply_definition("ws_team", "peek.yaml", &yaml)
        .await
        .unwrap()
        .unwrap();
    let run = create_in(&env.engine, "ws_team", "peek").await.unwrap();
    let done = finish_in(&env.engine, "ws_team", &run.id).await;
    assert_eq!(done.status, RunStatus::Failed, "{done:?}");
    let seen = env.server.seen();
    assert_eq!(seen.len(), 1, "only the granted secret renders: {seen:?}");
    assert_eq!(seen[0].body, json!({"s": "shared-secret"}));
    assert!(
        done.error.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("undefined")
    );
}
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn a_hook_whose_step_no_longer_waits_is_gone() {
    let env = Env::new().await;
    let def = env.apply(TWO_EVENTS).await;
    let run = env.start(&def, json!({})).await;
    env.settle(&run.id).await;
    let a = hook_of(&env, &run.id, "a");
    env.engine.cancel(DEFAULT_WORKSPACE, &run.id).await.unwrap();
    let err = env
        .engine
        .resume_hook(&a, json!({}), "hook")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Gone(_)), "{err:?}");
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

#[test]
fn a_zero_suspension_limit_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .current_dir(dir.path())
        .args(["serve", "--insecure-no-auth", "--addr", "127.0.0.1:0"])
        .env("STEPWISE_MAX_SUSPENDED", "0s")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("STEPWISE_MAX_SUSPENDED"), "{stderr}");
}

both! {
#[tokio::test(flavor = "multi_thread")]
async fn only_a_trigger_of_that_kind_may_use_its_key_prefix() {
    let env = Env::new().await;
    let def = env
        .apply("id: keyed\nsteps:\n  - id: s\n    type: action\n    uses: transform\n    with: {value: 1}\n")
        .await;
    let err = env
        .create(&def, json!({}), Some("schedule:nightly:2026"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Validation { details, .. } if details["field"] == "idempotencyKey"),
        "{err:?}"
    );
    let (run, created) = env
        .engine
        .create_run(stepwise::engine::CreateRun {
            workspace_id: DEFAULT_WORKSPACE.into(),
            definition: def,
            input: json!({}),
            idempotency_key: Some("schedule:nightly:2026".into()),
            trigger: json!({"kind": "schedule"}),
        })
        .await
        .unwrap();
    assert!(created, "{run:?}");
}
}
