//! The web UI's speed: `cargo bench --bench ui` prints server-side render times (p50, p90)
//! of History's first page with 100,000 runs in the store, with and without a status
//! filter; a 500-step run's detail tabs; and the weight of a page (HTML + CSS + JS).
//! Requests go through the router in process (no socket), so the figures are the server's.
//! `STEPWISE_BENCH_QUICK=1` uses 10,000 runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use stepwise::api::{AppState, router};
use stepwise::clock::SystemClock;
use stepwise::engine::{CreateRun, Engine, EngineConfig};
use stepwise::model::RunStatus;
use stepwise::store::{DEFAULT_WORKSPACE, RunRecord, SqliteStore, Store, Synchronous, Write};
use tower::ServiceExt;

const DEF: &str = "id: bench\ninput:\n  type: object\n  properties:\n    n: {type: integer}\nsteps:\n  - id: one\n    type: action\n    uses: transform\n    with: {value: \"{{ input.n }}\"}\n  - id: two\n    type: approval\n    message: ok?\n    options: [yes, no]\n";

async fn get(app: &axum::Router, path: &str) -> (Duration, usize) {
    let t = Instant::now();
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (t.elapsed(), body.len())
}

async fn measure(app: &axum::Router, label: &str, path: &str, n: usize) -> usize {
    let mut times = Vec::with_capacity(n);
    let mut size = 0;
    let _ = get(app, path).await; // warm the caches once
    for _ in 0..n {
        let (d, s) = get(app, path).await;
        times.push(d);
        size = s;
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3;
    println!(
        "{label:<48} p50 {:>7.2} ms  p90 {:>7.2} ms  ({} bytes of HTML, {n} requests)",
        p(0.5),
        p(0.9),
        size
    );
    size
}

/// The bytes of the CSS and JS every page loads.
async fn assets(app: &axum::Router) -> usize {
    let mut total = 0;
    for file in ["htmx.min.js", "ui.css", "ui.js"] {
        let (_, n) = get(app, &format!("/ui/assets/{file}")).await;
        total += n;
    }
    total
}

fn weight(page: &str, html: usize, assets: usize) {
    println!(
        "page weight: {page}: HTML {html} + CSS/JS {assets} = {} bytes ({:.1} KB, uncompressed)",
        html + assets,
        (html + assets) as f64 / 1024.0
    );
}

/// `runs` finished and paused runs, written straight into the store in big batches.
fn fill(store: &SqliteStore, definition_id: &str, runs: usize) {
    let start = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 30);
    let statuses = [
        RunStatus::Completed,
        RunStatus::Completed,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Paused,
    ];
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..runs {
        let at = start + jiff::SignedDuration::from_millis(i as i64 * 20);
        let status = statuses[i % statuses.len()];
        let kind = ["api", "webhook", "schedule", "cli"][i % 4];
        batch.push(Write::insert_run(RunRecord {
            id: format!("wfrun_{:032x}", i as u128 + (1u128 << 100)),
            workspace_id: DEFAULT_WORKSPACE.into(),
            definition_id: definition_id.into(),
            definition_slug: "bench".into(),
            status,
            input: json!({"n": i, "email": format!("user{i}@example.com")}),
            output: (status == RunStatus::Completed).then(|| json!({"ok": true, "n": i})),
            error: (status == RunStatus::Failed).then(|| json!({"message": "boom"})),
            idempotency_key: None,
            current_step_index: if status == RunStatus::Paused { 1 } else { 0 },
            attempt: 1,
            parent_run_id: None,
            parent_step_id: None,
            trigger: json!({"kind": kind, "label": kind.to_uppercase()}),
            pending_action: (status == RunStatus::Paused).then(
                || json!({"step": "two", "type": "approval", "message": "ok?", "options": ["yes", "no"]}),
            ),
            created_at: at,
            updated_at: at,
            started_at: Some(at),
            finished_at: (status != RunStatus::Paused)
                .then(|| at + jiff::SignedDuration::from_millis(350)),
        }));
        if batch.len() == 5_000 {
            store.commit(&batch).expect("commit");
            batch.clear();
        }
    }
    store.commit(&batch).expect("commit");
}

