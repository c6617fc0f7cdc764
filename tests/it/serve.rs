//! The real `stepwise serve` binary, driven by the CLI client and plain HTTP.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{repo, show};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &std::path::Path, extra: &[&str]) -> Server {
    serve_env(dir, extra, &[])
}

/// `serve` with extra environment variables, and without any `STEPWISE_SECRET_*` or proxy
/// settings of the environment the tests run in.
pub fn serve_env(dir: &std::path::Path, extra: &[&str], envs: &[(&str, &str)]) -> Server {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stepwise"));
    cmd.args(["serve", "--addr", &addr, "--db"])
        .arg(dir.join("server.db"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        let upper = k.to_ascii_uppercase();
        if upper.starts_with("STEPWISE_SECRET_") || upper.ends_with("_PROXY") {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(envs.iter().copied());
    let child = cmd.spawn().unwrap();
    let url = format!("http://{addr}");
    let started = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, url }
}

fn cli(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stepwise"));
    c.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("STEPWISE_SERVER")
        .env_remove("STEPWISE_API_KEY");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn cli_client_drives_a_server_with_an_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let key_out = cli(
        dir.path(),
        &[
            "keys",
            "create",
            "--workspace",
            "team-a",
            "--db",
            db.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(key_out.status.code(), Some(0), "{}", show(&key_out));
    let key = String::from_utf8(key_out.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(key.starts_with("stw_"));
    let server = serve(dir.path(), &[]);
    let env = [
        ("STEPWISE_SERVER", server.url.as_str()),
        ("STEPWISE_API_KEY", key.as_str()),
    ];

    let examples = repo().join("examples/payment-onboarding.yaml");
    let o = cli(
        dir.path(),
        &["definitions", "apply", examples.to_str().unwrap()],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let bad = repo().join("tests/lint/broken/cycle.yaml");
    let o = cli(
        dir.path(),
        &["definitions", "apply", bad.to_str().unwrap()],
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stepwise::definition::cycle"),
        "{}",
        show(&o)
    );

    let o = cli(
        dir.path(),
        &[
            "runs",
            "start",
            "payment-onboarding",
            "--input",
            "{\"companyName\": 1}",
            "-o",
            "json",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("VALIDATION_ERROR"),
        "{}",
        show(&o)
    );

    let o = cli(
        dir.path(),
        &[
            "runs",
            "start",
            "payment-onboarding",
            "--input",
            "{\"companyName\": \"Acme\", \"contactEmail\": \"a@acme.com\"}",
            "--idempotency-key",
            "k1",
            "-o",
            "json",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let run: Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = run["id"].as_str().unwrap().to_string();

    let o = cli(
        dir.path(),
        &["runs", "list", "--definition", "payment-onboarding"],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&id));
    let o = cli(
        dir.path(),
        &["runs", "get", &id, "--include", "steps,trace", "-o", "yaml"],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("trace:"),
        "{}",
        show(&o)
    );
    let o = cli(
        dir.path(),
        &[
            "runs", "resume", &id, "--step", "nope", "--input", "approve",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = cli(dir.path(), &["runs", "cancel", &id], &env);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = cli(dir.path(), &["runs", "cancel", &id], &env);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("CONFLICT"));
    let o = cli(dir.path(), &["runs", "retry", &id], &env);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = cli(
        dir.path(),
        &["runs", "get", &id],
        &[
            ("STEPWISE_SERVER", server.url.as_str()),
            ("STEPWISE_API_KEY", "stw_bad"),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("AUTH_ERROR"));
}

#[test]
fn serve_loads_definitions_refuses_insecure_on_public_addresses_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let o = cli(
        dir.path(),
        &["serve", "--insecure-no-auth", "--addr", "0.0.0.0:0"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("loopback"));

    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::copy(
        repo().join("examples/lead-router.yaml"),
        defs.join("lead-router.yaml"),
    )
    .unwrap();
    std::fs::write(defs.join("broken.yaml"), "id: broken\nsteps: []\n").unwrap();
    std::fs::copy(
        repo().join("examples/invoice-totals.yaml"),
        defs.join("invoice-totals.yaml"),
    )
    .unwrap();
    let mut server = serve(
        dir.path(),
        &[
            "--insecure-no-auth",
            "--definitions",
            defs.to_str().unwrap(),
        ],
    );
    let get = |path: &str| -> Value {
        let out = Command::new("python3")
            .args(["-c", &format!("import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('{}{path}').read().decode())", server.url)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let list = get("/v1/workflow-definitions");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["definitionId"].as_str())
        .collect();
    assert_eq!(ids, vec!["lead-router"]);
    // A new file appears and is picked up.
    std::fs::copy(
        repo().join("examples/payment-onboarding.yaml"),
        defs.join("payment.yaml"),
    )
    .unwrap();
    let started = Instant::now();
    loop {
        let list = get("/v1/workflow-definitions");
        if list["data"].as_array().is_some_and(|a| a.len() == 2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "new definition was not loaded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(server.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains("WARNING"), "{stderr}");
    // A workflow with script steps is skipped in one line, not reported as broken.
    assert!(
        stderr.contains("skipped ") && stderr.contains("invoice-totals.yaml: it has script steps"),
        "{stderr}"
    );
    assert!(!stderr.contains("script::not_allowed"), "{stderr}");
}

/// A GET over plain HTTP/1.0 (the server is on loopback); the body as JSON.
fn get_json(base: &str, path: &str) -> Value {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return Value::Null;
    };
    let _ = write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null)
}

fn trigger_names(server: &Server) -> Vec<String> {
    get_json(&server.url, "/v1/triggers")["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Wait (up to 10 s) until the server lists exactly these triggers.
fn wait_for_triggers(server: &Server, want: &[&str], why: &str) {
    let started = Instant::now();
    loop {
        let names = trigger_names(server);
        if names == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{why}: the server lists {names:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn webhook_file(name: &str, endpoint: &str) -> String {
    format!("trigger: {name}\nworkflow: echo\nwebhook: {{endpoint: {endpoint}}}\n")
}

#[test]
fn the_loaded_triggers_are_what_the_folder_declares_now() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(
        defs.join("echo.yaml"),
        "id: echo\nsteps:\n  - {id: e, type: action, uses: transform, with: {value: 1}}\n",
    )
    .unwrap();
    std::fs::write(defs.join("a.yaml"), webhook_file("first", "one")).unwrap();
    let server = serve(
        dir.path(),
        &[
            "--insecure-no-auth",
            "--definitions",
            defs.to_str().unwrap(),
        ],
    );
    wait_for_triggers(&server, &["first"], "at start");

    // The file now names its trigger differently (same endpoint): the old one goes.
    std::fs::write(defs.join("a.yaml"), webhook_file("second", "one")).unwrap();
    wait_for_triggers(&server, &["second"], "after renaming the trigger");

    // Renamed file, edited trigger.
    std::fs::rename(defs.join("a.yaml"), defs.join("b.yaml")).unwrap();
    std::fs::write(defs.join("b.yaml"), webhook_file("third", "three")).unwrap();
    wait_for_triggers(&server, &["third"], "after renaming the file");

    // Two files declare `third`: removing one leaves the other's.
    std::fs::write(defs.join("c.yaml"), webhook_file("third", "three")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::remove_file(defs.join("b.yaml")).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    wait_for_triggers(&server, &["third"], "while c.yaml still declares it");

    // A trigger file that becomes a workflow stops being a trigger.
    std::fs::write(
        defs.join("c.yaml"),
        "id: other\nsteps:\n  - {id: e, type: action, uses: transform, with: {value: 1}}\n",
    )
    .unwrap();
    wait_for_triggers(&server, &[], "after c.yaml became a workflow");
}

#[test]
fn the_examples_started_by_default_stay_on_the_machine() {
    // Every outside request goes through this "proxy", which only counts connections.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let connections = connections.clone();
        std::thread::spawn(move || {
            for conn in proxy.incoming() {
                connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let examples = repo().join("examples");
    let server = serve_env(
        dir.path(),
        &[
            "--insecure-no-auth",
            "--definitions",
            examples.to_str().unwrap(),
        ],
        &[
            ("HTTPS_PROXY", &proxy_url),
            ("HTTP_PROXY", &proxy_url),
            ("ALL_PROXY", &proxy_url),
        ],
    );
    let started = Instant::now();
    let triggers = loop {
        let list = get_json(&server.url, "/v1/triggers");
        if list["data"].as_array().is_some_and(|a| a.len() >= 4) {
            break list["data"].as_array().cloned().unwrap_or_default();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the example triggers were not loaded: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Triggers are checked every second; a poll fires as soon as it is seen.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "an example trigger reached out of the machine"
    );
    for t in &triggers {
        assert!(
            t["kind"] == "webhook" || t["enabled"] == false,
            "{t} would fire on its own"
        );
        assert!(
            t["inactive"]
                .as_str()
                .is_some_and(|why| why.contains("STEPWISE_SECRET_")),
            "{t} does not say why it is inactive"
        );
    }
}

#[test]
fn secrets_stay_out_of_the_servers_log() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    // Port 1 on loopback refuses the connection: the error quotes the URL with the secret.
    std::fs::write(
        defs.join("leaky.yaml"),
        "id: leaky\nsteps:\n  - id: say\n    type: action\n    uses: log\n    with: {level: warn, message: \"token is {{ secrets.TOKEN }}\"}\n  - id: call\n    type: action\n    uses: http\n    with: {url: \"http://127.0.0.1:1/x?key={{ secrets.TOKEN }}\"}\n",
    )
    .unwrap();
    let mut server = serve_env(
        dir.path(),
        &[
            "--insecure-no-auth",
            "--definitions",
            defs.to_str().unwrap(),
        ],
        &[
            ("STEPWISE_SECRET_TOKEN", "tok-secret-77"),
            ("RUST_LOG", "debug"),
        ],
    );
    let started = Instant::now();
    while get_json(&server.url, "/v1/workflow-definitions")["data"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(started.elapsed() < Duration::from_secs(10), "not loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cli(
        dir.path(),
        &[
            "runs",
            "start",
            "leaky",
            "--wait",
            "-o",
            "json",
            "--server",
            &server.url,
        ],
        &[],
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(run["status"], "FAILED", "{}", show(&out));
    let _ = server.child.kill();
    let mut stderr = String::new();
    std::io::Read::read_to_string(server.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("token is ***"), "{stderr}");
    assert!(!stderr.contains("tok-secret-77"), "{stderr}");
}

/// Boolean flags set through the environment take 1/0, true/false, yes/no, on/off; empty
/// is false; anything else stops the command with an error naming the flag.
#[tokio::test(flavor = "multi_thread")]
async fn boolean_environment_flags_take_the_usual_words() {
    let dir = tempfile::tempdir().unwrap();
    async fn status(dir: &std::path::Path, env: (&str, &str), path: &str) -> u16 {
        let server = serve_env(dir, &[], &[env]);
        let url = format!("{}{path}", server.url);
        let http =
            stepwise::http_client::build(&stepwise::http_client::ClientOptions::default()).unwrap();
        http.get(&url).send().await.unwrap().status().as_u16()
    }
    for (v, public) in [
        ("1", true),
        ("on", true),
        ("TRUE", true),
        ("yes", true),
        ("0", false),
        ("off", false),
        ("no", false),
        ("", false),
    ] {
        let code = status(dir.path(), ("STEPWISE_METRICS_PUBLIC", v), "/metrics").await;
        assert_eq!(code == 200, public, "STEPWISE_METRICS_PUBLIC={v:?}: {code}");
    }
    let runs = "/v1/workflow-runs";
    assert_eq!(
        status(dir.path(), ("STEPWISE_INSECURE_NO_AUTH", "yes"), runs).await,
        200
    );
    assert_eq!(
        status(dir.path(), ("STEPWISE_INSECURE_NO_AUTH", "false"), runs).await,
        401
    );
    let out = Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args(["serve", "--addr", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("server.db"))
        .env("STEPWISE_ALLOW_SCRIPTS", "maybe")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'maybe' for '--allow-scripts")
            && stderr.contains("expected 1/0, true/false, yes/no or on/off"),
        "{stderr}"
    );
}
