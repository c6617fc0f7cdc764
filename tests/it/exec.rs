//! Executors against servers that answer too much: bodies over the limit (announced by
//! Content-Length, chunked, or announced and never sent) for http steps, agent calls and
//! polls; and how values print inside rendered strings.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use stepwise::clock::SystemClock;
use stepwise::diagnostics::SourceFile;
use stepwise::model::{RunStatus, StepStatus};
use stepwise::store::{DEFAULT_WORKSPACE, SqliteStore, Synchronous};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::{Env, config};
use crate::server::TestServer;

const MIB: usize = 1024 * 1024;

/// A raw HTTP/1.1 server, so the test controls framing. The first path segment says how to
/// answer with the body size `n` in the second (later segments are ignored):
/// `/sized/n` sends n bytes with Content-Length (`/failing/n` too, with status 500); `/chunked/n` sends n bytes chunked;
/// `/lying/n` announces n bytes, sends 10 and then stalls; `/redirect/n` redirects n times.
async fn big_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(answer(sock));
        }
    });
    addr
}

async fn answer(mut sock: tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match sock.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if sock.read_exact(&mut body).await.is_err() {
        return;
    }
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut parts = path.trim_start_matches('/').split('/');
    let how = parts.next().unwrap_or_default().to_string();
    let n: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let chunk = vec![b'a'; 64 * 1024];
    let _ = async {
        match how.as_str() {
            "redirect" => {
                let h = if n == 0 {
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_string()
                } else {
                    format!("HTTP/1.1 302 Found\r\nlocation: /redirect/{}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", n - 1)
                };
                sock.write_all(h.as_bytes()).await?;
            }
            "sized" | "failing" => {
                let status = if how == "sized" { "200 OK" } else { "500 Internal Server Error" };
                let h = format!("HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n");
                sock.write_all(h.as_bytes()).await?;
                let mut left = if head.starts_with("HEAD ") { 0 } else { n };
                while left > 0 {
                    let k = left.min(chunk.len());
                    sock.write_all(&chunk[..k]).await?;
                    left -= k;
                }
            }
            "chunked" => {
                let h = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                sock.write_all(h.as_bytes()).await?;
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    sock.write_all(format!("{k:x}\r\n").as_bytes()).await?;
                    sock.write_all(&chunk[..k]).await?;
                    sock.write_all(b"\r\n").await?;
                    left -= k;
                }
                sock.write_all(b"0\r\n\r\n").await?;
            }
            _ => {
                let h = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {n}\r\n\r\naaaaaaaaaa");
                sock.write_all(h.as_bytes()).await?;
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            }
        }
        sock.flush().await
    }
    .await;
}

async fn http_step(env: &Env, addr: SocketAddr, path: &str, extra: &str) -> (RunStatus, Value) {
    let yaml = format!(
        "id: fetch\nsteps:\n  - id: get\n    type: action\n    uses: http\n    timeout: 10s\n    with:\n      url: \"http://{addr}{path}\"\n{extra}"
    );
    let def = env.apply(&yaml).await;
    let run = env.start(&def, json!({})).await;
    let run = env.finish(&run.id).await;
    let steps = env.steps(&run.id);
    let last = steps.last().unwrap();
    let result = match run.status {
        RunStatus::Completed => last.output.clone().unwrap(),
        _ => last.error.clone().unwrap(),
    };
    (run.status, result)
}

