//! HTTP create-run load on loopback: `cargo bench --bench api` prints creates/s and
//! p50/p99 latency. Each 201 means the run is committed (synchronous=FULL by default).
//! The client runs in the same process, sharing the two cores with the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::api::{AppState, router};
use stepwise::clock::SystemClock;
use stepwise::engine::{Engine, EngineConfig};
use stepwise::store::{DEFAULT_WORKSPACE, SqliteStore, Synchronous};

const DEF: &str = "id: bench\ninput:\n  type: object\n  properties:\n    n: {type: integer}\nsteps:\n  - id: one\n    type: action\n    uses: transform\n    with: {value: \"{{ input.n }}\"}\n";

async fn load(sync: Synchronous, total: usize, concurrency: usize) {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(&dir.path().join("api.db"), sync).expect("store");
    let engine = Engine::start(
        Arc::new(store),
        Arc::new(SystemClock),
        EngineConfig::default(),
    )
    .expect("engine");
    engine
        .apply_definition(DEFAULT_WORKSPACE, "bench.yaml", DEF)
        .await
        .expect("store")
        .expect("lint");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/v1/workflow-runs",
        listener.local_addr().expect("addr")
    );
    let app = router(AppState::new(engine.clone(), true, None));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let per_worker = total / concurrency;
    let t = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (http, url) = (http.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_worker);
            for i in 0..per_worker {
                let body = json!({"definitionId": "bench", "input": {"n": w * per_worker + i}});
                let s = Instant::now();
                let resp = http.post(&url).json(&body).send().await.expect("send");
                assert_eq!(resp.status().as_u16(), 201);
                let _ = resp.bytes().await;
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut all: Vec<Duration> = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let secs = t.elapsed().as_secs_f64();
    all.sort();
    let p = |q: f64| all[((all.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3;
    println!(
        "POST /v1/workflow-runs ({sync:?}, {concurrency} connections): {:.0} creates/s, p50 {:.2} ms, p99 {:.2} ms ({} requests)",
        all.len() as f64 / secs,
        p(0.5),
        p(0.99),
        all.len()
    );
    engine.shutdown().await;
}

fn main() {
    let quick = std::env::var_os("STEPWISE_BENCH_QUICK").is_some();
    let total = if quick { 5_000 } else { 50_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .expect("runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    rt.block_on(async {
        load(Synchronous::Full, total, 32).await;
        load(Synchronous::Normal, total, 32).await;
    });
}
