//! Scale-out figures: `cargo bench --bench scale_out` prints
//! - durable steps/s of N ready 3-step runs (transforms) on SQLite (one process,
//!   `synchronous=FULL`) and on one PostgreSQL database (`synchronous_commit=on`) with 1, 2
//!   and 3 `stepwise serve` processes, from their start until every run finished,
//! - takeover after `kill -9`: runs in flight in one process, a second process running, the
//!   time from the kill until the second one recovered every run (2 s lease),
//! - signal → next step: runs started by process A wait at an `external_event`; each signal
//!   goes to process B, which claims the run, records it and runs the next step; p50/p90/p99
//!   until the run reads COMPLETED.
//! - a command through the inbox: runs started by process A are RUNNING there (an http
//!   call that never answers) while their approval waits; each approval goes to process B,
//!   which records it in the inbox and waits for A's answer; p50/p90/p99 of the request.
//!
//! The processes are the release binary `cargo bench` builds beside the bench
//! (`CARGO_BIN_EXE_stepwise`; `STEPWISE_BIN` overrides it). `STEPWISE_BENCH_RUNS` sets N
//! (default 10,000); `STEPWISE_BENCH_SIGNALS` the signals sent (default 200). The Postgres
//! parts need `STEPWISE_BENCH_PG` (a `postgres://` URL) or `STEPWISE_TEST_POSTGRES` (`1`:
//! the development database); each uses a fresh schema and drops it after. Only loopback.

use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use stepwise::model::{RUN_PREFIX, RunStatus, new_id};
use stepwise::store::{
    DEFAULT_WORKSPACE, PgOptions, PgStore, RunRecord, SqliteStore, Store, Synchronous, Write,
    test_backends,
};

const THREE: &str = "id: three\nsteps:\n  - id: a\n    type: action\n    uses: transform\n    with: {value: 1}\n  - id: b\n    type: action\n    uses: transform\n    with: {value: 2}\n  - id: c\n    type: action\n    uses: transform\n    with: {value: 3}\n";

const PAID: &str = r#"id: paid
input: {type: object, required: [orderId], properties: {orderId: {type: string}}}
steps:
  - id: paid
    type: external_event
    signal: payment.confirmed
    correlate: "{{ input.orderId }}"
  - id: ship
    type: action
    uses: transform
    with: {value: {done: true}}
"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn binary() -> PathBuf {
    match std::env::var_os("STEPWISE_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_stepwise")),
    }
}

fn pg_url() -> Option<String> {
    std::env::var("STEPWISE_BENCH_PG")
        .ok()
        .filter(|v| v.starts_with("postgres"))
        .or_else(test_backends::postgres_url)
}

