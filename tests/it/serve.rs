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

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &std::path::Path, extra: &[&str]) -> Server {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args(["serve", "--addr", &addr, "--db"])
        .arg(dir.join("server.db"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
}
