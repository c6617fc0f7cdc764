//! The executors' other side: an http endpoint and an OpenAI-compatible chat endpoint on
//! 127.0.0.1 that count every call per `{run}:{step}` and answer as the run input says
//! (`ok`, `slow`, `flaky`, `fail`).
//!
//! When watching a store it also checks, at the moment a call arrives, that the step's start
//! is durable: its latest record must say RUNNING (or CANCELLED, when a cancel raced the call).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use stepwise::model::StepStatus;
use stepwise::store::Store;

#[derive(Default)]
struct Inner {
    hits: HashMap<String, u32>,
    /// Calls that arrived before the step's start was committed.
    early: Vec<String>,
    watch: Option<Arc<dyn Store>>,
}

#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct FaultServer {
    pub addr: SocketAddr,
    shared: Shared,
}

impl FaultServer {
    pub async fn start() -> FaultServer {
        let shared = Shared::default();
        let app = axum::Router::new()
            .route("/fault/{mode}", post(fault))
            .route("/v1/chat/completions", post(chat))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultServer { addr, shared }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Check each arriving call against this store (`None`: stop checking).
    pub fn watch(&self, store: Option<Arc<dyn Store>>) {
        self.shared.lock().watch = store;
    }

    /// Calls so far for `{run}:{step}`.
    pub fn hits(&self, key: &str) -> u32 {
        self.shared.lock().hits.get(key).copied().unwrap_or(0)
    }

    /// Calls that came before their step's start was committed, since the last call.
    pub fn take_early(&self) -> Vec<String> {
        std::mem::take(&mut self.shared.lock().early)
    }
}

/// Count the call, check its start was committed, and say whether it should fail.
fn arrive(s: &Shared, key: &str, mode: &str) -> bool {
    let (count, watch) = {
        let mut inner = s.lock();
        let count = inner.hits.entry(key.to_string()).or_insert(0);
        *count += 1;
        (*count, inner.watch.clone())
    };
    if let (Some(store), Some((run, step))) = (watch, key.split_once(':')) {
        let records: Vec<_> = store
            .steps(run)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.step_id == step)
            .collect();
        let latest = records.iter().max_by_key(|r| r.attempt).cloned();
        // A call of an attempt cancelled in flight can still arrive after a run retry wrote
        // the next attempt (PENDING): the request left before the cancel. The key does not
        // say which attempt a call is for, so that case is allowed.
        let late_cancelled = |r: &stepwise::store::StepRecord| {
            r.status == StepStatus::Pending
                && records
                    .iter()
                    .any(|p| p.attempt == r.attempt - 1 && p.status == StepStatus::Cancelled)
        };
        let durable = latest.as_ref().is_some_and(|r| {
            matches!(r.status, StepStatus::Running | StepStatus::Cancelled) || late_cancelled(r)
        });
        if !durable {
            let seen = latest.map_or("no record".to_string(), |r| {
                format!("attempt {} {}", r.attempt, r.status)
            });
            s.lock().early.push(format!(
                "call {count} for {key} arrived while its latest record was: {seen}"
            ));
        }
    }
    match mode {
        "fail" => true,
        "flaky" => count == 1,
        _ => false,
    }
}

async fn pause(mode: &str) {
    if mode == "slow" {
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

async fn fault(
    State(s): State<Shared>,
    Path(mode): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let fail = arrive(&s, &key, &mode);
    pause(&mode).await;
    if fail {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "injected"})),
        )
    } else {
        (StatusCode::OK, Json(json!({"ok": true, "key": key})))
    }
}

/// The prompt is `{run}|{step}|{mode}`.
async fn chat(State(s): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let prompt = body
        .pointer("/messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut parts = prompt.splitn(3, '|');
    let (run, step, mode) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let key = format!("{run}:{step}");
    let fail = arrive(&s, &key, mode);
    pause(mode).await;
    if fail {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": "injected"}})),
        );
    }
    (
        StatusCode::OK,
        Json(json!({
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "model": "fault-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("answer for {key}")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        })),
    )
}
