//! Several real `stepwise serve` processes on one Postgres database (a fresh schema).
//! Here: kill -9 a random one every 700 ms and start it again (runs that only execute: a
//! dense kill rate, so takeovers are themselves taken over), or pause one past its lease;
//! every run completes and every step completion is recorded exactly once. `crash` (with
//! `client` and `cluster`): issue 11's test, approvals and signals sent to random
//! processes while they are killed. `takeover`: a command that claims a stopped process's
//! run. `wait`: a wait for a run, and a child run's end, at a process that does not
//! execute the run. Needs Postgres (`STEPWISE_TEST_POSTGRES`); without it the tests pass
//! at once and say so.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::model::{RUN_PREFIX, RunStatus, StepStatus, new_id};
use stepwise::store::test_backends::{self, Schemas};
use stepwise::store::{DEFAULT_WORKSPACE, PgStore, RunRecord, Store, Write};

use crate::server::TestServer;

mod client;
mod cluster;
mod crash;
mod takeover;
mod wait;

const STEPS: usize = 5;

/// An engine on the schema at `url`, as another process would be; its lease is long, so
/// only a stop hands its runs over.
fn engine(url: &str) -> stepwise::engine::Engine {
    let mut opts = stepwise::store::PgOptions::new(url);
    opts.lease = Duration::from_secs(300);
    opts.pool_size = 4;
    stepwise::engine::Engine::start(
        std::sync::Arc::new(PgStore::open(&opts).unwrap()),
        std::sync::Arc::new(stepwise::clock::SystemClock),
        stepwise::engine::EngineConfig::default(),
    )
    .unwrap()
}

/// Apply `yaml` (its id is `slug`) at `engine` and start a run of it there.
async fn start(engine: &stepwise::engine::Engine, slug: &str, yaml: &str) -> RunRecord {
    engine
        .apply_definition(DEFAULT_WORKSPACE, &format!("{slug}.yaml"), yaml)
        .await
        .unwrap()
        .unwrap();
    let (run, _) = engine
        .create_run(stepwise::engine::CreateRun {
            workspace_id: DEFAULT_WORKSPACE.into(),
            definition: slug.into(),
            input: json!({}),
            idempotency_key: None,
            trigger: json!({"kind": "api"}),
        })
        .await
        .unwrap();
    run
}

/// http, transform, http, transform, http: the http steps hit the counting server.
fn definition(server: &TestServer) -> String {
    let mut s = String::from("id: scaled\nsteps:\n");
    for i in 0..STEPS {
        if i % 2 == 0 {
            s.push_str(&format!(
                "  - id: call{i}\n    type: action\n    uses: http\n    retry: {{max_attempts: 5, initial_delay: 10ms}}\n    with: {{method: POST, url: \"{}\", json: {{step: {i}, run: \"{{{{ run.id }}}}\"}}}}\n",
                server.url("/slow/100")
            ));
        } else {
            s.push_str(&format!(
                "  - id: mark{i}\n    type: action\n    uses: transform\n    with: {{value: {{n: {i}}}}}\n"
            ));
        }
    }
    s
}

/// The schema's URL, and a store on it for the test's own reads.
fn database(tag: &str) -> (String, PgStore) {
    let url = test_backends::postgres_url().unwrap_or_default();
    let path = std::env::temp_dir().join(format!("scale-out-{tag}-{}", new_id("t")));
    let store = test_backends::open_postgres(&path).unwrap();
    let schema = store.schema().unwrap_or_default().to_string();
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}options=-csearch_path%3D{schema}"), store)
}

fn create_runs(store: &PgStore, server: &TestServer, n: usize) -> Vec<String> {
    let now = jiff::Timestamp::now();
    let (def, _) = store
        .put_definition(DEFAULT_WORKSPACE, "scaled", None, &definition(server), now)
        .unwrap();
    let runs: Vec<RunRecord> = (0..n)
        .map(|_| RunRecord {
            id: new_id(RUN_PREFIX),
            workspace_id: DEFAULT_WORKSPACE.into(),
            definition_id: def.version_id.clone(),
            definition_slug: def.slug.clone(),
            status: RunStatus::Pending,
            input: json!({}),
            output: None,
            error: None,
            idempotency_key: None,
            current_step_index: 0,
            attempt: 1,
            parent_run_id: None,
            parent_step_id: None,
            trigger: json!({"kind": "api"}),
            pending_action: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        })
        .collect();
    let ids = runs.iter().map(|r| r.id.clone()).collect();
    let writes: Vec<Write> = runs.into_iter().map(Write::insert_run).collect();
    store.commit(&writes).unwrap();
    // This test process executes nothing: the serve processes find them unowned.
    store.release_all().unwrap();
    ids
}

fn serve(url: &str, dir: &std::path::Path) -> Child {
    serve_on(url, dir, "127.0.0.1:0", Stdio::null())
}