/// A chain of `n` transform steps.
fn long_definition(n: usize) -> String {
    let mut s = String::from("id: long\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  - id: s{i}\n    type: action\n    uses: transform\n    with: {{value: {{n: {i}, text: \"step {i}\"}}}}\n"
        ));
    }
    s
}

fn main() {
    let quick = std::env::var_os("STEPWISE_BENCH_QUICK").is_some();
    let runs = if quick { 10_000 } else { 100_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("dir");

        // History over many runs: a read-only engine (nothing to execute) on a filled store.
        let path = dir.path().join("history.db");
        let store = SqliteStore::open(&path, Synchronous::Normal).expect("store");
        let (def, _) = store
            .put_definition(
                DEFAULT_WORKSPACE,
                "bench",
                None,
                DEF,
                jiff::Timestamp::now(),
            )
            .expect("definition");
        let t = Instant::now();
        fill(&store, &def.version_id, runs);
        println!(
            "filled the store with {runs} runs in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let engine = Engine::read_only(
            Arc::new(store),
            Arc::new(SystemClock),
            EngineConfig::default(),
        );
        let app = router(AppState::new(engine, true, None));
        let html = measure(&app, "History, first page (25 runs)", "/ui/runs", 50).await;
        measure(
            &app,
            "History, first page, status=FAILED",
            "/ui/runs?status=FAILED",
            50,
        )
        .await;
        measure(
            &app,
            "History, first page, status=PAUSED",
            "/ui/runs?status=PAUSED",
            50,
        )
        .await;
        measure(
            &app,
            "History, first page, trigger=webhook",
            "/ui/runs?trigger=webhook",
            20,
        )
        .await;
        measure(&app, "History, page 100", "/ui/runs?page=100", 20).await;
        measure(&app, "History, text search", "/ui/runs?q=user4242%40", 10).await;
        measure(&app, "Approvals inbox", "/ui/approvals", 20).await;

        // Page weight: History's HTML plus everything it loads.
        let assets = assets(&app).await;
        weight("History", html, assets);

        // A 500-step run, executed by a real engine.
        let store =
            SqliteStore::open(&dir.path().join("long.db"), Synchronous::Normal).expect("store");
        let engine = Engine::start(
            Arc::new(store),
            Arc::new(SystemClock),
            EngineConfig::default(),
        )
        .expect("engine");
        engine
            .apply_definition(DEFAULT_WORKSPACE, "long.yaml", &long_definition(500))
            .await
            .expect("store")
            .expect("lint");
        let (run, _) = engine
            .create_run(CreateRun {
                workspace_id: DEFAULT_WORKSPACE.into(),
                definition: "long".into(),
                input: json!({}),
                idempotency_key: None,
                trigger: json!({"kind": "api", "label": "API"}),
            })
            .await
            .expect("create");
        let done = engine
            .wait_for(DEFAULT_WORKSPACE, &run.id, Duration::from_secs(300), |s| {
                s.is_terminal()
            })
            .await
            .expect("wait");
        assert_eq!(done.status, RunStatus::Completed);
        let app = router(AppState::new(engine.clone(), true, None));
        let mut heaviest = ("", 0);
        for tab in ["overview", "graph", "timeline", "metadata", "trace"] {
            let html = measure(
                &app,
                &format!("500-step run, {tab} tab"),
                &format!("/ui/runs/{}?tab={tab}", run.id),
                20,
            )
            .await;
            if html > heaviest.1 {
                heaviest = (tab, html);
            }
        }
        weight(
            &format!("500-step run, {} tab (the heaviest)", heaviest.0),
            heaviest.1,
            assets,
        );
        measure(
            &app,
            "500-step run, graph tab with a step's attempts",
            &format!("/ui/runs/{}?tab=graph&step=s250", run.id),
            20,
        )
        .await;
        engine.shutdown().await;
    });
}
