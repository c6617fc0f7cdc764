//! A scripted OpenAI-compatible model on loopback: the n-th assistant turn of a
//! conversation (counted from the messages it is sent) answers with the n-th scripted
//! message, so a resumed conversation gets the same answers. It records every request.
//! `/gate` holds requests until the test opens it (a tool that is mid-flight on demand), and
//! so do the chat requests of turns the test holds (a model call in flight);
//! `/api/orders/{id}` and `/api/refunds` stand in for the shop API of the support example.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::Path;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::routing::{any, get, post};
use serde_json::{Value, json};

/// A refund the shop received: its Idempotency-Key and body.
pub type Refund = (Option<String>, Value);

#[derive(Clone, Default)]
struct Shared {
    script: Arc<Vec<Value>>,
    requests: Arc<Mutex<Vec<Value>>>,
    /// Turns (0-based) that fail once with 503 before they answer.
    fail_once: Arc<Mutex<Vec<usize>>>,
    /// Turns (0-based) whose requests wait until the gate opens (a model call in flight).
    held: Arc<Mutex<Vec<usize>>>,
    gate_open: Arc<AtomicBool>,
    gate_hits: Arc<AtomicUsize>,
    /// Bodies posted to `/api/refunds`, with their Idempotency-Key.
    refunds: Arc<Mutex<Vec<Refund>>>,
}

pub struct ScriptedModel {
    pub addr: SocketAddr,
    shared: Shared,
}

/// An assistant message that calls tools: (name, arguments) pairs.
pub fn calls(list: &[(&str, Value)]) -> Value {
    let calls: Vec<Value> = list
        .iter()
        .enumerate()
        .map(|(k, (name, args))| {
            json!({"id": format!("call_{name}_{k}"), "type": "function", "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    json!({"role": "assistant", "content": null, "tool_calls": calls})
}

/// An assistant message that answers.
pub fn answer(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

impl ScriptedModel {
    pub async fn start(script: Vec<Value>) -> ScriptedModel {
        let shared = Shared {
            script: Arc::new(script),
            ..Shared::default()
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/gate", any(gate))
            .route("/api/orders/{id}", get(order))
            .route("/api/refunds", post(refund))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ScriptedModel { addr, shared }
    }

    /// The base URL (`STEPWISE_LLM_BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn gate_url(&self) -> String {
        format!("http://{}/gate", self.addr)
    }

    /// Every chat request body, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn fail_once_at(&self, turn: usize) {
        self.shared.fail_once.lock().unwrap().push(turn);
    }

    /// Requests for `turn` wait until [`ScriptedModel::open_gate`].
    pub fn hold_at(&self, turn: usize) {
        self.shared.held.lock().unwrap().push(turn);
    }

    pub fn open_gate(&self) {
        self.shared.gate_open.store(true, Ordering::SeqCst);
    }

    pub fn gate_hits(&self) -> usize {
        self.shared.gate_hits.load(Ordering::SeqCst)
    }

    pub fn refunds(&self) -> Vec<Refund> {
        self.shared.refunds.lock().unwrap().clone()
    }
}

/// Which turn a request asks for: the assistant messages it already holds.
pub fn turn_of(request: &Value) -> usize {
    request["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "assistant").count())
}

async fn chat(State(s): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    s.requests.lock().unwrap().push(body.clone());
    let turn = turn_of(&body);
    {
        let mut fail = s.fail_once.lock().unwrap();
        if let Some(p) = fail.iter().position(|&t| t == turn) {
            fail.remove(p);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"message": "overloaded"}})),
            );
        }
    }
    let held = s.held.lock().unwrap().contains(&turn);
    while held && !s.gate_open.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let Some(message) = s.script.get(turn) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": format!("the script has no turn {turn}")}})),
        );
    };
    let finish = if message.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    (
        StatusCode::OK,
        Json(json!({
            "id": format!("chatcmpl-{turn}"),
            "object": "chat.completion",
            "model": "scripted-model",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
        })),
    )
}

async fn gate(State(s): State<Shared>) -> Json<Value> {
    s.gate_hits.fetch_add(1, Ordering::SeqCst);
    while !s.gate_open.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Json(json!({"refundId": "re_1", "status": "refunded"}))
}

async fn order(Path(id): Path<String>) -> Json<Value> {
    Json(json!({"id": id, "status": "delivered", "total": 40}))
}

async fn refund(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.refunds.lock().unwrap().push((key, body));
    (
        StatusCode::CREATED,
        Json(json!({"id": "re_1", "status": "succeeded"})),
    )
}
