//! Engine figures on this machine: `cargo bench --bench engine` prints
//! - throughput: 10,000 concurrent runs of a 3-step transform workflow (durable steps/s),
//! - latency: one 3-step run alone, create to COMPLETED (p50/p99),
//! - signal in to next step started (p50/p99), and timer overshoot (p50/p99),
//! - resident memory with 100,000 runs waiting on events or timers.
//!
//! Each with `synchronous=FULL` (default) and `NORMAL` where it matters.
//! `STEPWISE_BENCH_QUICK=1` runs smaller sizes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::clock::SystemClock;
use stepwise::engine::{CreateRun, Engine, EngineConfig, Resume};
use stepwise::model::{RunStatus, StepStatus};
use stepwise::store::{DEFAULT_WORKSPACE, SqliteStore, Synchronous};

const THREE_STEPS: &str = r#"
id: three
input:
  type: object
  properties:
    n: {type: integer}
steps:
  - id: a
    type: action
    uses: transform
    with: {value: {n: "{{ input.n }}"}}
  - id: b
    type: action
    uses: transform
    with: {value: {doubled: "{{ steps.a.output.n * 2 }}"}}
  - id: c
    type: action
    uses: transform
    with: {value: "{{ steps.b.output.doubled }}"}
"#;

const SIGNAL: &str = r#"
id: signal
steps:
  - id: wait
    type: external_event
    signal: go
  - id: next
    type: action
    uses: transform
    with: {value: done}
"#;

const TIMER: &str = r#"
id: timer
input:
  type: object
  properties:
    at: {type: string}
steps:
  - id: nap
    type: wait
    until: "{{ input.at }}"
  - id: next
    type: action
    uses: transform
    with: {value: done}
"#;

const PARKED: &str = r#"
id: parked
input:
  type: object
  properties:
    i: {type: integer}
steps:
  - id: event
    type: external_event
    needs: []
    signal: payment.confirmed
    when: input.i % 2 == 0
  - id: sleep
    type: wait
    needs: []
    duration: 2h
    when: input.i % 2 == 1
"#;

struct Bench {
    _dir: tempfile::TempDir,
    engine: Engine,
}

fn start(sync: Synchronous) -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("bench.db"), sync).expect("store");
    let engine = Engine::start(
        Arc::new(store),
        Arc::new(SystemClock),
        EngineConfig::default(),
    )
    .expect("engine");
    Bench { _dir: dir, engine }
}

async fn apply(engine: &Engine, yaml: &str) -> String {
    match engine
        .apply_definition(DEFAULT_WORKSPACE, "bench.yaml", yaml)
        .await
        .expect("store")
    {
        Ok((r, _)) => r.slug,
        Err(r) => panic!("{:?}", r.diagnostics),
    }
}

fn create(def: &str, input: serde_json::Value) -> CreateRun {
    CreateRun {
        workspace_id: DEFAULT_WORKSPACE.into(),
        definition: def.into(),
        input,
        idempotency_key: None,
        trigger: json!({"kind": "api"}),
    }
}

