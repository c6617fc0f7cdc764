//! kill -9 the engine mid-run, many times: every run still completes, every step completion
//! is recorded exactly once, and no step whose completion was committed runs again.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::model::{RUN_PREFIX, RunStatus, StepStatus, new_id};
use stepwise::store::{DEFAULT_WORKSPACE, RunRecord, SqliteStore, Store, Synchronous, Write};

use crate::server::TestServer;

const RUNS: usize = 40;
const KILLS: usize = 20;
const STEPS: usize = 12;

fn definition(server: &TestServer) -> String {
    let mut s = String::from("id: crashy\nsteps:\n");
    for i in 0..STEPS {
        if i % 2 == 0 {
            s.push_str(&format!(
                "  - id: call{i}\n    type: action\n    uses: http\n    retry: {{max_attempts: 5, initial_delay: 10ms}}\n    with: {{method: POST, url: \"{}\", json: {{step: {i}, run: \"{{{{ run.id }}}}\"}}}}\n",
                server.url("/slow/40")
            ));
        } else {
            s.push_str(&format!("  - id: mark{i}\n    type: action\n    uses: transform\n    with: {{value: {{n: {i}}}}}\n"));
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_survive_repeated_kill_9() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    {
        let store = SqliteStore::open(&db, Synchronous::Full).unwrap();
        let now = jiff::Timestamp::now();
        let (def, _) = store
            .put_definition(DEFAULT_WORKSPACE, "crashy", None, &definition(&server), now)
            .unwrap();
        let runs: Vec<Write> = (0..RUNS)
            .map(|_| {
                Write::insert_run(RunRecord {
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
            })
            .collect();
        store.commit(&runs).unwrap();
    }

    let worker = || {
        Command::new(env!("CARGO_BIN_EXE_stepwise"))
            .args(["worker", "--exit-when-idle", "--db"])
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut kills = 0;
    for round in 0..KILLS {
        let mut child = worker();
        // Kill at varied moments: during recovery, mid-step, mid-commit.
        tokio::time::sleep(Duration::from_millis(15 + (round as u64 * 37) % 120)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    let mut child = worker();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "final worker failed: {status:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        kills >= KILLS / 2,
        "too few kills landed while work was in flight: {kills}"
    );

    let store = SqliteStore::open(&db, Synchronous::Full).unwrap();
    let (runs, total) = store
        .list_runs(&stepwise::store::RunQuery {
            workspace_id: DEFAULT_WORKSPACE.into(),
            page: 1,
            page_size: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(total as usize, RUNS);
    let seen = server.seen();
    let mut calls: HashMap<String, Vec<i64>> = HashMap::new();
    for s in &seen {
        calls
            .entry(s.idempotency_key.clone().unwrap_or_default())
            .or_default()
            .push(s.at);
    }
    let mut repeated = 0;
    for run in &runs {
        assert_eq!(run.status, RunStatus::Completed, "{run:?}");
        assert_eq!(run.current_step_index, STEPS as i64);
        let steps = store.steps(&run.id).unwrap();
        let mut completed: HashMap<&str, usize> = HashMap::new();
        for s in &steps {
            if s.status == StepStatus::Completed {
                *completed.entry(s.step_id.as_str()).or_default() += 1;
            }
        }
        assert_eq!(completed.len(), STEPS, "{steps:#?}");
        assert!(
            completed.values().all(|&n| n == 1),
            "a step completed twice: {steps:#?}"
        );
        for s in steps
            .iter()
            .filter(|s| s.status == StepStatus::Completed && s.step_id.starts_with("call"))
        {
            let key = format!("{}:{}", run.id, s.step_id);
            let at = calls
                .get(&key)
                .unwrap_or_else(|| panic!("no request for {key}"));
            let finished = s.finished_at.unwrap().as_microsecond();
            assert!(
                at.iter().all(|&t| t <= finished),
                "{key} was called again after its completion was committed"
            );
            repeated += at.len() - 1;
        }
    }
    eprintln!(
        "crash test: {kills} kills, {} requests, {repeated} repeated in-flight calls",
        seen.len()
    );
}