/// A value for an assertion message: bodies here are megabytes long.
fn brief(v: &Value) -> String {
    v.to_string().chars().take(300).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_bodies_over_the_default_limit_fail_the_attempt() {
    let env = Env::new().await;
    let addr = big_server().await;
    let over = 10 * MIB + 1;
    for path in [
        format!("/sized/{over}"),
        format!("/chunked/{over}"),
        // Content-Length alone must fail it: the body never comes.
        format!("/lying/{over}"),
    ] {
        let (status, error) = http_step(&env, addr, &path, "").await;
        assert_eq!(status, RunStatus::Failed, "{path}: {}", brief(&error));
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("the response body exceeds the 10 MiB limit (max_response_bytes)"),
            "{path}: {message}"
        );
        assert_eq!(error["kind"], "response_too_large", "{path}");
    }
    // An unexpected status still decides the error; the body is not kept.
    let (status, error) = http_step(&env, addr, &format!("/failing/{over}"), "").await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(error["kind"], "http_status", "{}", brief(&error));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .ends_with("answered 500; the response body exceeds the 10 MiB limit (max_response_bytes) and was not kept"),
        "{}",
        brief(&error)
    );
    assert_eq!(error["details"]["body"], Value::Null);
    let (status, output) = http_step(&env, addr, "/chunked/1000", "").await;
    assert_eq!(status, RunStatus::Completed, "{}", brief(&output));
    assert_eq!(output["body"].as_str().unwrap().len(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_response_bytes_sets_the_limit_per_step() {
    let env = Env::new().await;
    let addr = big_server().await;
    let limit = "      max_response_bytes: 2048\n";
    for how in ["sized", "chunked"] {
        let (status, output) = http_step(&env, addr, &format!("/{how}/2048"), limit).await;
        assert_eq!(status, RunStatus::Completed, "{how}: {}", brief(&output));
        assert_eq!(output["body"].as_str().unwrap().len(), 2048);
        let (status, error) = http_step(&env, addr, &format!("/{how}/2049"), limit).await;
        assert_eq!(status, RunStatus::Failed, "{how}: {}", brief(&error));
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("exceeds the 2 KiB limit (max_response_bytes)"),
            "{how}: {}",
            brief(&error)
        );
    }
    // A template is checked when it runs.
    let (status, error) = http_step(
        &env,
        addr,
        "/sized/10",
        "      max_response_bytes: \"{{ 0 }}\"\n",
    )
    .await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(
        error["message"],
        "`max_response_bytes` must be a whole number of bytes from 1 to 1073741824, got 0"
    );
    // Far larger than the limit and chunked: the read stops at the limit.
    let (status, error) = http_step(&env, addr, &format!("/chunked/{}", 64 * MIB), limit).await;
    assert_eq!(status, RunStatus::Failed, "{}", brief(&error));
    assert_eq!(error["kind"], "response_too_large");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_request_is_not_judged_by_its_content_length() {
    let env = Env::new().await;
    let addr = big_server().await;
    let (status, output) = http_step(
        &env,
        addr,
        &format!("/sized/{}", 20 * MIB),
        "      method: HEAD\n",
    )
    .await;
    assert_eq!(status, RunStatus::Completed, "{}", brief(&output));
    assert_eq!(output["headers"]["content-length"], (20 * MIB).to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shared_client_follows_at_most_five_redirects() {
    use stepwise::http_client::{ClientOptions, build, read_body_limited};
    let addr = big_server().await;
    let client = build(&ClientOptions::default()).unwrap();
    let resp = client
        .get(format!("http://{addr}/redirect/5"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(read_body_limited(resp, 10).await.unwrap(), b"ok");
    let err = client
        .get(format!("http://{addr}/redirect/6"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_redirect(), "{err}");
}

#[test]
fn lint_checks_max_response_bytes() {
    let lint = |v: &str| {
        let yaml = format!(
            "id: x\nsteps:\n  - id: get\n    type: action\n    uses: http\n    with:\n      url: https://example.com\n      max_response_bytes: {v}\n"
        );
        stepwise::validate::lint(&SourceFile::new("x.yaml", yaml))
            .diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.code.as_str(), d.message))
            .collect::<Vec<_>>()
    };
    assert_eq!(lint("52428800"), Vec::<String>::new());
    assert_eq!(lint("\"{{ 1024 }}\""), Vec::<String>::new());
    for bad in ["0", "-1", "1.5", "10MB", "2147483648", "[1]"] {
        let d = lint(bad);
        assert_eq!(d.len(), 1, "{bad}: {d:?}");
        assert!(
            d[0].starts_with("stepwise::action::invalid_argument: `max_response_bytes` must be"),
            "{bad}: {d:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_answers_over_the_limit_fail_the_attempt() {
    let server = TestServer::start().await;
    let addr = big_server().await;
    let mut cfg = config(&server);
    cfg.llm.base_url = Some(format!("http://{addr}/chunked/{}", 10 * MIB + 1));
    let env = Env::with(server, cfg).await;
    let def = env
        .apply("id: ask\nsteps:\n  - id: ask\n    type: agent\n    prompt: hello\n")
        .await;
    let run = env.start(&def, json!({})).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Failed);
    let steps = env.steps(&run.id);
    assert_eq!(steps.len(), 1, "a body too large is not retried");
    assert_eq!(steps[0].status, StepStatus::Failed);
    let error = steps[0].error.clone().unwrap();
    assert_eq!(error["kind"], "response_too_large", "{}", brief(&error));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the response body exceeds the 10 MiB limit"),
        "{}",
        brief(&error)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_over_the_limit_record_the_error() {
    let addr = big_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), Synchronous::Full).unwrap();
    let server = TestServer::start().await;
    let engine =
        stepwise::engine::Engine::start(Arc::new(store), Arc::new(SystemClock), config(&server))
            .unwrap();
    engine
        .apply_definition(
            DEFAULT_WORKSPACE,
            "t.yaml",
            "id: target\nsteps:\n  - id: a\n    type: action\n    uses: transform\n    with: {value: 1}\n",
        )
        .await
        .unwrap()
        .unwrap();
    let triggers = stepwise::triggers::Triggers::new(engine.clone(), DEFAULT_WORKSPACE);
    let yaml = format!(
        "trigger: big\nworkflow: target\npoll:\n  url: \"http://{addr}/chunked/{}\"\n  interval: 1m\n  key: \"{{{{ item.id }}}}\"\n",
        10 * MIB + 1
    );
    let lint = stepwise::validate::lint(&SourceFile::new("t.yaml", yaml));
    triggers
        .set(
            lint.trigger
                .unwrap_or_else(|| panic!("{:#?}", lint.diagnostics)),
        )
        .unwrap();
    triggers.tick().await;
    let state = engine
        .store()
        .trigger_state(DEFAULT_WORKSPACE, "big")
        .unwrap()
        .unwrap();
    let error = state["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains("the response body exceeds the 10 MiB limit"),
        "{}",
        brief(&state)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_strings_print_booleans_and_numbers_as_json() {
    let env = Env::new().await;
    let def = env
        .apply(
            r#"
id: show
steps:
  - id: text
    type: action
    uses: transform
    with:
      value:
        line: "vip={{ input.vip }} score={{ input.score }} ratio={{ input.ratio }}"
        vip: "{{ input.vip }}"
        score: "{{ input.score }}"
"#,
        )
        .await;
    // As an API client sends it: `1e2` is a float in JSON.
    let input: Value =
        serde_json::from_str(r#"{"vip": true, "score": 1e2, "ratio": 0.5}"#).unwrap();
    let run = env.start(&def, input).await;
    let run = env.finish(&run.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let out = env.steps(&run.id)[0].output.clone().unwrap();
    assert_eq!(out["line"], "vip=true score=100 ratio=0.5");
    assert_eq!(out["vip"], json!(true));
    assert_eq!(out["score"].as_f64(), Some(100.0));
}