/// A free loopback port (bound, then released for the process to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(db: &str, port: u16, lease: Option<&str>, dir: &Path) -> Serve {
    let mut cmd = Command::new(binary());
    cmd.args(["serve", "--insecure-no-auth", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--db", db]);
    if let Some(lease) = lease {
        cmd.args(["--lease", lease]);
    }
    let child = cmd
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
    Serve(child)
}

/// One HTTP/1.1 request on its own connection: (status, body).
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

fn wait_ready(port: u16) {
    let t = Instant::now();
    while !matches!(http(port, "GET", "/readyz", None), Ok((200, _))) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "server on {port} not ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pending_run(def: &stepwise::store::DefinitionRecord, input: serde_json::Value) -> RunRecord {
    let now = jiff::Timestamp::now();
    RunRecord {
        id: new_id(RUN_PREFIX),
        workspace_id: DEFAULT_WORKSPACE.into(),
        definition_id: def.version_id.clone(),
        definition_slug: def.slug.clone(),
        status: RunStatus::Pending,
        input,
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
    }
}

/// N ready runs of `source`, written straight to the store (no process executes them yet).
fn seed(store: &dyn Store, slug: &str, source: &str, n: usize) {
    let now = jiff::Timestamp::now();
    let (def, _) = store
        .put_definition(DEFAULT_WORKSPACE, slug, None, source, now)
        .expect("definition");
    let all: Vec<usize> = (0..n).collect();
    for chunk in all.chunks(2_000) {
        let writes: Vec<Write> = chunk
            .iter()
            .map(|_| Write::insert_run(pending_run(&def, json!({}))))
            .collect();
        store.commit(&writes).expect("seed runs");
    }
}

fn unfinished(store: &dyn Store) -> usize {
    store
        .run_ids_with_status(&[RunStatus::Pending, RunStatus::Running])
        .expect("count")
        .len()
}

/// Wait until no run is PENDING or RUNNING; the seconds since `t0`.
fn until_finished(store: &dyn Store, t0: Instant) -> f64 {
    loop {
        let left = unfinished(store);
        if left == 0 {
            return t0.elapsed().as_secs_f64();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "{left} runs did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sqlite(n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    {
        let store = SqliteStore::open(&db, Synchronous::Full).expect("store");
        seed(&store, "three", THREE, n);
    }
    let t0 = Instant::now();
    let _p = serve(&db.to_string_lossy(), free_port(), None, dir.path());
    let reader =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("read the store");
    let secs = loop {
        let left: i64 = reader
            .query_row(
                "SELECT COUNT(*) FROM runs WHERE status IN ('PENDING', 'RUNNING')",
                [],
                |r| r.get(0),
            )
            .expect("count");
        if left == 0 {
            break t0.elapsed().as_secs_f64();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "{left} runs did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "sqlite (synchronous=FULL), 1 process: {n} runs, {} steps in {secs:.2} s = {:.0} durable steps/s",
        3 * n,
        (3 * n) as f64 / secs
    );
}

/// A fresh schema on the bench database: its URL for the processes, and a store for the
/// bench's own writes and reads (its `drop_schema` cleans up).
fn schema(base: &str, name: &str) -> (String, PgStore) {
    let mut opts = PgOptions::new(base);
    opts.schema = Some(format!("stepwise_bench_{name}"));
    opts.pool_size = 2;
    let store = PgStore::open(&opts).expect("postgres");
    store.drop_schema().expect("drop old schema");
    let store = PgStore::open(&opts).expect("postgres");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3Dstepwise_bench_{name}");
    (url, store)
}

fn postgres_throughput(base: &str, n: usize, processes: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, store) = schema(base, &format!("scale_{processes}"));
    seed(&store, "three", THREE, n);
    // The bench executes nothing: the processes find the runs unowned.
    store.release_all().expect("release");
    let t0 = Instant::now();
    let ports: Vec<u16> = (0..processes).map(|_| free_port()).collect();
    let ps: Vec<Serve> = ports
        .iter()
        .map(|&port| serve(&url, port, None, dir.path()))
        .collect();
    let secs = until_finished(&store, t0);
    println!(
        "postgres (synchronous_commit=on), {processes} process(es): {n} runs, {} steps in {secs:.2} s = {:.0} durable steps/s",
        3 * n,
        (3 * n) as f64 / secs
    );
    for port in ports {
        commits(port);
    }
    drop(ps);
    store.drop_schema().expect("drop schema");
}

/// Where a process's time went: its commits, from its `/metrics`.
fn commits(port: u16) {
    let Ok((200, text)) = http(port, "GET", "/metrics", None) else {
        return;
    };
    let metric = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let (count, secs) = (
        metric("stepwise_commit_seconds_count"),
        metric("stepwise_commit_seconds_sum"),
    );
    let writes = metric("stepwise_commit_batch_writes_sum");
    if count > 0.0 {
        println!(
            "  a process: {count:.0} commits taking {secs:.2} s in all ({:.1} ms each, {:.0} writes each)",
            secs * 1e3 / count,
            writes / count
        );
    }
}

/// Accepts connections and never answers: an http step to it stays in flight.
fn black_hole() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

fn takeover(base: &str) {
    const RUNS: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, store) = schema(base, "takeover");
    let slow = format!(
        "id: slow\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {{method: POST, url: \"http://127.0.0.1:{}/x\", json: {{}}}}\n",
        black_hole()
    );
    seed(&store, "slow", &slow, RUNS);
    store.release_all().expect("release");
    let mut a = serve(&url, free_port(), Some("2s"), dir.path());
    let started = Instant::now();
    while store
        .run_ids_with_status(&[RunStatus::Running])
        .expect("read")
        .len()
        < RUNS
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "runs did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let b_port = free_port();
    let _b = serve(&url, b_port, Some("2s"), dir.path());
    wait_ready(b_port);
    let t0 = Instant::now();
    let _ = a.0.kill();
    let _ = a.0.wait();
    let ids = store
        .run_ids_with_status(&[RunStatus::Running])
        .expect("read");
    let recovered = |id: &String| {
        store
            .events(id)
            .expect("events")
            .iter()
            .any(|e| e.kind == stepwise::model::EventKind::StepRecovered)
    };
    let mut left: Vec<String> = ids;
    while !left.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} runs not taken over",
            left.len()
        );
        left.retain(|id| !recovered(id));
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "takeover after kill -9, lease 2 s: all {RUNS} runs recovered by the other process {:.2} s after the kill",
        t0.elapsed().as_secs_f64()
    );
    drop(_b);
    store.drop_schema().expect("drop schema");
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn signal_latency(base: &str, n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, store) = schema(base, "signal");
    let (pa, pb) = (free_port(), free_port());
    let (_a, _b) = (
        serve(&url, pa, None, dir.path()),
        serve(&url, pb, None, dir.path()),
    );
    wait_ready(pa);
    wait_ready(pb);
    store
        .put_definition(
            DEFAULT_WORKSPACE,
            "paid",
            None,
            PAID,
            jiff::Timestamp::now(),
        )
        .expect("definition");
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"definitionId": "paid", "input": {"orderId": format!("o-{i}")}});
        let (status, out) =
            http(pa, "POST", "/v1/workflow-runs", Some(&body.to_string())).expect("create at A");
        assert!(status < 300, "create: {status} {out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        ids.push(v["data"]["id"].as_str().expect("run id").to_string());
    }
    let t = Instant::now();
    while store
        .run_ids_with_status(&[RunStatus::Waiting])
        .expect("read")
        .len()
        < n
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "runs did not reach WAITING"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lat = Vec::with_capacity(n);
    for (i, id) in ids.iter().enumerate() {
        let body = json!({"signalType": "payment.confirmed", "correlate": format!("o-{i}"), "payload": {}});
        let t0 = Instant::now();
        let (status, out) =
            http(pb, "POST", "/v1/signals", Some(&body.to_string())).expect("signal at B");
        assert!(status < 300, "signal: {status} {out}");
        while store.run(id).expect("read").map(|r| r.status) != Some(RunStatus::Completed) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "run {id} did not complete"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "signal at a process that did not start the run -> next step done, {n} runs: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99)
    );
    drop((_a, _b));
    store.drop_schema().expect("drop schema");
}