/// How many runs have `status` now.
async fn count(engine: &Engine, status: RunStatus) -> usize {
    let store = engine.store().clone();
    let (_, total) = tokio::task::spawn_blocking(move || {
        store.list_runs(&stepwise::store::RunQuery {
            workspace_id: DEFAULT_WORKSPACE.into(),
            status: Some(status),
            page: 1,
            page_size: 1,
            ..Default::default()
        })
    })
    .await
    .expect("join")
    .expect("count");
    total as usize
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn throughput(sync: Synchronous, runs: usize) {
    let b = start(sync);
    let def = apply(&b.engine, THREE_STEPS).await;
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(runs);
    for n in 0..runs {
        let (engine, def) = (b.engine.clone(), def.clone());
        tasks.push(tokio::spawn(async move {
            engine.create_run(create(&def, json!({"n": n}))).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("create");
    }
    let created = t.elapsed().as_secs_f64();
    // Count completions in the store every 10 ms: cheaper than following every update.
    while count(&b.engine, RunStatus::Completed).await < runs {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "throughput ({sync:?}): {runs} concurrent 3-step runs in {:.2} s (all created after {:.2} s) = {:.0} durable steps/s ({:.0} runs/s)",
        secs,
        created,
        (runs * 3) as f64 / secs,
        runs as f64 / secs
    );
    b.engine.shutdown().await;
}

async fn single_run_latency(sync: Synchronous, n: usize) {
    let b = start(sync);
    let def = apply(&b.engine, THREE_STEPS).await;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let (run, _) = b
            .engine
            .create_run(create(&def, json!({"n": i})))
            .await
            .expect("create");
        let r = b
            .engine
            .wait_for(
                DEFAULT_WORKSPACE,
                &run.id,
                Duration::from_secs(10),
                RunStatus::is_terminal,
            )
            .await
            .expect("wait");
        assert_eq!(r.status, RunStatus::Completed);
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "one 3-step run alone ({sync:?}), create to COMPLETED: p50 {:.2} ms, p99 {:.2} ms ({n} runs)",
        pct(&samples, 0.5),
        pct(&samples, 0.99)
    );
    b.engine.shutdown().await;
}

async fn signal_latency(sync: Synchronous, n: usize) {
    let b = start(sync);
    let def = apply(&b.engine, SIGNAL).await;
    let mut ids = Vec::new();
    for _ in 0..n {
        let (run, _) = b
            .engine
            .create_run(create(&def, json!({})))
            .await
            .expect("create");
        ids.push(run.id);
    }
    for id in &ids {
        b.engine
            .wait_for(DEFAULT_WORKSPACE, id, Duration::from_secs(10), |s| {
                s == RunStatus::Waiting
            })
            .await
            .expect("wait");
    }
    let mut samples = Vec::with_capacity(n);
    for id in &ids {
        let mut updates = b.engine.subscribe();
        let t = Instant::now();
        b.engine
            .resume(
                DEFAULT_WORKSPACE,
                id,
                Resume::Signal {
                    signal_type: "go".into(),
                    payload: json!({}),
                },
                "bench",
            )
            .await
            .expect("resume");
        loop {
            let u = updates.recv().await.expect("update");
            if u.run_id == *id
                && matches!(&u.step, Some((s, st)) if s == "next" && *st != StepStatus::Pending)
            {
                break;
            }
        }
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "signal in to next step started ({sync:?}): p50 {:.2} ms, p99 {:.2} ms ({n} signals)",
        pct(&samples, 0.5),
        pct(&samples, 0.99)
    );
    b.engine.shutdown().await;
}

async fn timer_overshoot(n: usize) {
    let b = start(Synchronous::Full);
    let def = apply(&b.engine, TIMER).await;
    let mut updates = b.engine.subscribe();
    let mut due = std::collections::HashMap::new();
    let base = jiff::Timestamp::now();
    for i in 0..n {
        let at = base + jiff::SignedDuration::from_millis(200 + (i as i64 * 7) % 500);
        let (run, _) = b
            .engine
            .create_run(create(&def, json!({"at": at.to_string()})))
            .await
            .expect("create");
        due.insert(run.id, at);
    }
    let mut samples = Vec::with_capacity(n);
    while samples.len() < n {
        let u = updates.recv().await.expect("update");
        if let Some((s, StepStatus::Completed)) = &u.step
            && s == "nap"
            && let Some(at) = due.get(&u.run_id)
        {
            let late = jiff::Timestamp::now().duration_since(*at);
            samples.push(Duration::from_micros(late.as_micros().max(0) as u64));
        }
    }
    samples.sort();
    println!(
        "timer overshoot (Full): p50 {:.2} ms, p99 {:.2} ms ({n} timers)",
        pct(&samples, 0.5),
        pct(&samples, 0.99)
    );
    b.engine.shutdown().await;
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn parked_memory(runs: usize) {
    let b = start(Synchronous::Normal);
    let def = apply(&b.engine, PARKED).await;
    let before = rss_mb();
    let t = Instant::now();
    let mut tasks = Vec::new();
    // At most 1,000 creates in flight, as a server under load would have.
    for chunk in (0..runs).collect::<Vec<_>>().chunks(1_000) {
        for &i in chunk {
            let (engine, def) = (b.engine.clone(), def.clone());
            tasks.push(tokio::spawn(async move {
                engine.create_run(create(&def, json!({"i": i}))).await
            }));
        }
        for t in tasks.drain(..) {
            t.await.expect("task").expect("create");
        }
    }
    // Let the scheduler park them all.
    while count(&b.engine, RunStatus::Waiting).await < runs {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{runs} runs waiting on events or timers (created in {:.1} s): resident memory {:.1} MB (process total; {:.1} MB before)",
        t.elapsed().as_secs_f64(),
        rss_mb(),
        before
    );
    b.engine.shutdown().await;
}

fn main() {
    let quick = std::env::var_os("STEPWISE_BENCH_QUICK").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (runs, lat, parked) = if quick {
            (1_000, 50, 5_000)
        } else {
            (10_000, 300, 100_000)
        };
        match std::env::var("STEPWISE_BENCH_ONLY").as_deref() {
            Ok("throughput") => return throughput(Synchronous::Full, runs).await,
            Ok("latency") => {
                single_run_latency(Synchronous::Full, lat).await;
                return signal_latency(Synchronous::Full, lat).await;
            }
            _ => {}
        }
        // First, while the process is fresh, so the figure is the engine's own.
        parked_memory(parked).await;
        for sync in [Synchronous::Full, Synchronous::Normal] {
            throughput(sync, runs).await;
        }
        for sync in [Synchronous::Full, Synchronous::Normal] {
            single_run_latency(sync, lat).await;
        }
        for sync in [Synchronous::Full, Synchronous::Normal] {
            signal_latency(sync, lat).await;
        }
        timer_overshoot(lat).await;
    });
}
