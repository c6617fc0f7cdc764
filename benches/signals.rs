//! Correlated signal routing: `cargo bench --bench signals` parks 100,000 runs, each waiting
//! for `payment.confirmed` with its own order id, then sends signals to random orders and
//! prints
//! - the routing lookup alone (the store's index of waiting steps by type and value), first
//!   over 100,000 hook rows written straight to the store (seconds, even in a debug build),
//!   then over the runs the engine parked,
//! - a whole signal (lookup, checks, the step's completion committed) with
//!   `synchronous=NORMAL` and `FULL`, p50/p99.
//!
//! `STEPWISE_BENCH_QUICK=1` parks 5,000 runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::clock::SystemClock;
use stepwise::engine::{CreateRun, Engine, EngineConfig, SendSignal};
use stepwise::model::RunStatus;
use stepwise::store::{DEFAULT_WORKSPACE, SqliteStore, Synchronous};

const ORDER: &str = r#"
id: order
input:
  type: object
  required: [orderId]
  properties:
    orderId: {type: string}
steps:
  - id: paid
    type: external_event
    signal: payment.confirmed
    correlate: "{{ input.orderId }}"
  - id: next
    type: action
    uses: transform
    with: {value: "{{ steps.paid.output }}"}
"#;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn waiting(engine: &Engine) -> u64 {
    let store = engine.store().clone();
    tokio::task::spawn_blocking(move || {
        store.list_runs(&stepwise::store::RunQuery {
            workspace_id: DEFAULT_WORKSPACE.into(),
            status: Some(RunStatus::Waiting),
            page: 1,
            page_size: 1,
            ..Default::default()
        })
    })
    .await
    .expect("join")
    .expect("count")
    .1
}

async fn park(engine: &Engine, runs: usize) {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for chunk in (0..runs).collect::<Vec<_>>().chunks(1_000) {
        for &i in chunk {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                engine
                    .create_run(CreateRun {
                        workspace_id: DEFAULT_WORKSPACE.into(),
                        definition: "order".into(),
                        input: json!({"orderId": format!("order-{i}")}),
                        idempotency_key: None,
                        trigger: json!({"kind": "api"}),
                    })
                    .await
            }));
        }
        for t in tasks.drain(..) {
            t.await.expect("task").expect("create");
        }
    }
    while waiting(engine).await < runs as u64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{runs} runs waiting for payment.confirmed, one order id each (parked in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
}

async fn bench(sync: Synchronous, runs: usize, samples: usize, lookup_first: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("bench.db"), sync).expect("store");
    let engine = Engine::start(
        Arc::new(store),
        Arc::new(SystemClock),
        EngineConfig::default(),
    )
    .expect("engine");
    engine
        .apply_definition(DEFAULT_WORKSPACE, "order.yaml", ORDER)
        .await
        .expect("store")
        .expect("lint");
    park(&engine, runs).await;
    let mut pick = fastrand::Rng::with_seed(7);
    let mut orders: Vec<usize> = (0..runs).collect();
    pick.shuffle(&mut orders);

    if lookup_first {
        let mut lookups = Vec::with_capacity(samples);
        for &i in orders.iter().take(samples) {
            let key = format!("order-{i}");
            let t = Instant::now();
            let hooks = engine
                .store()
                .hooks_by_correlation(DEFAULT_WORKSPACE, "payment.confirmed", &key)
                .expect("lookup");
            lookups.push(t.elapsed());
            assert_eq!(hooks.len(), 1);
        }
        lookups.sort();
        println!(
            "routing lookup (index of waiting steps by signal type and correlation value), {runs} waiting: p50 {:.3} ms, p99 {:.3} ms",
            pct(&lookups, 0.5),
            pct(&lookups, 0.99)
        );
    }

    let mut whole = Vec::with_capacity(samples);
    for &i in orders.iter().skip(samples).take(samples) {
        let t = Instant::now();
        let out = engine
            .signal(SendSignal {
                workspace_id: DEFAULT_WORKSPACE.into(),
                signal_type: "payment.confirmed".into(),
                correlate: format!("order-{i}"),
                payload: json!({"amount": 1}),
                via: "bench".into(),
                start: None,
                // As a webhook sends it: with a delivery id, looked up and recorded.
                delivery: Some(format!("api:bench-{i}")),
            })
            .await
            .expect("signal");
        whole.push(t.elapsed());
        assert_eq!(out.reached.len(), 1);
    }
    whole.sort();
    println!(
        "signal routed to one of {runs} waiting runs and its step completed (committed, synchronous={sync:?}): p50 {:.3} ms, p99 {:.3} ms",
        pct(&whole, 0.5),
        pct(&whole, 0.99)
    );
    engine.shutdown().await;
}

/// The index lookup over `rows` waiting hooks written directly, without parking runs.
fn lookup_rows(rows: usize, samples: usize) {
    use stepwise::store::{HookKind, HookRecord, HookStatus, Store, Write};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("rows.db"), Synchronous::Normal).expect("store");
    let now = jiff::Timestamp::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(10_000) {
        let writes: Vec<Write> = chunk
            .iter()
            .map(|&i| {
                Write::PutHook(HookRecord {
                    token: format!("hk_{i}"),
                    workspace_id: DEFAULT_WORKSPACE.into(),
                    run_id: format!("wfrun_{i}"),
                    step_id: "paid".into(),
                    kind: HookKind::ExternalEvent,
                    status: HookStatus::Pending,
                    created_at: now,
                    resumed_at: None,
                    signal_type: Some("payment.confirmed".into()),
                    correlation: Some(format!("order-{i}")),
                })
            })
            .collect();
        store.commit(&writes).expect("commit");
    }
    let mut pick = fastrand::Rng::with_seed(7);
    let mut lookups = Vec::with_capacity(samples);
    for _ in 0..samples {
        let key = format!("order-{}", pick.usize(0..rows));
        let t = Instant::now();
        let hooks = store
            .hooks_by_correlation(DEFAULT_WORKSPACE, "payment.confirmed", &key)
            .expect("lookup");
        lookups.push(t.elapsed());
        assert_eq!(hooks.len(), 1);
    }
    lookups.sort();
    println!(
        "routing lookup over {rows} waiting hook rows (index by signal type and correlation value): p50 {:.3} ms, p99 {:.3} ms",
        pct(&lookups, 0.5),
        pct(&lookups, 0.99)
    );
}

fn main() {
    let quick = std::env::var_os("STEPWISE_BENCH_QUICK").is_some();
    let (runs, samples) = if quick {
        (5_000, 200)
    } else {
        (100_000, 1_000)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .expect("runtime");
    lookup_rows(100_000, samples);
    if std::env::var_os("STEPWISE_BENCH_LOOKUP_ONLY").is_some() {
        return;
    }
    rt.block_on(async {
        bench(Synchronous::Normal, runs, samples, true).await;
        if !quick {
            bench(Synchronous::Full, runs, samples, false).await;
        }
    });
}
