//! A local HTTP server for tests: records every request, answers by route.
//! `/echo` answers 200 with what it got; `/flaky/{n}` fails with 503 the first n times per
//! Idempotency-Key; `/hold-first` never answers the first request per Idempotency-Key (until
//! its client goes away) and answers 200 after; `/status/{code}` answers that code; `/v1/chat/completions` is a scripted
//! OpenAI-compatible endpoint.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{any, post};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub idempotency_key: Option<String>,
    /// A failure alert's `Stepwise-Alert-Attempt`.
    pub attempt: Option<String>,
    pub body: Value,
    /// Microseconds since the epoch, when the request arrived.
    pub at: i64,
}

#[derive(Clone, Default)]
pub struct Shared {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    failures: Arc<Mutex<HashMap<String, u32>>>,
    /// Answers the chat endpoint gives, in order; the last one repeats.
    pub llm_answers: Arc<Mutex<VecDeque<String>>>,
    /// What `/feed` lists (for poll triggers).
    pub feed: Arc<Mutex<Vec<Value>>>,
    /// Bodies posted to `/v1/traces` (OTLP).
    pub traces: Arc<Mutex<Vec<Value>>>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub shared: Shared,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let shared = Shared::default();
        let app = axum::Router::new()
            .route("/echo", any(echo))
            .route("/flaky/{n}", any(flaky))
            .route("/hold-first", any(hold_first))
            .route("/status/{code}", any(status))
            .route("/slow/{ms}", any(slow))
            .route("/v1/chat/completions", post(chat))
            .route("/feed", any(feed))
            .route("/v1/traces", post(traces))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer { addr, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn answer_llm(&self, answers: &[&str]) {
        let mut q = self.shared.llm_answers.lock().unwrap();
        q.clear();
        q.extend(answers.iter().map(|s| s.to_string()));
    }
}

fn record(s: &Shared, path: String, headers: &HeaderMap, body: &[u8]) -> Seen {
    let seen = Seen {
        path,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        attempt: headers
            .get("stepwise-alert-attempt")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
        at: jiff::Timestamp::now().as_microsecond(),
    };
    s.seen.lock().unwrap().push(seen.clone());
    seen
}

async fn echo(
    State(s): State<Shared>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let seen = record(&s, "/echo".into(), &headers, &body);
    // POST creates, as the APIs the examples call do.
    let status = if method == axum::http::Method::POST {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // `id` and `url` make it stand in for the example workflows' APIs too.
    (
        status,
        Json(
            json!({"ok": true, "got": seen.body, "key": seen.idempotency_key, "id": "obj_123", "url": "https://pay.example/obj_123"}),
        ),
    )
}

async fn flaky(
    State(s): State<Shared>,
    Path(n): Path<u32>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let seen = record(&s, format!("/flaky/{n}"), &headers, &body);
    let key = seen.idempotency_key.unwrap_or_default();
    let mut f = s.failures.lock().unwrap();
    let count = f.entry(key).or_insert(0);
    *count += 1;
    if *count <= n {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "try again"})),
        )
    } else {
        (StatusCode::OK, Json(json!({"ok": true, "calls": *count})))
    }
}

async fn hold_first(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Json<Value> {
    let seen = record(&s, "/hold-first".into(), &headers, &body);
    let first = {
        let mut f = s.failures.lock().unwrap();
        let count = f
            .entry(format!("hold:{}", seen.idempotency_key.unwrap_or_default()))
            .or_insert(0);
        *count += 1;
        *count == 1
    };
    if first {
        std::future::pending::<()>().await;
    }
    Json(json!({"ok": true}))
}

async fn slow(
    State(s): State<Shared>,
    Path(ms): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Json<Value> {
    let seen = record(&s, format!("/slow/{ms}"), &headers, &body);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    Json(json!({"ok": true, "got": seen.body}))
}

async fn feed(State(s): State<Shared>, headers: HeaderMap, uri: axum::http::Uri) -> Json<Value> {
    record(
        &s,
        format!("/feed?{}", uri.query().unwrap_or_default()),
        &headers,
        b"",
    );
    Json(json!({"tickets": s.feed.lock().unwrap().clone()}))
}

async fn traces(State(s): State<Shared>, body: axum::body::Bytes) -> StatusCode {
    s.traces
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    StatusCode::OK
}

async fn status(
    State(s): State<Shared>,
    Path(code): Path<u16>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    record(&s, format!("/status/{code}"), &headers, &body);
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        Json(json!({"code": code})),
    )
}

async fn chat(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Json<Value> {
    record(&s, "/v1/chat/completions".into(), &headers, &body);
    let answer = {
        let mut q = s.llm_answers.lock().unwrap();
        if q.len() > 1 {
            q.pop_front().unwrap_or_default()
        } else {
            q.front().cloned().unwrap_or_default()
        }
    };
    Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    }))
}