fn inbox_latency(base: &str, n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, store) = schema(base, "inbox");
    let busy = format!(
        "id: busy\nsteps:\n  - id: review\n    type: approval\n    message: Ship it?\n    options: [approve, reject]\n    needs: []\n  - id: call\n    type: action\n    uses: http\n    with: {{method: POST, url: \"http://127.0.0.1:{}/x\", json: {{}}}}\n    needs: []\n",
        black_hole()
    );
    store
        .put_definition(
            DEFAULT_WORKSPACE,
            "busy",
            None,
            &busy,
            jiff::Timestamp::now(),
        )
        .expect("definition");
    let (pa, pb) = (free_port(), free_port());
    let (_a, _b) = (
        serve(&url, pa, None, dir.path()),
        serve(&url, pb, None, dir.path()),
    );
    wait_ready(pa);
    wait_ready(pb);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let body = json!({"definitionId": "busy", "input": {}});
        let (status, out) =
            http(pa, "POST", "/v1/workflow-runs", Some(&body.to_string())).expect("create at A");
        assert!(status < 300, "create: {status} {out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        ids.push(v["data"]["id"].as_str().expect("run id").to_string());
    }
    let t = Instant::now();
    for id in &ids {
        while !store
            .steps(id)
            .expect("read")
            .iter()
            .any(|s| s.step_id == "review" && s.status == stepwise::model::StepStatus::Waiting)
        {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "approvals did not wait"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let body = json!({"input": {"resume": {"step": "review", "input": "approve"}}}).to_string();
    let mut lat = Vec::with_capacity(n);
    for id in &ids {
        let t0 = Instant::now();
        let (status, out) = http(
            pb,
            "POST",
            &format!("/v1/workflow-runs/{id}/resume"),
            Some(&body),
        )
        .expect("approve at B");
        assert_eq!(status, 200, "approve: {out}");
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "approval at a process that does not execute the run (through the inbox), {n} runs: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99)
    );
    drop((_a, _b));
    store.drop_schema().expect("drop schema");
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects parts by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let on = |part: &str| filter.is_empty() || filter.iter().any(|f| part.contains(f.as_str()));
    let n = env_usize("STEPWISE_BENCH_RUNS", 10_000);
    println!("scale_out: {}", binary().display());
    if on("sqlite") {
        sqlite(n);
    }
    let Some(base) = pg_url() else {
        println!(
            "postgres: SKIPPED (set STEPWISE_BENCH_PG to a postgres:// URL, or STEPWISE_TEST_POSTGRES=1 for {})",
            test_backends::DEFAULT_URL
        );
        return;
    };
    for k in 1..=3 {
        if on(&format!("postgres{k}")) {
            postgres_throughput(&base, n, k);
        }
    }
    if on("takeover") {
        takeover(&base);
    }
    if on("signal") {
        signal_latency(&base, env_usize("STEPWISE_BENCH_SIGNALS", 200));
    }
    if on("inbox") {
        inbox_latency(&base, env_usize("STEPWISE_BENCH_SIGNALS", 200));
    }
}
