//! `stepwise migrate-store`: an SQLite store copied into Postgres keeps its history, and
//! its unfinished runs continue on a server there. Needs `STEPWISE_TEST_POSTGRES`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::show;

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("STEPWISE_SERVER")
        .env_remove("STEPWISE_API_KEY")
        .env_remove("STEPWISE_DB")
        .output()
        .unwrap_or_else(|e| panic!("cannot run stepwise: {e}"))
}

fn json_out(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "{}", show(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}\n{}", show(o)))
}

const DONE: &str = "id: done\nsteps:\n  - {id: one, type: action, uses: transform, with: {value: 1}}\n  - {id: two, type: action, uses: transform, with: {value: \"{{ steps.one.output }}\"}}\n";
const BROKEN: &str = "id: broken\nsteps:\n  - {id: bad, type: action, uses: transform, with: {value: \"{{ input.missing.deeper }}\"}}\n";
const APPROVE: &str = "id: approve\nsteps:\n  - {id: review, type: approval, message: ok?, options: [approve, reject]}\n  - {id: after, type: action, uses: transform, with: {value: \"{{ steps.review.output }}\"}}\n";
const SLEEPY: &str = "id: sleepy\nsteps:\n  - {id: nap, type: wait, duration: 1h}\n";
const ORDER: &str = "id: order\ninput: {type: object, required: [orderId], properties: {orderId: {type: string}}}\nsteps:\n  - {id: paid, type: external_event, signal: payment.confirmed, correlate: \"{{ input.orderId }}\", timeout: 2h}\n";

fn start(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["runs", "start"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--wait", "-o", "json"]);
    json_out(&cli(dir, &all))
}

/// What the API shows of a run: its record and its full history.
fn seen(dir: &Path, id: &str, server: Option<&str>) -> (Value, Value) {
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        if let Some(url) = server {
            all.extend_from_slice(&["--server", url]);
        }
        json_out(&cli(dir, &all))
    };
    (
        with(&["runs", "get", id, "-o", "json"]),
        with(&["history", "get", id, "-o", "json"]),
    )
}

/// `stepwise serve` on a Postgres URL, killed on drop.
struct Server {
    child: std::process::Child,
    url: String,
}

impl Server {
    fn start(dir: &Path, db: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_stepwise"))
            .args(["serve", "--insecure-no-auth", "--addr", &addr, "--db", db])
            .current_dir(dir)
            .env_remove("STEPWISE_DB")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_sqlite_store_moves_to_postgres_and_its_runs_continue_there() {
    let Some(url) = stepwise::store::test_backends::postgres_url() else {
        stepwise::store::test_backends::note_skipped();
        return;
    };
    let _schemas = stepwise::store::test_backends::Schemas;
    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in [
        ("done.yaml", DONE),
        ("broken.yaml", BROKEN),
        ("approve.yaml", APPROVE),
        ("sleepy.yaml", SLEEPY),
        ("order.yaml", ORDER),
    ] {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    let o = cli(dir.path(), &["definitions", "apply", "."]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    // A second version of one definition: every version moves.
    std::fs::write(
        dir.path().join("done.yaml"),
        DONE.replace("value: 1", "value: 2"),
    )
    .unwrap();
    let o = cli(dir.path(), &["definitions", "apply", "done.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = cli(dir.path(), &["keys", "create", "--name", "ci"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    let completed = start(dir.path(), &["done"]);
    assert_eq!(completed["status"], "COMPLETED", "{completed}");
    let failed = start(dir.path(), &["broken"]);
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let paused = start(dir.path(), &["approve"]);
    assert_eq!(paused["status"], "PAUSED", "{paused}");
    let sleeping = start(dir.path(), &["sleepy"]);
    assert_eq!(sleeping["status"], "WAITING", "{sleeping}");
    let order = start(dir.path(), &["order", "--input", r#"{"orderId": "A-1"}"#]);
    assert_eq!(order["status"], "WAITING", "{order}");
    let ids: Vec<String> = [&completed, &failed, &paused, &sleeping, &order]
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let before: Vec<(Value, Value)> = ids.iter().map(|id| seen(dir.path(), id, None)).collect();

    // A fresh schema for the target; the URL selects it, as a team's URL would.
    let db = dir.path().join("stepwise.db");
    let store = stepwise::store::test_backends::open_postgres(&db.join("target")).unwrap();
    let schema = store.schema().unwrap().to_string();
    drop(store);
    let target = format!("{url}?options=-c%20search_path%3D{schema}");

    // A process holding the file's engine lock: refused, nothing copied.
    let lock = stepwise::cli::local::try_lock(&db).unwrap().unwrap();
    let o = cli(
        dir.path(),
        &["migrate-store", "--from", "stepwise.db", "--to", &target],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stop it"),
        "{}",
        show(&o)
    );
    drop(lock);

    let o = cli(
        dir.path(),
        &[
            "migrate-store",
            "--from",
            "stepwise.db",
            "--to",
            &target,
            "--json",
        ],
    );
    let report = json_out(&o);
    assert_eq!(report["tables"]["runs"], 5, "{report}");
    assert_eq!(report["tables"]["definitions"], 6, "{report}");
    assert_eq!(report["tables"]["api_keys"], 1, "{report}");
    assert_eq!(report["tables"]["timers"], 3, "{report}");
    assert_eq!(report["verified"], true, "{report}");

    // Again: the target holds data now, so the copy is refused unless forced.
    let o = cli(
        dir.path(),
        &["migrate-store", "--from", "stepwise.db", "--to", &target],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--force"),
        "{}",
        show(&o)
    );
    let o = cli(
        dir.path(),
        &[
            "migrate-store",
            "--from",
            "stepwise.db",
            "--to",
            &target,
            "--force",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("step_executions"),
        "{}",
        show(&o)
    );

    let server = Server::start(dir.path(), &target);
    for (id, was) in ids.iter().zip(&before) {
        let now = seen(dir.path(), id, Some(&server.url));
        assert_eq!(&now, was, "run {id} differs after the move");
    }
    // The paused run continues on Postgres.
    let o = cli(
        dir.path(),
        &[
            "runs",
            "resume",
            &ids[2],
            "--step",
            "review",
            "--input",
            "approve",
            "--server",
            &server.url,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let got = json_out(&cli(
        dir.path(),
        &[
            "runs",
            "get",
            &ids[2],
            "--wait",
            "-o",
            "json",
            "--server",
            &server.url,
        ],
    ));
    assert_eq!(got["status"], "COMPLETED", "{got}");
    assert_eq!(got["output"], "approve", "{got}");
    // The waiting signal step is reached by its correlation on the new store.
    let o = cli(
        dir.path(),
        &[
            "signals",
            "send",
            "--type",
            "payment.confirmed",
            "--correlate",
            "A-1",
            "--payload",
            "{}",
            "--server",
            &server.url,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let got = json_out(&cli(
        dir.path(),
        &[
            "runs",
            "get",
            &ids[4],
            "--wait",
            "-o",
            "json",
            "--server",
            &server.url,
        ],
    ));
    assert_eq!(got["status"], "COMPLETED", "{got}");
    drop(server);
}
