//! The engine when the store refuses commits: a retry survives a crash right after it, and
//! an outage refuses changes at once, keeps reads, re-runs nothing and recovers by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stepwise::api::{AppState, router};
use stepwise::clock::SystemClock;
use stepwise::engine::{Engine, EngineConfig, EngineError};
use stepwise::model::RunStatus;
use stepwise::store::{DEFAULT_WORKSPACE, SqliteStore, Store, Synchronous};

use crate::engine::{config, create_in, finish_in};
use crate::faults::store::FaultStore;
use crate::server::TestServer;

struct Rig {
    _dir: tempfile::TempDir,
    server: TestServer,
    fault: Arc<FaultStore>,
    engine: Engine,
    cfg: EngineConfig,
}

async fn rig(yaml: &str) -> Rig {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("s.db"), Synchronous::Normal).unwrap();
    let fault = Arc::new(FaultStore::new(Arc::new(inner)));
    let mut cfg = config(&server);
    cfg.commit_retry_first = Duration::from_millis(20);
    cfg.commit_retry_max = Duration::from_millis(200);
    let engine = Engine::start(fault.clone(), Arc::new(SystemClock), cfg.clone()).unwrap();
    let yaml = yaml.replace("{server}", &format!("http://{}", server.addr));
    engine
        .apply_definition(DEFAULT_WORKSPACE, "wf.yaml", &yaml)
        .await
        .unwrap()
        .unwrap();
    Rig {
        _dir: dir,
        server,
        fault,
        engine,
        cfg,
    }
}

async fn create(engine: &Engine, def: &str) -> Result<String, EngineError> {
    create_in(engine, DEFAULT_WORKSPACE, def)
        .await
        .map(|r| r.id)
}

async fn finish(engine: &Engine, id: &str) -> stepwise::store::RunRecord {
    finish_in(engine, DEFAULT_WORKSPACE, id).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_is_one_commit_so_a_crash_right_after_it_loses_nothing() {
    let r = rig("id: once\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/flaky/1\"}\n").await;
    let id = create(&r.engine, "once").await.unwrap();
    assert_eq!(finish(&r.engine, &id).await.status, RunStatus::Failed);
    // The retry's own commit goes through; every later one fails, then the process "dies".
    r.fault.fail_next(1, u32::MAX);
    r.engine.retry(DEFAULT_WORKSPACE, &id).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), r.engine.shutdown()).await;
    let store: Arc<dyn Store> = r.fault.inner().clone();
    let engine = Engine::start(store, Arc::new(SystemClock), r.cfg.clone()).unwrap();
    let done = finish(&engine, &id).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.attempt, 2);
}

async fn http(base: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_refuses_changes_keeps_reads_reruns_nothing_and_recovers() {
    let r = rig("id: slow\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"{server}/slow/700\"}\n  - id: after\n    type: action\n    uses: transform\n    with: {value: done}\n").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(AppState::new(r.engine.clone(), true, None));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let id = create(&r.engine, "slow").await.unwrap();
    while r.server.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.fault.go_down();
    // The step's result arrives during the outage; its commit fails and is retried.
    tokio::time::sleep(Duration::from_millis(900)).await;

    let started = Instant::now();
    let err = create(&r.engine, "slow").await.unwrap_err();
    assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
    let (status, body) = http(
        &base,
        "POST",
        "/v1/workflow-runs",
        Some(json!({"definitionId": "slow", "input": {}})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "changes must be refused at once"
    );
    let (status, body) = http(&base, "GET", &format!("/v1/workflow-runs/{id}"), None).await;
    assert_eq!(status, 200, "reads keep working: {body}");
    let (status, body) = http(&base, "GET", "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = http(&base, "GET", "/healthz", None).await;
    assert_eq!(status, 200, "alive during an outage: {body}");
    assert!(
        body["store"].as_str().unwrap().contains("refuses"),
        "{body}"
    );
    assert!(r.engine.store_error().is_some());

    r.fault.heal();
    let done = finish(&r.engine, &id).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.output, Some(json!("done")));
    assert_eq!(r.server.seen().len(), 1, "the step ran once");
    let (status, _) = http(&base, "GET", "/readyz", None).await;
    assert_eq!(status, 200);
    assert!(r.engine.store_error().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_stays_reported_until_the_store_takes_writes_again() {
    let r = rig("id: quick\nsteps:\n  - id: s\n    type: action\n    uses: transform\n    with: {value: 1}\n").await;
    r.fault.go_down();
    let err = create(&r.engine, "quick").await.unwrap_err();
    assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
    // Nothing is left to commit; the engine probes the store and keeps reporting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(r.engine.store_error().is_some());
    let err = create(&r.engine, "quick").await.unwrap_err();
    assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
    r.fault.heal();
    let started = Instant::now();
    while r.engine.store_error().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = create(&r.engine, "quick").await.unwrap();
    assert_eq!(finish(&r.engine, &id).await.status, RunStatus::Completed);
}
