//! The `runs`/`definitions`/`history` client on the embedded store (no `--server`): reads
//! never execute steps, changes run the engine until idle or go to the server holding the db.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::server::TestServer;
use crate::util::show;

/// The real binary in `dir` (database `dir/stepwise.db`), with no server configured.
fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("STEPWISE_SERVER")
        .env_remove("STEPWISE_API_KEY")
        .env_remove("STEPWISE_DB")
        .env_remove("STEPWISE_PUBLIC_URL")
        .output()
        .unwrap_or_else(|e| panic!("cannot run stepwise: {e}"))
}

/// Like `cli`, off the async test thread so the test's own servers keep answering.
async fn cli_async(dir: &Path, args: &[&str]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&dir, &args)
    })
    .await
    .unwrap()
}

/// A fresh folder whose embedded store holds these definitions (`(file name, YAML)`).
async fn applied(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in files {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    let o = cli_async(dir.path(), &["definitions", "apply", "."]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    dir
}

fn json_out(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "{}", show(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}\n{}", show(o)))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const REVIEWED_CALL: &str = r#"
id: reviewed-call
steps:
  - id: review
    type: approval
    message: "Call the endpoint?"
    options: [approve, reject]
  - id: notify
    type: action
    uses: http
    when: steps.review.output == "approve"
    with:
      method: POST
      url: "{server}/slow/300"
      json: {hello: world}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn embedded_resume_commits_the_next_step_and_reads_never_repeat_it() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wf.yaml"),
        REVIEWED_CALL.replace("{server}", &format!("http://{}", server.addr)),
    )
    .unwrap();
    let o = cli_async(dir.path(), &["definitions", "apply", "wf.yaml"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let run = json_out(
        &cli_async(
            dir.path(),
            &["runs", "start", "reviewed-call", "--wait", "-o", "json"],
        )
        .await,
    );
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(run["status"], "PAUSED", "{run}");

    let o = cli_async(
        dir.path(),
        &[
            "runs", "resume", &id, "--step", "review", "--input", "approve",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stderr(&o).contains("until idle"), "{}", show(&o));
    assert!(stderr(&o).contains("notify"), "{}", show(&o));

    for _ in 0..2 {
        let got = json_out(&cli_async(dir.path(), &["runs", "get", &id, "-o", "json"]).await);
        assert_eq!(got["status"], "COMPLETED", "{got}");
        let notify = &got["steps"][1];
        assert_eq!(notify["name"], "notify");
        assert_eq!(notify["status"], "COMPLETED", "{got}");
        assert_eq!(notify["output"]["body"]["got"], json!({"hello": "world"}));
    }
    let calls = server
        .seen()
        .iter()
        .filter(|s| s.path == "/slow/300")
        .count();
    assert_eq!(calls, 1, "the endpoint was called {calls} times");
}

const SLEEPY: &str = "id: sleepy\nsteps:\n  - {id: nap, type: wait, duration: 1h}\n  - {id: after, type: action, uses: transform, with: {value: 1}}\n";
const APPROVE: &str = "id: approve\nsteps:\n  - {id: review, type: approval, message: ok?, options: [approve, reject]}\n";

#[test]
fn runs_show_what_a_waiting_run_waits_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sleepy.yaml"), SLEEPY).unwrap();
    std::fs::write(dir.path().join("approve.yaml"), APPROVE).unwrap();
    let o = cli(dir.path(), &["definitions", "apply", "."]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    let sleeping = json_out(&cli(
        dir.path(),
        &["runs", "start", "sleepy", "--wait", "-o", "json"],
    ));
    assert_eq!(sleeping["status"], "WAITING", "{sleeping}");
    assert_eq!(sleeping["waitingOn"]["label"], "Sleeping", "{sleeping}");
    assert_eq!(sleeping["waitingOn"]["step"], "nap");
    assert!(sleeping["waitingOn"]["until"].is_string(), "{sleeping}");
    let hooked = json_out(&cli(
        dir.path(),
        &["runs", "start", "approve", "--wait", "-o", "json"],
    ));
    assert_eq!(hooked["status"], "PAUSED", "{hooked}");
    assert_eq!(
        hooked["waitingOn"]["label"], "Waiting for approval",
        "{hooked}"
    );
    assert_eq!(hooked["waitingOn"]["step"], "review");

    let id = hooked["id"].as_str().unwrap();
    let got = json_out(&cli(dir.path(), &["runs", "get", id, "-o", "json"]));
    assert_eq!(got["waitingOn"]["label"], "Waiting for approval", "{got}");
    let o = cli(dir.path(), &["runs", "get", id]);
    assert!(stdout(&o).contains("Waiting for approval"), "{}", show(&o));
    // With nothing running the engine, --wait cannot see a change: it shows the run now.
    let sleeping_id = sleeping["id"].as_str().unwrap();
    let o = cli(
        dir.path(),
        &["runs", "get", sleeping_id, "--wait", "-o", "json"],
    );
    assert_eq!(json_out(&o)["status"], "WAITING");
    assert!(stderr(&o).contains("--wait is ignored"), "{}", show(&o));

    let list = json_out(&cli(dir.path(), &["runs", "list", "-o", "json"]));
    let labels: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["waitingOn"]["label"].as_str())
        .collect();
    assert_eq!(labels, vec!["Waiting for approval", "Sleeping"], "{list}");
    let table = stdout(&cli(dir.path(), &["runs", "list"]));
    assert!(table.contains("WAITING ON"), "{table}");
    assert!(table.contains("Waiting for approval (review)"), "{table}");
    assert!(table.contains("Sleeping (nap) until "), "{table}");
    let history = json_out(&cli(dir.path(), &["history", "list", "-o", "json"]));
    assert_eq!(history[1]["waitingOn"]["label"], "Sleeping", "{history}");
    let table = stdout(&cli(dir.path(), &["history", "list"]));
    assert!(table.contains("Sleeping (nap)"), "{table}");
    // History says how each run started (seed 002's trigger label).
    assert!(table.contains("TRIGGER"), "{table}");
    assert_eq!(history[0]["trigger"]["label"], "CLI", "{history}");
    assert!(
        table.lines().any(|l| l.contains(id) && l.contains("CLI")),
        "{table}"
    );

    // Answered, the run no longer waits on anything.
    let o = cli(
        dir.path(),
        &[
            "runs", "resume", id, "--step", "review", "--input", "reject",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let got = json_out(&cli(dir.path(), &["runs", "get", id, "-o", "json"]));
    assert_eq!(got["status"], "COMPLETED", "{got}");
    assert_eq!(got["waitingOn"], Value::Null, "{got}");
}

#[test]
fn seed_cli_shapes_take_the_workflow_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("approve.yaml"), APPROVE).unwrap();
    std::fs::write(dir.path().join("sleepy.yaml"), SLEEPY).unwrap();
    let o = cli(dir.path(), &["definitions", "apply", "."]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let run = json_out(&cli(
        dir.path(),
        &["runs", "start", "approve", "--wait", "-o", "json"],
    ));
    let id = run["id"].as_str().unwrap();
    json_out(&cli(dir.path(), &["runs", "start", "sleepy", "-o", "json"]));

    // `runs list WORKFLOW --status …` filters by workflow (and status, any case).
    let list = json_out(&cli(
        dir.path(),
        &[
            "runs", "list", "approve", "--status", "paused", "-o", "json",
        ],
    ));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], id);
    let list = json_out(&cli(
        dir.path(),
        &[
            "runs", "list", "approve", "--status", "failed", "-o", "json",
        ],
    ));
    assert_eq!(list, json!([]));
    let o = cli(
        dir.path(),
        &["runs", "list", "approve", "--definition", "sleepy"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("--definition"), "{}", show(&o));

    // `runs get WORKFLOW RUN_ID --include …`; a run of another workflow is refused.
    let got = json_out(&cli(
        dir.path(),
        &[
            "runs",
            "get",
            "approve",
            id,
            "--include",
            "trigger,steps,trace",
            "-o",
            "json",
        ],
    ));
    assert_eq!(got["id"], id);
    assert!(got["trace"].is_array(), "{got}");
    let o = cli(dir.path(), &["runs", "get", "sleepy", id]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stderr(&o).contains("belongs to workflow `approve`, not `sleepy`"),
        "{}",
        show(&o)
    );

    // `runs hooks WORKFLOW RUN_ID`: the token and a resume URL with no made-up host.
    let hooks = json_out(&cli(
        dir.path(),
        &["runs", "hooks", "approve", id, "-o", "json"],
    ));
    let token = hooks[0]["token"].as_str().unwrap();
    assert!(token.starts_with("hk_"), "{hooks}");
    let url = hooks[0]["resumeUrl"].as_str().unwrap();
    assert_eq!(url, format!("/v1/hooks/{token}/resume"), "{hooks}");
    let o = cli(dir.path(), &["runs", "hooks", "approve", id]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stdout(&o).contains(token), "{}", show(&o));
    assert!(stdout(&o).contains("TOKEN"), "{}", show(&o));
    assert!(!stdout(&o).contains("http://"), "{}", show(&o));
    assert!(stderr(&o).contains("runs resume"), "{}", show(&o));
    // A configured public URL makes it a full URL.
    let o = Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args(["runs", "hooks", id, "-o", "json"])
        .current_dir(dir.path())
        .env_remove("STEPWISE_SERVER")
        .env_remove("STEPWISE_DB")
        .env("STEPWISE_PUBLIC_URL", "https://flows.example.com/")
        .output()
        .unwrap();
    let hooks = json_out(&o);
    assert_eq!(
        hooks[0]["resumeUrl"],
        format!("https://flows.example.com/v1/hooks/{token}/resume")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_server_on_the_db_reads_stay_local_and_changes_go_to_the_server() {
    use std::sync::Arc;

    use stepwise::api::{AppState, router};
    use stepwise::clock::SystemClock;
    use stepwise::engine::{Engine, EngineConfig};
    use stepwise::store::{SqliteStore, Synchronous};

    let dir = applied(&[("approve.yaml", APPROVE)]).await;
    let run = json_out(
        &cli_async(
            dir.path(),
            &["runs", "start", "approve", "--wait", "-o", "json"],
        )
        .await,
    );
    let id = run["id"].as_str().unwrap().to_string();

    // A server in this process holds the database, as `stepwise serve` does.
    let db = dir.path().join("stepwise.db");
    let lock = stepwise::cli::local::lock(&db).unwrap();
    let store = SqliteStore::open(&db, Synchronous::Full).unwrap();
    let engine = Engine::start(
        Arc::new(store),
        Arc::new(SystemClock),
        EngineConfig::default(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(AppState::new(engine.clone(), true, None));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // Before it says where it listens, reads work and changes are refused with a way out.
    let got = json_out(&cli_async(dir.path(), &["runs", "get", &id, "-o", "json"]).await);
    assert_eq!(got["status"], "PAUSED");
    let o = cli_async(dir.path(), &["runs", "cancel", &id]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("--server"), "{}", show(&o));

    stepwise::cli::local::advertise(&db, addr).unwrap();
    let list = json_out(&cli_async(dir.path(), &["runs", "list", "-o", "json"]).await);
    assert_eq!(list[0]["id"], id.as_str());
    let hooks = json_out(&cli_async(dir.path(), &["runs", "hooks", &id, "-o", "json"]).await);
    assert!(
        hooks[0]["resumeUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{addr}/v1/hooks/hk_")),
        "{hooks}"
    );
    let o = cli_async(
        dir.path(),
        &[
            "runs", "resume", &id, "--step", "review", "--input", "approve",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stderr(&o).contains(&format!("sent to the server at http://{addr}")),
        "{}",
        show(&o)
    );
    let done = engine
        .wait_for("ws_default", &id, std::time::Duration::from_secs(10), |s| {
            s.is_terminal()
        })
        .await
        .unwrap();
    assert_eq!(done.status.as_str(), "COMPLETED");
    engine.shutdown().await;
    drop(lock);

    // The server is gone: its address is stale and changes run here again.
    let o = cli_async(dir.path(), &["runs", "retry", &id]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("CONFLICT"), "{}", show(&o));
    assert!(!stderr(&o).contains("sent to the server"), "{}", show(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn stepwise_run_commits_the_steps_it_recovers_before_exiting() {
    use std::sync::Arc;
    use std::time::Duration;

    use stepwise::clock::SystemClock;
    use stepwise::engine::{CreateRun, Engine, EngineConfig};
    use stepwise::store::{DEFAULT_WORKSPACE, SqliteStore, Synchronous};

    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stepwise.db");
    // A run whose HTTP step is in flight when its engine stops: it is left resumable.
    let engine = Engine::start(
        Arc::new(SqliteStore::open(&db, Synchronous::Full).unwrap()),
        Arc::new(SystemClock),
        EngineConfig::default(),
    )
    .unwrap();
    let yaml = format!(
        "id: slow\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {{method: POST, url: \"http://{}/slow/500\"}}\n",
        server.addr
    );
    engine
        .apply_definition(DEFAULT_WORKSPACE, "slow.yaml", &yaml)
        .await
        .unwrap()
        .unwrap();
    let (run, _) = engine
        .create_run(CreateRun {
            workspace_id: DEFAULT_WORKSPACE.into(),
            definition: "slow".into(),
            input: json!({}),
            idempotency_key: None,
            trigger: json!({"kind": "api", "label": "API"}),
        })
        .await
        .unwrap();
    while server.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.shutdown().await;
    drop(engine);

    // `stepwise run` of a quick workflow recovers it; it must not leave the call half done.
    std::fs::write(
        dir.path().join("quick.yaml"),
        "id: quick\nsteps:\n  - {id: a, type: action, uses: transform, with: {value: 1}}\n",
    )
    .unwrap();
    let o = cli_async(dir.path(), &["run", "quick.yaml"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let got = json_out(&cli_async(dir.path(), &["runs", "get", &run.id, "-o", "json"]).await);
    assert_eq!(got["status"], "COMPLETED", "{got}");
    assert_eq!(
        server.seen().len(),
        2,
        "the interrupted call is made again once"
    );
}

const ORDER: &str = "id: order\ninput: {type: object, required: [orderId], properties: {orderId: {type: string}}}\nsteps:\n  - {id: paid, type: external_event, signal: payment.confirmed, correlate: \"{{ input.orderId }}\", schema: {type: object, required: [amount]}}\n  - {id: done, type: action, uses: transform, with: {value: \"{{ steps.paid.output.amount }}\"}}\n";

#[tokio::test(flavor = "multi_thread")]
async fn signals_send_reaches_the_waiting_run_here_and_on_a_server() {
    // On the embedded store: the engine runs here until the reached run settles.
    let dir = applied(&[("order.yaml", ORDER)]).await;
    let run = json_out(
        &cli_async(
            dir.path(),
            &[
                "runs",
                "start",
                "order",
                "--input",
                r#"{"orderId": "A-1"}"#,
                "--wait",
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(run["status"], "WAITING", "{run}");
    let send = async |payload: &str| {
        let args = [
            "signals",
            "send",
            "--type",
            "payment.confirmed",
            "--correlate",
            "A-1",
            "--payload",
            payload,
        ];
        cli_async(dir.path(), &args).await
    };
    // A payload the step refuses: exit 1, the field named, nothing delivered.
    let o = send("{}").await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("amount"), "{}", show(&o));
    let o = send(r#"{"amount": 3}"#).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).contains(run["id"].as_str().unwrap()),
        "{}",
        show(&o)
    );
    let got = json_out(
        &cli_async(
            dir.path(),
            &["runs", "get", run["id"].as_str().unwrap(), "-o", "json"],
        )
        .await,
    );
    assert_eq!(got["status"], "COMPLETED", "{got}");
    assert_eq!(got["output"], json!(3));

    // Against a server, with an idempotency key: the second send delivers nothing.
    let api = crate::api::Api::start().await;
    api.apply(ORDER).await;
    let (_, started) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=5s",
            Some(json!({"definitionId": "order", "input": {"orderId": "B-2"}})),
        )
        .await;
    let id = started["data"]["id"].as_str().unwrap().to_string();
    let send = [
        "signals",
        "send",
        "--server",
        &api.base,
        "--api-key",
        &api.key,
        "--type",
        "payment.confirmed",
        "--correlate",
        "B-2",
        "--payload",
        r#"{"amount": 5}"#,
        "--idempotency-key",
        "evt-1",
        "-o",
        "json",
    ];
    let first = json_out(&cli_async(dir.path(), &send).await);
    assert_eq!(first["reached"][0]["id"], json!(id), "{first}");
    assert_eq!(first["duplicate"], false);
    let again = json_out(&cli_async(dir.path(), &send).await);
    assert_eq!(again["duplicate"], true, "{again}");
    let done = api
        .env
        .engine
        .wait_for("ws_default", &id, std::time::Duration::from_secs(10), |s| {
            s.is_terminal()
        })
        .await
        .unwrap();
    assert_eq!(done.output, Some(json!(5)));
    assert_eq!(api.env.engine.store().signals(&id).unwrap().len(), 1);
}
