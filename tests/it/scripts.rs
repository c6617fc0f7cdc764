//! Script steps and run workspaces: output, env and stdin, failures and retries, limits,
//! the process group on timeout, durability across a restart, the bubblewrap sandbox
//! (files and network), the workspace sweep, and a real server without --allow-scripts.
//!
//! Tests that need bubblewrap print that they skipped when it is not usable here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use stepwise::engine::{EngineConfig, Resume};
use stepwise::exec::sandbox::Sandbox;
use stepwise::model::{RunStatus, StepStatus};
use stepwise::store::DEFAULT_WORKSPACE;

use crate::engine::{Env, config};
use crate::server::TestServer;

fn script_config(server: &TestServer, root: &Path, sandbox: Sandbox) -> EngineConfig {
    let mut c = config(server);
    c.scripts.allowed = true;
    c.scripts.sandbox = sandbox;
    c.workspaces.root = Some(root.to_path_buf());
    c
}

/// bubblewrap when it works here; otherwise `None`, having said that the test skipped.
fn bwrap(test: &str) -> Option<Sandbox> {
    let s = Sandbox::default();
    match s.check() {
        Ok(_) => Some(s),
        Err(e) => {
            eprintln!("skipped {test}: bubblewrap is not usable here: {e}");
            None
        }
    }
}

/// A throwaway root for workspaces, and an engine whose scripts run in `sandbox`.
async fn env_with(sandbox: Sandbox) -> (Env, tempfile::TempDir) {
    let roots = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let cfg = script_config(&server, &roots.path().join("ws"), sandbox);
    (Env::with(server, cfg).await, roots)
}

fn workspace_of(roots: &tempfile::TempDir, run_id: &str) -> PathBuf {
    roots.path().join("ws").join(run_id)
}

const HELLO: &str = r#"
id: hello
workspace: true
input:
  type: object
  properties:
    name: {type: string}
    items: {type: array}
steps:
  - id: echo
    type: script
    env:
      NAME: "{{ input.name }}"
      COUNT: "{{ input['items'] | length }}"
    with:
      items: "{{ input['items'] }}"
      greeting: "hello {{ input.name }}"
    run: |
      cat > input.json
      printf '{"name": "%s", "count": %s, "ws": "%s", "run": "%s", "stdin": %s}' \
        "$NAME" "$COUNT" "$STEPWISE_WORKSPACE" "$STEPWISE_RUN_ID" "$(cat input.json)"
  - id: text
    type: script
    command: [cat, input.json]
  - id: plain
    type: script
    run: echo "no JSON here"; echo
"#;

