//! Issue 11's multi-process crash test: three `stepwise serve` processes on one database,
//! 500 runs of a five-step workflow (http, approval, http, external_event, http) started
//! at random processes; a client per run polls it at a random process and sends its
//! approval and its signal (a payload of its own) to a random process as soon as the run
//! waits for them, as a real client would: a lost connection or a 5xx is an unknown
//! outcome, retried at another process; a 409 after one is accepted only if the run moved
//! past the step with what we sent. Meanwhile a random process is killed with `kill -9`
//! every few seconds and started again on its port. Every HTTP call has a timeout and the
//! test a deadline, past which it names the runs that are stuck and how.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::model::{EventKind, RunStatus, StepStatus};
use stepwise::store::test_backends::{self, Schemas};
use stepwise::store::{DEFAULT_WORKSPACE, PgStore, Store};

use super::client::{Board, Client, Counts, Intent, Progress, drive, get};
use super::cluster::{Db, Kill, Procs, RECORDING_LAG, between_kills};
use super::database;
use crate::server::TestServer;

const RUNS: usize = 500;
/// Runs driven at once: enough to keep every phase busy at each kill, few enough that
/// polling leaves the two cores of CI to the servers.
const WINDOW: usize = 100;
const DEADLINE: Duration = Duration::from_secs(150);
/// Kills stop when this few runs are left: the last ones, and any a kill left stuck, must
/// then complete within `CALM` (a run stuck in a live process would otherwise be freed
/// only by the next kill of that process).
const LAST_RUNS: usize = RUNS / 10;
const CALM: Duration = Duration::from_secs(30);
const CALLS: [&str; 3] = ["call0", "call2", "call4"];
const STEPS: [&str; 5] = ["call0", "review", "call2", "payout", "call4"];