/// A `stepwise serve` process on `addr` with a 2 s lease and 8 connections, its log
/// (stderr) to `log`.
fn serve_on(url: &str, dir: &std::path::Path, addr: &str, log: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args([
            "serve",
            "--insecure-no-auth",
            "--addr",
            addr,
            "--lease",
            "2s",
            // Three processes and their restarts stay well under max_connections (100),
            // beside the other tests that share the server.
            "--db-pool",
            "8",
            "--db",
        ])
        .arg(url)
        .current_dir(dir)
        .env("RUST_LOG", "stepwise=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn wait_all_finished(store: &PgStore, ids: &[String], limit: Duration) {
    let started = Instant::now();
    loop {
        let unfinished = store
            .run_ids_with_status(&[RunStatus::Pending, RunStatus::Running])
            .unwrap();
        if unfinished.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "{} of {} runs did not finish",
            unfinished.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every run completed, each step completion recorded once, no call repeated except one
/// that was in flight when its process died (same Idempotency-Key).
fn check(store: &PgStore, server: &TestServer, ids: &[String], interruptions: usize) {
    let mut calls: HashMap<String, usize> = HashMap::new();
    for s in server.seen() {
        *calls
            .entry(s.idempotency_key.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let mut repeated = 0;
    for id in ids {
        let run = store.run(id).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Completed, "{run:?}");
        let steps = store.steps(id).unwrap();
        let mut completed: HashMap<&str, usize> = HashMap::new();
        for s in &steps {
            if s.status == StepStatus::Completed {
                *completed.entry(s.step_id.as_str()).or_default() += 1;
            }
        }
        assert_eq!(completed.len(), STEPS, "{steps:#?}");
        assert!(completed.values().all(|&n| n == 1), "{steps:#?}");
        let events = store.events(id).unwrap();
        let done = events
            .iter()
            .filter(|e| e.kind == stepwise::model::EventKind::RunCompleted)
            .count();
        assert_eq!(done, 1, "one completion event: {events:#?}");
    }
    for (key, n) in &calls {
        assert!(!key.is_empty(), "every call carries an Idempotency-Key");
        if *n > 1 {
            repeated += n - 1;
        }
    }
    // Only calls in flight at an interruption run again: at most the runs a process held.
    assert!(
        repeated <= interruptions * ids.len(),
        "{repeated} repeated calls after {interruptions} interruptions"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_processes_survive_kill_9_of_any() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = database("kill");
    let ids = create_runs(&store, &server, 400);
    let mut procs: Vec<Child> = (0..3).map(|_| serve(&url, dir.path())).collect();
    let mut kills = 0;
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let victim = fastrand::usize(..procs.len());
        let _ = procs[victim].kill(); // SIGKILL
        let _ = procs[victim].wait();
        kills += 1;
        if round % 2 == 0 {
            // Sometimes a moment without it: its runs wait for their leases to expire.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        procs[victim] = serve(&url, dir.path());
    }
    wait_all_finished(&store, &ids, Duration::from_secs(90)).await;
    for p in &mut procs {
        let _ = p.kill();
        let _ = p.wait();
    }
    check(&store, &server, &ids, kills);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_process_past_its_lease_is_fenced() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = database("pause");
    let ids = create_runs(&store, &server, 300);
    let mut paused = serve(&url, dir.path());
    // Let it claim runs and start steps before the others exist.
    let started = Instant::now();
    while store
        .run_ids_with_status(&[RunStatus::Running])
        .unwrap()
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "it never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = paused.id().to_string();
    let stop = |sig: &str| {
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    };
    assert!(stop("-STOP"));
    let mut others: Vec<Child> = (0..2).map(|_| serve(&url, dir.path())).collect();
    // Past its 2 s lease: the others take its runs over and finish them.
    wait_all_finished(&store, &ids, Duration::from_secs(60)).await;
    // It wakes up with its old view: its writes are refused by the fence.
    assert!(stop("-CONT"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    for p in others.iter_mut().chain(std::iter::once(&mut paused)) {
        let _ = p.kill();
        let _ = p.wait();
    }
    check(&store, &server, &ids, 1);
    // The others did take over: steps the paused process had in flight ran again there.
    let recovered = ids
        .iter()
        .flat_map(|id| store.events(id).unwrap())
        .filter(|e| e.kind == stepwise::model::EventKind::StepRecovered)
        .count();
    assert!(
        recovered > 0,
        "no run was taken over from the paused process"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_held_elsewhere_is_unknown_to_other_workspaces() {
    use std::sync::Arc;
    use stepwise::engine::{Engine, EngineConfig, EngineError};
    use stepwise::store::PgOptions;

    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let server = TestServer::start().await;
    let (url, store) = database("held");
    let ids = create_runs(&store, &server, 1);
    // This store's process now holds the run (its lease is live for the whole test).
    assert!(store.claim_run(&ids[0]).unwrap());
    let other = PgStore::open(&PgOptions::new(&url)).unwrap();
    let engine = Engine::start(
        Arc::new(other),
        Arc::new(stepwise::clock::SystemClock),
        EngineConfig::default(),
    )
    .unwrap();
    // Its own workspace's commands wait in the inbox for the holder (tests/it/inbox.rs);
    // another workspace learns nothing about the run, not even that it is busy.
    let hidden = engine.cancel("ws_other", &ids[0]).await;
    assert!(
        matches!(hidden, Err(EngineError::NotFound(_))),
        "{hidden:?}"
    );
    engine.shutdown().await;
    let run = store.run(&ids[0]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Pending);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_lets_other_processes_take_its_runs_at_once() {
    use std::sync::Arc;
    use stepwise::engine::{Engine, EngineConfig};
    use stepwise::store::PgOptions;

    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let server = TestServer::start().await;
    let (url, store) = database("release");
    let open = || {
        let mut opts = PgOptions::new(&url);
        opts.lease = Duration::from_secs(300);
        PgStore::open(&opts).unwrap()
    };
    let engine = Engine::start(
        Arc::new(open()),
        Arc::new(stepwise::clock::SystemClock),
        EngineConfig::default(),
    )
    .unwrap();
    let run = start(&engine, "scaled", &definition(&server)).await;
    // Its first step is in flight (the counting server holds it for 100 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.seen().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let other = open();
    assert!(!other.claim_run(&run.id).unwrap(), "held while it runs");
    engine.shutdown().await;
    // Long before the 300 s lease: the stopped process let it go.
    assert!(other.claim_run(&run.id).unwrap(), "released at the stop");
    drop(store);
}