async fn hello_runs(sandbox: Sandbox, inner_workspace: Option<&str>) {
    let (env, roots) = env_with(sandbox).await;
    let def = env.apply(HELLO).await;
    let run = env
        .start(&def, json!({"name": "Ada", "items": [1, 2, 3]}))
        .await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let steps = env.steps(&run.id);
    let out = steps[0].output.clone().unwrap();
    let ws = workspace_of(&roots, &run.id);
    let expected_ws = inner_workspace.map_or_else(|| ws.display().to_string(), str::to_string);
    assert_eq!(
        out,
        json!({
            "name": "Ada",
            "count": 3,
            "ws": expected_ws,
            "run": run.id,
            "stdin": {"items": [1, 2, 3], "greeting": "hello Ada"},
        })
    );
    // The step's recorded input is what it read on stdin.
    assert_eq!(
        steps[0].input,
        Some(json!({"items": [1, 2, 3], "greeting": "hello Ada"}))
    );
    // The next step sees the file the first one left: the workspace is shared.
    assert_eq!(
        steps[1].output,
        Some(json!({"items": [1, 2, 3], "greeting": "hello Ada"}))
    );
    assert_eq!(steps[2].output, Some(json!("no JSON here")));
    assert!(ws.join("input.json").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconfined_script_gets_env_and_stdin_and_its_stdout_is_the_output() {
    hello_runs(Sandbox::Unconfined, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confined_script_gets_env_and_stdin_and_its_stdout_is_the_output() {
    let Some(sandbox) = bwrap("a_confined_script_gets_env_and_stdin") else {
        return;
    };
    hello_runs(sandbox, Some("/workspace")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_servers_environment_does_not_reach_a_script() {
    let (env, _roots) = env_with(Sandbox::Unconfined).await;
    let def = env
        .apply(
            r#"
id: envcheck
workspace: true
steps:
  - id: dump
    type: script
    env: {MINE: "yes"}
    command: [env]
"#,
        )
        .await;
    let run = env.start(&def, json!({})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let out = env.steps(&run.id)[0].output.clone().unwrap();
    let text = out.as_str().unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    let mut names = names;
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "HOME",
            "LANG",
            "MINE",
            "PATH",
            "PWD",
            "STEPWISE_ATTEMPT",
            "STEPWISE_RUN_ID",
            "STEPWISE_STEP_ID",
            "STEPWISE_WORKSPACE"
        ],
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_script_fails_the_attempt_with_its_stderr_and_is_retried() {
    let (env, _roots) = env_with(Sandbox::Unconfined).await;
    let def = env
        .apply(
            r#"
id: flaky
workspace: true
steps:
  - id: once
    type: script
    retry: {max_attempts: 3, initial_delay: 10ms, backoff: fixed}
    run: |
      n=$(cat count 2>/dev/null || echo 0)
      n=$((n + 1))
      echo $n > count
      if [ "$n" -lt 2 ]; then echo "not yet ($n)" >&2; exit 7; fi
      echo "{\"attempt\": $STEPWISE_ATTEMPT}"
  - id: never
    type: script
    retry: {max_attempts: 2, initial_delay: 10ms}
    run: echo "broken for good" >&2; false
"#,
        )
        .await;
    let run = env.start(&def, json!({})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let steps = env.steps(&run.id);
    let once: Vec<_> = steps.iter().filter(|s| s.step_id == "once").collect();
    assert_eq!(once.len(), 2, "{once:?}");
    assert_eq!(once[0].status, StepStatus::Failed);
    let e = once[0].error.clone().unwrap();
    assert_eq!(e["kind"], "script_exit");
    assert_eq!(
        e["message"], "the script exited with status 7: not yet (1)",
        "{e}"
    );
    assert_eq!(e["details"]["exitCode"], 7);
    assert_eq!(once[1].output, Some(json!({"attempt": 2})));
    let never: Vec<_> = steps.iter().filter(|s| s.step_id == "never").collect();
    assert_eq!(never.len(), 2);
    let err = run.error.unwrap();
    assert_eq!(err["step"], "never");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .ends_with("status 1: broken for good"),
        "{err}"
    );
}

/// Whether a process whose command line contains `marker` is alive.
fn process_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
    })
}

/// Wait until a process of the script marked `marker` runs (`true`) or none does.
async fn until_running(marker: &str, running: bool, what: &str) {
    let within = Duration::from_secs(if running { 10 } else { 5 });
    let started = std::time::Instant::now();
    while process_with(&format!("sleep {marker}")) != running {
        assert!(started.elapsed() < within, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn timeout_kills_the_group(sandbox: Sandbox, marker: &str) {
    let (env, _roots) = env_with(sandbox).await;
    let yaml = format!(
        r#"
id: slow
workspace: true
steps:
  - id: hang
    type: script
    timeout: 1s
    run: |
      sleep {marker} &
      sh -c 'sleep {marker}' &
      echo started >&2
      sleep {marker}
"#
    );
    let def = env.apply(&yaml).await;
    let run = env.start(&def, json!({})).await;
    until_running(marker, true, "the script never started").await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Failed);
    let err = run.error.unwrap();
    assert_eq!(err["kind"], "timeout", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("its process group was killed"),
        "{err}"
    );
    assert_eq!(err["details"]["stderr"], "started");
    // Every process of the script is gone, the ones it started in the background too.
    until_running(
        marker,
        false,
        "a process of the script outlived its timeout",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_kills_the_whole_process_group() {
    timeout_kills_the_group(Sandbox::Unconfined, "4242.1701").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_kills_every_process_of_a_confined_script() {
    let Some(sandbox) = bwrap("a_timeout_kills_every_process_of_a_confined_script") else {
        return;
    };
    timeout_kills_the_group(sandbox, "4242.1702").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_run_kills_its_running_script() {
    let (env, _roots) = env_with(Sandbox::Unconfined).await;
    let marker = "4242.1703";
    let def = env
        .apply(&format!(
            "id: cancelled\nworkspace: true\nsteps:\n  - id: hang\n    type: script\n    run: |\n      sleep {marker} &\n      sleep {marker}\n"
        ))
        .await;
    let run = env.start(&def, json!({})).await;
    until_running(marker, true, "the script never started").await;
    env.engine.cancel(DEFAULT_WORKSPACE, &run.id).await.unwrap();
    assert_eq!(env.finish(&run.id).await.status, RunStatus::Cancelled);
    until_running(marker, false, "the script outlived its cancelled run").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_and_memory_limits_fail_the_attempt() {
    let (env, _roots) = env_with(Sandbox::Unconfined).await;
    // Each in a workflow of its own: a failed step cancels the rest of its run.
    let cases = [
        (
            "max_output_bytes: 1000\n    command: [\"yes\"]",
            "output_too_large",
            "more than 1000 bytes",
        ),
        (
            "memory_mb: 64\n    command: [bash, -c, 'x=$(head -c 200000000 /dev/zero | tr \"\\0\" a); echo ${#x}']",
            "script_exit",
            "cannot allocate",
        ),
        (
            "output: {type: object, required: [n]}\n    run: |\n      echo '{\"m\": 1}'",
            "script_output",
            "does not satisfy the step's output schema",
        ),
    ];
    for (i, (step, kind, message)) in cases.iter().enumerate() {
        let yaml = format!(
            "id: limit-{i}\nworkspace: true\nsteps:\n  - id: s\n    type: script\n    {step}\n"
        );
        let def = env.apply(&yaml).await;
        let run = env.start(&def, json!({})).await;
        let run = env.finish(&run.id).await;
        assert_eq!(run.status, RunStatus::Failed, "{yaml}");
        let err = run.error.unwrap();
        assert_eq!(err["kind"], *kind, "{yaml}\n{err}");
        assert!(
            err["message"].as_str().unwrap().contains(message),
            "{yaml}\n{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_script_is_not_run_again_after_a_restart() {
    let (mut env, roots) = env_with(Sandbox::Unconfined).await;
    let def = env
        .apply(
            r#"
id: durable
workspace: true
steps:
  - id: append
    type: script
    run: echo ran >> log.txt
  - id: ok
    type: approval
    message: go on?
    options: [yes]
  - id: count
    type: script
    run: wc -l < log.txt
"#,
        )
        .await;
    let run = env.start(&def, json!({})).await;
    let run = env.settle(&run.id).await;
    assert_eq!(run.status, RunStatus::Paused);
    let cfg = script_config(&env.server, &roots.path().join("ws"), Sandbox::Unconfined);
    env.restart(cfg).await;
    env.engine
        .resume(
            DEFAULT_WORKSPACE,
            &run.id,
            Resume::Approval {
                step: "ok".into(),
                input: json!("yes"),
            },
            "test",
        )
        .await
        .unwrap();
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confined_script_writes_only_its_workspace() {
    let Some(sandbox) = bwrap("a_confined_script_writes_only_its_workspace") else {
        return;
    };
    let (env, roots) = env_with(sandbox).await;
    let outside = roots.path().join("outside.txt");
    let marker = format!("/etc/stepwise-test-{}", uuid::Uuid::now_v7().simple());
    let yaml = format!(
        r#"
id: escape
workspace: true
steps:
  - id: try
    type: script
    env:
      OUTSIDE: "{outside}"
      ROOTS: "{roots}"
    run: |
      result() {{ if "$@" 2>/dev/null; then echo wrote; else echo refused; fi; }}
      a=$(result sh -c 'echo x > "$OUTSIDE"')
      b=$(result sh -c 'echo x > {marker}')
      c=$(result sh -c 'echo x > /usr/stepwise-test')
      d=$(result sh -c 'echo x > /workspace/inside.txt')
      e=$(result sh -c 'echo x > /tmp/scratch.txt')
      f=$(result ls "$ROOTS")
      ln -s /etc/hostname leak
      ln -s .. up
      echo "{{\"outside\": \"$a\", \"etc\": \"$b\", \"usr\": \"$c\", \"workspace\": \"$d\", \"tmp\": \"$e\", \"roots\": \"$f\"}}"
"#,
        outside = outside.display(),
        roots = roots.path().display(),
    );
    let def = env.apply(&yaml).await;
    let run = env.start(&def, json!({})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(
        env.steps(&run.id)[0].output,
        Some(json!({
            "outside": "refused",
            "etc": "refused",
            "usr": "refused",
            "workspace": "wrote",
            "tmp": "wrote",
            "roots": "refused",
        }))
    );
    assert!(!outside.exists());
    assert!(!Path::new(&marker).exists());
    let ws = workspace_of(&roots, &run.id);
    assert!(ws.join("inside.txt").is_file());
    // Links a script planted are never followed by the workspace file operations.
    use stepwise::workspace::files::{self, FileError};
    assert!(matches!(
        files::read(&ws, "leak", 1000),
        Err(FileError::Symlink { .. })
    ));
    assert!(matches!(
        files::read(&ws, "up/outside.txt", 1000),
        Err(FileError::Symlink { .. })
    ));
    assert!(matches!(
        files::write(&ws, "up/evil.txt", b"x", 1000),
        Err(FileError::Symlink { .. })
    ));
    assert!(!roots.path().join("ws/evil.txt").exists());
    assert_eq!(files::read(&ws, "inside.txt", 1000).unwrap(), b"x\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confined_script_reaches_the_network_only_when_the_step_says_so() {
    let Some(sandbox) = bwrap("a_confined_script_reaches_the_network_only_when_the_step_says_so")
    else {
        return;
    };
    // A listener on the host's loopback: reachable from the host, and from a script only
    // with `network: true` (a confined script otherwise has a loopback of its own).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let (env, _roots) = env_with(sandbox).await;
    let yaml = format!(
        r#"
id: net
workspace: true
steps:
  - id: closed
    type: script
    needs: []
    env: {{PORT: "{port}"}}
    command: [bash, -c, 'if exec 3<>/dev/tcp/127.0.0.1/$PORT; then echo reached; else echo unreachable; fi']
  - id: open
    type: script
    needs: []
    network: true
    env: {{PORT: "{port}"}}
    command: [bash, -c, 'if exec 3<>/dev/tcp/127.0.0.1/$PORT; then echo reached; else echo unreachable; fi']
"#
    );
    let def = env.apply(&yaml).await;
    let run = env.start(&def, json!({})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let steps = env.steps(&run.id);
    let out = |id: &str| {
        steps
            .iter()
            .find(|s| s.step_id == id)
            .and_then(|s| s.output.clone())
    };
    assert_eq!(out("closed"), Some(json!("unreachable")));
    assert_eq!(out("open"), Some(json!("reached")));
    drop(listener);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_removes_workspaces_past_their_retention_and_of_unknown_runs() {
    let roots = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let mut cfg = script_config(&server, &roots.path().join("ws"), Sandbox::Unconfined);
    cfg.workspaces.retention = Duration::ZERO;
    let env = Env::with(server, cfg).await;
    let def = env
        .apply(
            r#"
id: sweep
workspace: true
steps:
  - id: touch
    type: script
    run: touch made.txt
  - id: hold
    type: approval
    message: keep?
    options: [yes]
"#,
        )
        .await;
    let waiting = env.start(&def, json!({})).await;
    let waiting = env.settle(&waiting.id).await;
    assert_eq!(waiting.status, RunStatus::Paused);
    let done = env.start(&def, json!({})).await;
    env.settle(&done.id).await;
    env.engine
        .cancel(DEFAULT_WORKSPACE, &done.id)
        .await
        .unwrap();
    let done = env.finish(&done.id).await;
    assert_eq!(done.status, RunStatus::Cancelled);
    // What a crash could leave: the workspace of a run the database does not know (and
    // a read-only directory in it), and something else, which is not the engine's.
    let orphan = roots
        .path()
        .join("ws")
        .join(stepwise::model::new_id(stepwise::model::RUN_PREFIX));
    std::fs::create_dir_all(orphan.join("locked/deep")).unwrap();
    std::fs::write(orphan.join("locked/deep/f"), "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        orphan.join("locked"),
        std::fs::Permissions::from_mode(0o500),
    )
    .unwrap();
    std::fs::write(roots.path().join("ws/README"), "not a run").unwrap();
    assert!(workspace_of(&roots, &done.id).join("made.txt").exists());
    let removed = stepwise::workspace::sweep(&env.engine).await;
    assert_eq!(removed, 2);
    assert!(!workspace_of(&roots, &done.id).exists());
    assert!(!orphan.exists());
    assert!(workspace_of(&roots, &waiting.id).join("made.txt").exists());
    assert!(roots.path().join("ws/README").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_without_allow_scripts_refuses_definitions_and_runs_with_scripts() {
    let roots = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let mut cfg = script_config(&server, &roots.path().join("ws"), Sandbox::Unconfined);
    let mut env = Env::with(server, cfg.clone()).await;
    let def = env.apply(HELLO).await;
    cfg.scripts.allowed = false;
    env.restart(cfg).await;
    let rejected = env
        .engine
        .apply_definition(
            DEFAULT_WORKSPACE,
            "hello.yaml",
            &HELLO.replace("hello", "hello2"),
        )
        .await
        .unwrap()
        .unwrap_err();
    let codes: Vec<&str> = rejected
        .diagnostics
        .iter()
        .map(|d| d.code.as_str())
        .collect();
    assert_eq!(codes, ["stepwise::script::not_allowed"; 3]);
    let e = env.create(&def, json!({}), None).await.unwrap_err();
    match e {
        stepwise::engine::EngineError::Validation { message, details } => {
            assert!(message.contains("script step (`echo`)"), "{message}");
            assert!(message.contains("--allow-scripts"), "{message}");
            assert_eq!(details["step"], "echo");
        }
        other => panic!("{other:?}"),
    }
}

/// One HTTP/1.0 request to a server on loopback: status and JSON body.
fn request(base: &str, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn a_server_without_allow_scripts_refuses_them_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let no_scripts = [("STEPWISE_ALLOW_SCRIPTS", "0")];
    // Stored while scripts were allowed (unconfined, so this runs without bubblewrap too).
    let allowed = crate::serve::serve_env(
        dir.path(),
        &[
            "--insecure-no-auth",
            "--allow-scripts",
            "--script-sandbox",
            "none",
        ],
        &[],
    );
    let (status, body) = request(
        &allowed.url,
        "POST",
        "/v1/workflow-definitions",
        "application/yaml",
        HELLO,
    );
    assert_eq!(status, 201, "{body}");
    drop(allowed);
    let server = crate::serve::serve_env(dir.path(), &["--insecure-no-auth"], &no_scripts);
    let (status, body) = request(
        &server.url,
        "POST",
        "/v1/workflow-definitions",
        "application/yaml",
        &HELLO.replace("id: hello", "id: hello-again"),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    let diags = body["error"]["details"]["diagnostics"].as_array().unwrap();
    assert!(
        diags
            .iter()
            .all(|d| d["code"] == "stepwise::script::not_allowed"),
        "{body}"
    );
    assert_eq!(diags.len(), 3, "{body}");
    let (status, body) = request(
        &server.url,
        "POST",
        "/v1/workflow-runs",
        "application/json",
        r#"{"definitionId": "hello", "input": {}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(body["error"]["details"]["step"], "echo");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--allow-scripts"),
        "{body}"
    );
}

#[test]
fn allow_scripts_with_bubblewrap_missing_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args(["worker", "--exit-when-idle", "--allow-scripts", "--db"])
        .arg(dir.path().join("w.db"))
        // No bwrap on this PATH, whatever the machine has.
        .env("PATH", dir.path())
        .env_remove("STEPWISE_SCRIPT_SANDBOX")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bubblewrap"), "{stderr}");
    assert!(stderr.contains("--script-sandbox none"), "{stderr}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args([
            "worker",
            "--exit-when-idle",
            "--allow-scripts",
            "--script-sandbox",
            "none",
            "--db",
        ])
        .arg(dir.path().join("w.db"))
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARNING: scripts run UNCONFINED"),
        "{stderr}"
    );
}

/// The example's test file with its first case running the scripts for real.
const LIVE_CASE: &str = r#"workflow: invoice-totals.yaml
tests:
  - name: the scripts total the lines
    input:
      customerId: cus_42
      currency: EUR
      lines: [{sku: A-1, quantity: 2, unitPrice: 10.5}, {sku: B-7, quantity: 1, unitPrice: 99}]
    live: [save_lines, total]
    mocks:
      post_totals: {output: {status: 201, body: {id: tot_1}}}
    expect:
      status: COMPLETED
      output: {customerId: cus_42, total: 120.0, lineCount: 2}
      steps:
        total:
          output: {total: 120.0, currency: EUR, lineCount: 2, biggestSku: B-7}
"#;

#[test]
fn stepwise_test_mocks_scripts_and_runs_live_ones_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::util::repo().join("examples/invoice-totals.yaml"),
        dir.path().join("invoice-totals.yaml"),
    )
    .unwrap();
    let test = |file: &str, text: &str, flags: &[&str]| {
        std::fs::write(dir.path().join(file), text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stepwise"))
            .arg("test")
            .arg(dir.path().join(file))
            .args(flags)
            .env("NO_COLOR", "1")
            .env_remove("STEPWISE_ALLOW_SCRIPTS")
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // Not mocked and not live: the case fails, naming the step.
    let unmocked = LIVE_CASE.replace("    live: [save_lines, total]\n", "");
    let (code, out) = test("unmocked.test.yaml", &unmocked, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("step `save_lines` (script) is not mocked"),
        "{out}"
    );
    // Live, without --allow-scripts: refused, saying how to allow it.
    let (code, out) = test("live.test.yaml", LIVE_CASE, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--allow-scripts"), "{out}");
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !python {
        eprintln!(
            "skipped the live half of stepwise_test_mocks_scripts…: python3 is not installed"
        );
        return;
    }
    let (code, out) = test(
        "live.test.yaml",
        LIVE_CASE,
        &["--allow-scripts", "--script-sandbox", "none"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 passed, 0 failed"), "{out}");
}