fn definition(server: &TestServer) -> String {
    let url = server.url("/slow/100");
    let call = |id: &str, extra: &str| {
        format!(
            "  - id: {id}\n    type: action\n    uses: http\n    with: {{method: POST, url: \"{url}\", json: {{step: {id}, run: \"{{{{ run.id }}}}\"{extra}}}}}\n"
        )
    };
    format!(
        "id: signalled\nsteps:\n{}  - id: review\n    type: approval\n    message: Pay it?\n    options: [approve, reject]\n{}  - id: payout\n    type: external_event\n    signal: payout.sent\n    schema: {{type: object, required: [nonce], properties: {{nonce: {{type: string}}}}}}\n{}result:\n  decision: \"{{{{ steps.review.output }}}}\"\n  nonce: \"{{{{ steps.payout.output.nonce }}}}\"\n",
        call("call0", ""),
        call("call2", ", decision: \"{{ steps.review.output }}\""),
        call("call4", ", nonce: \"{{ steps.payout.output.nonce }}\""),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_and_approvals_at_random_processes_survive_kill_9() {
    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let began = Instant::now();
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = database("signals");
    let now = jiff::Timestamp::now();
    store
        .put_definition(
            DEFAULT_WORKSPACE,
            "signalled",
            None,
            &definition(&server),
            now,
        )
        .unwrap();
    let mut procs = Procs::start(&url, dir.path());
    let http = stepwise::http_client::build(&stepwise::http_client::ClientOptions {
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .unwrap();
    let client = Arc::new(Client {
        http,
        bases: procs.addrs.iter().map(|a| format!("http://{a}")).collect(),
        counts: Counts::default(),
    });
    let board: Board = Arc::new(Mutex::new(vec![Progress::default(); RUNS]));
    let intents: Vec<Intent> = (0..RUNS)
        .map(|i| Intent {
            decision: if fastrand::bool() {
                "approve"
            } else {
                "reject"
            },
            payload: json!({"nonce": format!("n{i}-{:016x}", fastrand::u64(..))}),
        })
        .collect();
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let mut clients = tokio::task::JoinSet::new();
    for (i, intent) in intents.iter().cloned().enumerate() {
        let (c, b, w) = (client.clone(), board.clone(), window.clone());
        clients.spawn(async move {
            let _turn = w.acquire_owned().await;
            (i, drive(i, c, b, intent).await)
        });
    }

    // When each kill was done, on the counting server's clock (µs).
    let mut kills: Vec<Kill> = Vec::new();
    let db = Db::connect(&store).await;
    let mut failures: Vec<String> = Vec::new();
    let mut next_kill = Instant::now() + between_kills();
    let mut calm_since: Option<Instant> = None;
    let mut exited: Vec<String> = Vec::new();
    while !clients.is_empty() {
        let calm_over = calm_since.is_some_and(|t| t.elapsed() > CALM);
        if began.elapsed() > DEADLINE || calm_over {
            let report = stuck(&store, &db, &board).await;
            procs.stop();
            panic!(
                "{} of {RUNS} runs not done after {:.1?}, {:.1?} after the last of {} kills:\n{report}\n{}",
                clients.len(),
                began.elapsed(),
                calm_since.map(|t| t.elapsed()).unwrap_or_default(),
                kills.len(),
                procs.logs()
            );
        }
        match tokio::time::timeout(Duration::from_millis(100), clients.join_next()).await {
            Ok(Some(Ok((i, Err(e))))) => failures.push(format!("client {i}: {e}")),
            Ok(Some(Err(e))) => failures.push(format!("a client panicked: {e}")),
            _ => {}
        }
        exited.extend(procs.revive());
        if calm_since.is_none() && clients.len() <= LAST_RUNS {
            calm_since = Some(Instant::now());
        }
        if calm_since.is_none() && Instant::now() >= next_kill {
            let slot = fastrand::usize(..3);
            let pid = procs.children[slot].id();
            procs.kill(slot);
            kills.push(Kill {
                at: jiff::Timestamp::now().as_microsecond(),
                held: db.held_by(pid).await,
            });
            if fastrand::bool() {
                // Sometimes a moment without it: its runs wait for their leases to expire.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(100..600))).await;
            }
            procs.restart(slot);
            next_kill = Instant::now() + between_kills();
        }
    }
    let driven = began.elapsed();
    procs.stop();
    let runs: Vec<(String, Intent)> = board
        .lock()
        .unwrap()
        .iter()
        .zip(&intents)
        .filter_map(|(p, intent)| Some((p.run_id.clone()?, intent.clone())))
        .collect();
    let (problems, repeated) = check(&store, &server, &runs, &kills);

    let n = &client.counts;
    // A command for a run another process executes goes to it through the inbox: no client
    // is told to come back later.
    let busy = get(&n.busy);
    eprintln!(
        "crash test: {RUNS} runs, {} kills in {driven:.1?} (checked in {:.1?}); {} requests: \
         {} unreachable, {busy} answered 503 busy ({} of them to a command's first try, {} of those while \
         its step waited), \
         {} other 5xx; {} commands found delivered by reading the run after an unknown \
         outcome ({} of them after a 409); {} 409 to commands sent before their step waited; \
         {repeated} calls repeated (in flight at a kill)",
        kills.len(),
        began.elapsed() - driven,
        get(&n.requests),
        get(&n.unreachable),
        get(&n.busy_first),
        get(&n.busy_waiting),
        get(&n.other_5xx),
        get(&n.settled_by_reading),
        get(&n.accepted_409),
        get(&n.early_409),
    );
    if !exited.is_empty() {
        // Not the engine's fault when the shared database refused connections at a start.
        eprintln!("restarted after exiting by themselves: {exited:?}");
    }
    assert!(
        failures.is_empty(),
        "{} clients failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        procs.logs()
    );
    if !problems.is_empty() {
        let traces = traces(&store, &problems);
        let kept = dir.keep();
        panic!(
            "{} problems:\n{}\nkills at (µs): {:?}\n{traces}\nlogs kept in {}",
            problems.len(),
            problems[..problems.len().min(40)].join("\n"),
            kills.iter().map(|k| k.at).collect::<Vec<_>>(),
            kept.display()
        );
    }
    assert_eq!(
        busy, 0,
        "commands answered 503 because another process held their run"
    );
}

/// The trace of the first runs a problem names, with times.
fn traces(store: &PgStore, problems: &[String]) -> String {
    let mut out = String::new();
    for p in problems.iter().take(3) {
        let Some(id) = p.split(':').next().filter(|id| id.starts_with("wfrun_")) else {
            continue;
        };
        out.push_str(&format!("trace of {id}:\n"));
        for e in store.events(id).unwrap_or_default() {
            out.push_str(&format!(
                "  {} {:?} {} {}\n",
                e.at.as_microsecond(),
                e.kind,
                e.step_id.unwrap_or_default(),
                e.data
            ));
        }
    }
    out
}

/// Every run completed once with its own decision and payload, each step completed once,
/// each signal recorded once, and each call made once but for those in flight at a kill
/// (made again with the same Idempotency-Key). Returns the problems and the repeats.
fn check(
    store: &PgStore,
    server: &TestServer,
    runs: &[(String, Intent)],
    kills: &[Kill],
) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let all = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];
    let stored = store.run_ids_with_status(&all).unwrap().len();
    if stored != RUNS || runs.len() != RUNS {
        problems.push(format!(
            "{stored} runs stored, {} started, for {RUNS} idempotency keys",
            runs.len()
        ));
    }
    for (id, intent) in runs {
        let run = store.run(id).unwrap().unwrap();
        let want = json!({"decision": intent.decision, "nonce": intent.payload["nonce"]});
        if run.status != RunStatus::Completed || run.output.as_ref() != Some(&want) {
            problems.push(format!(
                "{id}: {} with output {:?}, not {want}",
                run.status, run.output
            ));
        }
        let steps = store.steps(id).unwrap();
        for step in STEPS {
            let done: Vec<_> = steps
                .iter()
                .filter(|s| s.step_id == step && s.status == StepStatus::Completed)
                .collect();
            if done.len() != 1 {
                problems.push(format!("{id}: {step} completed {} times", done.len()));
            }
        }
        let output = |step: &str| {
            steps
                .iter()
                .find(|s| s.step_id == step && s.status == StepStatus::Completed)
                .and_then(|s| s.output.clone())
        };
        if output("review") != Some(json!(intent.decision))
            || output("payout") != Some(intent.payload.clone())
        {
            problems.push(format!(
                "{id}: the waits completed with other values: {steps:?}"
            ));
        }
        let events = store.events(id).unwrap();
        for kind in [
            EventKind::ApprovalDecided,
            EventKind::SignalReceived,
            EventKind::RunCompleted,
        ] {
            let n = events.iter().filter(|e| e.kind == kind).count();
            if n != 1 {
                problems.push(format!("{id}: {n} {kind:?} events"));
            }
        }
        for step in STEPS {
            let n = events
                .iter()
                .filter(|e| {
                    e.kind == EventKind::StepCompleted && e.step_id.as_deref() == Some(step)
                })
                .count();
            if n != 1 {
                problems.push(format!("{id}: {n} StepCompleted events of {step}"));
            }
        }
        let signals = store.signals(id).unwrap();
        if signals.len() != 1 || signals[0].payload != intent.payload {
            problems.push(format!("{id}: signals recorded {signals:?}"));
        }
    }

    let mut calls: HashMap<(String, String), Vec<crate::server::Seen>> = HashMap::new();
    for s in server.seen() {
        let key = (
            s.body["run"].as_str().unwrap_or_default().to_string(),
            s.body["step"].as_str().unwrap_or_default().to_string(),
        );
        calls.entry(key).or_default().push(s);
    }
    let mut repeated = 0;
    for (id, intent) in runs {
        for step in CALLS {
            let Some(mut seen) = calls.remove(&(id.clone(), step.to_string())) else {
                problems.push(format!("{id}: {step} was never called"));
                continue;
            };
            seen.sort_by_key(|s| s.at);
            let key = format!("{id}:{step}");
            let body = match step {
                "call2" => json!({"step": step, "run": id, "decision": intent.decision}),
                "call4" => json!({"step": step, "run": id, "nonce": intent.payload["nonce"]}),
                _ => json!({"step": step, "run": id}),
            };
            for s in &seen {
                if s.idempotency_key.as_deref() != Some(key.as_str()) || s.body != body {
                    problems.push(format!("{id}: {step} called with {s:?}, not {key} {body}"));
                }
            }
            for pair in seen.windows(2) {
                repeated += 1;
                let (first, again) = (pair[0].at, pair[1].at);
                let killed = |k: &Kill| {
                    k.held.contains(id) && first - RECORDING_LAG <= k.at && k.at <= again
                };
                if !kills.iter().any(killed) {
                    problems.push(format!(
                        "{id}: {step} called again ({first} and {again} µs) with no kill of a process that held the run in between"
                    ));
                }
            }
        }
    }
    for (run, step) in calls.keys() {
        problems.push(format!("a call for no run of ours: {run} {step}"));
    }
    (problems, repeated)
}

/// Which runs are not done, what their clients were doing, and how the database has them.
async fn stuck(store: &PgStore, db: &Db, board: &Board) -> String {
    let waiting: Vec<Progress> = board
        .lock()
        .map(|b| b.iter().filter(|p| !p.done).cloned().collect())
        .unwrap_or_default();
    let mut phases: HashMap<&str, usize> = HashMap::new();
    for p in &waiting {
        *phases.entry(p.phase).or_default() += 1;
    }
    let owners = db.owners().await;
    let mut out = format!("clients by phase: {phases:?}\n");
    for p in waiting.iter().take(30) {
        let Some(id) = &p.run_id else {
            out.push_str(&format!(
                "(no run yet) {}: {} tries, last {}\n",
                p.phase, p.attempts, p.last
            ));
            continue;
        };
        let run = store.run(id).ok().flatten();
        let steps: Vec<String> = store
            .steps(id)
            .unwrap_or_default()
            .iter()
            .map(|s| format!("{}#{}={}", s.step_id, s.attempt, s.status.as_str()))
            .collect();
        out.push_str(&format!(
            "{id}: client {} ({} tries, last {}); stored {} [{}]; {}\n",
            p.phase,
            p.attempts,
            p.last,
            run.map(|r| r.status.as_str()).unwrap_or("missing"),
            steps.join(" "),
            owners
                .get(id)
                .map(String::as_str)
                .unwrap_or("owner unknown"),
        ));
    }
    out
}
