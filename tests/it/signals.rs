//! Correlated signals over real HTTP: a webhook reaches exactly the run waiting for its
//! order, early signals wait in the buffer, signal-with-start starts one run however many
//! deliveries race.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stepwise::api::{AppState, router};
use stepwise::clock::ManualClock;
use stepwise::engine::{CreateRun, Engine};
use stepwise::model::RunStatus;
use stepwise::store::{DEFAULT_WORKSPACE, RunQuery, RunRecord};
use stepwise::triggers::Triggers;

use crate::engine::config;
use crate::server::TestServer;
use crate::triggers::{add, start_engine};

pub const ORDER: &str = r#"
id: order
input:
  type: object
  required: [orderId]
  properties:
    orderId: {type: string}
steps:
  - id: paid
    type: external_event
    signal: payment.confirmed
    correlate: "{{ input.orderId }}"
    buffer: 10m
    schema:
      type: object
      required: [amount]
      properties:
        amount: {type: number}
  - id: done
    type: action
    uses: transform
    with: {value: {amount: "{{ steps.paid.output.amount }}"}}
"#;

pub struct Api {
    _dir: tempfile::TempDir,
    pub clock: ManualClock,
    pub engine: Engine,
    pub triggers: Arc<Triggers>,
    pub base: String,
    pub http: reqwest::Client,
    _server: TestServer,
}

pub async fn api(definitions: &[&str]) -> Api {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new("2026-11-23T08:30:00Z".parse().unwrap());
    let engine = start_engine(&dir.path().join("t.db"), &clock, config(&server));
    for (i, d) in definitions.iter().enumerate() {
        engine
            .apply_definition(DEFAULT_WORKSPACE, &format!("d{i}.yaml"), d)
            .await
            .unwrap()
            .unwrap();
    }
    let triggers = Triggers::new(engine.clone(), DEFAULT_WORKSPACE);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(AppState::new(engine.clone(), true, None).with_triggers(triggers.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Api {
        _dir: dir,
        clock,
        engine,
        triggers,
        base,
        http: reqwest::Client::new(),
        _server: server,
    }
}

impl Api {
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn start(&self, definition: &str, input: Value) -> RunRecord {
        self.engine
            .create_run(CreateRun {
                workspace_id: DEFAULT_WORKSPACE.into(),
                definition: definition.into(),
                input,
                idempotency_key: None,
                trigger: json!({"kind": "api"}),
            })
            .await
            .unwrap()
            .0
    }

    pub async fn settle(&self, id: &str) -> RunRecord {
        self.engine
            .wait_for(DEFAULT_WORKSPACE, id, Duration::from_secs(10), |s| {
                s.is_terminal() || s.is_suspended()
            })
            .await
            .unwrap()
    }

    pub fn runs(&self, definition: &str) -> Vec<RunRecord> {
        let q = RunQuery {
            workspace_id: DEFAULT_WORKSPACE.into(),
            definition: Some(definition.into()),
            page: 1,
            page_size: 1000,
            ..Default::default()
        };
        self.engine.store().list_runs(&q).unwrap().0
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_reaches_exactly_the_run_waiting_for_its_order() {
    let a = api(&[ORDER]).await;
    add(
        &a.triggers,
        r#"
trigger: payments
webhook:
  endpoint: payments
  schema: {type: object, required: [orderId], properties: {orderId: {type: string}, amount: {type: number}}}
signal:
  type: payment.confirmed
  correlate: "{{ event.body.orderId }}"
  payload: {amount: "{{ event.body.amount }}"}
"#,
    );
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(
            a.start("order", json!({"orderId": format!("o-{i}")}))
                .await
                .id,
        );
    }
    for id in &ids {
        assert_eq!(a.settle(id).await.status, RunStatus::Waiting);
    }

    let (status, body) = a
        .post(
            "/v1/webhooks/payments",
            json!({"orderId": "o-42", "amount": 12.5}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let reached = body["data"]["signal"]["reached"].as_array().unwrap();
    assert_eq!(reached.len(), 1, "{body}");
    assert_eq!(reached[0]["id"], json!(ids[42]));
    assert!(body["data"].get("runId").is_none(), "no run was started");

    let done = a
        .engine
        .wait_for(DEFAULT_WORKSPACE, &ids[42], Duration::from_secs(10), |s| {
            s.is_terminal()
        })
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(json!({"amount": 12.5})));
    for (i, id) in ids.iter().enumerate() {
        if i != 42 {
            let r = a.engine.run(DEFAULT_WORKSPACE, id).await.unwrap();
            assert_eq!(r.status, RunStatus::Waiting, "run {i} was not addressed");
        }
    }
    assert_eq!(a.runs("order").len(), 100, "the signal started nothing");

    // The same order again: its run no longer waits, so nothing is reached; the step
    // buffers, so the signal is kept for a run that reaches it later.
    let (status, body) = a
        .post(
            "/v1/webhooks/payments",
            json!({"orderId": "o-42", "amount": 1}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["signal"]["reached"], json!([]));
    assert_eq!(body["data"]["signal"]["buffered"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_signals_route_validates_and_reaches_by_correlation() {
    let a = api(&[ORDER]).await;
    let r1 = a.start("order", json!({"orderId": "A"})).await;
    let r2 = a.start("order", json!({"orderId": "A"})).await;
    let other = a.start("order", json!({"orderId": "B"})).await;
    for r in [&r1, &r2, &other] {
        a.settle(&r.id).await;
    }
    // A payload the step's schema refuses: 400, and no run moves.
    let (status, body) = a
        .post(
            "/v1/signals",
            json!({"signalType": "payment.confirmed", "correlate": "A", "payload": {"amount": "ten"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(body["error"]["details"]["field"], "payload");
    for r in [&r1, &r2] {
        let now = a.engine.run(DEFAULT_WORKSPACE, &r.id).await.unwrap();
        assert_eq!(now.status, RunStatus::Waiting);
    }
    for (body, field) in [
        (json!({"correlate": "A"}), "signalType"),
        (json!({"signalType": "payment.confirmed"}), "correlate"),
        (
            json!({"signalType": "payment.confirmed", "correlate": ""}),
            "correlate",
        ),
        (
            json!({"signalType": "bad type!", "correlate": "A"}),
            "signalType",
        ),
        (
            json!({"signalType": "x", "correlate": "A", "payload": [1]}),
            "payload",
        ),
    ] {
        let (status, out) = a.post("/v1/signals", body.clone()).await;
        assert_eq!(status, 400, "{body} → {out}");
        assert_eq!(out["error"]["details"]["field"], field, "{out}");
    }
    let (status, _) = a
        .post(
            "/v1/signals",
            json!({"signalType": "x", "correlate": "A", "extra": 1}),
        )
        .await;
    assert_eq!(status, 400, "unknown fields are refused");

    // Both runs waiting for order A are reached; B is not.
    let (status, body) = a
        .post(
            "/v1/signals",
            json!({"signalType": "payment.confirmed", "correlate": "A", "payload": {"amount": 3}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut reached: Vec<&str> = body["data"]["reached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    reached.sort();
    let mut want = vec![r1.id.as_str(), r2.id.as_str()];
    want.sort();
    assert_eq!(reached, want);
    assert_eq!(body["data"]["buffered"], false);
    let b = a.engine.run(DEFAULT_WORKSPACE, &other.id).await.unwrap();
    assert_eq!(b.status, RunStatus::Waiting);
    // Another signal type with B's value reaches nothing and, since no step buffers that
    // type, is not kept.
    let (status, body) = a
        .post(
            "/v1/signals",
            json!({"signalType": "refund.issued", "correlate": "B"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["reached"], json!([]));
    assert_eq!(body["data"]["buffered"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_early_signal_is_buffered_and_consumed_when_the_step_starts() {
    let a = api(&[ORDER]).await;
    let (status, body) = a
        .post(
            "/v1/signals",
            json!({"signalType": "payment.confirmed", "correlate": "early", "payload": {"amount": 7}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["reached"], json!([]));
    assert_eq!(body["data"]["buffered"], true);

    let run = a.start("order", json!({"orderId": "early"})).await;
    let done = a
        .engine
        .wait_for(DEFAULT_WORKSPACE, &run.id, Duration::from_secs(10), |s| {
            s.is_terminal()
        })
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Completed, "it never waited");
    assert_eq!(done.output, Some(json!({"amount": 7})));
    let signals = a.engine.store().signals(&run.id).unwrap();
    assert_eq!(signals.len(), 1);
    assert!(signals[0].via.starts_with("buffer"), "{:?}", signals[0]);

    // Consumed once: the next run for the same order waits.
    let second = a.start("order", json!({"orderId": "early"})).await;
    assert_eq!(a.settle(&second.id).await.status, RunStatus::Waiting);

    // A signal older than the step's `buffer: 10m` is not taken.
    let (_, body) = a
        .post(
            "/v1/signals",
            json!({"signalType": "payment.confirmed", "correlate": "late", "payload": {"amount": 1}}),
        )
        .await;
    assert_eq!(body["data"]["buffered"], true);
    a.clock.advance(Duration::from_secs(11 * 60));
    let late = a.start("order", json!({"orderId": "late"})).await;
    assert_eq!(a.settle(&late.id).await.status, RunStatus::Waiting);
}

#[tokio::test(flavor = "multi_thread")]
async fn signal_with_start_starts_one_run_under_20_concurrent_deliveries() {
    let a = api(&[ORDER]).await;
    add(
        &a.triggers,
        r#"
trigger: checkout
workflow: order
webhook:
  endpoint: checkout
transform: {orderId: "{{ event.body.orderId }}"}
signal:
  type: payment.confirmed
  correlate: "{{ event.body.orderId }}"
  payload: {amount: "{{ event.body.amount }}"}
  start_if_none: true
"#,
    );
    let a = Arc::new(a);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let a = a.clone();
        tasks.spawn(async move {
            a.post(
                "/v1/webhooks/checkout",
                json!({"orderId": "o-1", "amount": 5}),
            )
            .await
        });
    }
    let mut run_ids = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let (status, body) = r.unwrap();
        assert!(status == 200 || status == 202, "{status} {body}");
        if let Some(id) = body["data"]["runId"].as_str() {
            run_ids.insert(id.to_string());
        }
        for r in body["data"]["signal"]["reached"].as_array().unwrap() {
            run_ids.insert(r["id"].as_str().unwrap().to_string());
        }
    }
    let runs = a.runs("order");
    assert_eq!(runs.len(), 1, "exactly one run: {runs:#?}");
    assert_eq!(run_ids.len(), 1, "every delivery names that run");
    let done = a
        .engine
        .wait_for(
            DEFAULT_WORKSPACE,
            &runs[0].id,
            Duration::from_secs(10),
            |s| s.is_terminal(),
        )
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Completed, "the run took a signal");
    assert_eq!(done.output, Some(json!({"amount": 5})));
    assert_eq!(
        a.engine.store().signals(&runs[0].id).unwrap().len(),
        1,
        "its step completed once"
    );
}

/// Two steps in a row wait for the same signal and order: a delivery that came twice would
/// complete both.
const TWICE: &str = r#"
id: twice
input:
  type: object
  required: [orderId]
  properties:
    orderId: {type: string}
steps:
  - id: first
    type: external_event
    signal: payment.confirmed
    correlate: "{{ input.orderId }}"
  - id: second
    type: external_event
    signal: payment.confirmed
    correlate: "{{ input.orderId }}"
    needs: [first]
"#;

async fn waiting_at(a: &Api, id: &str) -> Option<String> {
    let r = a.settle(id).await;
    r.pending_action
        .and_then(|p| p["step"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_webhook_signal_is_delivered_once() {
    let a = api(&[TWICE]).await;
    add(
        &a.triggers,
        r#"
trigger: by-header
webhook:
  endpoint: by-header
  idempotency: {header: X-Delivery-Id}
signal:
  type: payment.confirmed
  correlate: "{{ event.body.orderId }}"
"#,
    );
    add(
        &a.triggers,
        r#"
trigger: by-body
webhook:
  endpoint: by-body
signal:
  type: payment.confirmed
  correlate: "{{ event.body.orderId }}"
"#,
    );
    let run = a.start("twice", json!({"orderId": "o-7"})).await;
    assert_eq!(waiting_at(&a, &run.id).await.as_deref(), Some("first"));
    let post = async |endpoint: &str, delivery: &str, body: Value| {
        let r = a
            .http
            .post(format!("{}/v1/webhooks/{endpoint}", a.base))
            .header("x-delivery-id", delivery)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };

    // By the delivery id the trigger names: the same id with another body is the same
    // delivery; a new id is a new one.
    let (status, body) = post("by-header", "d-1", json!({"orderId": "o-7", "n": 1})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["signal"]["duplicate"], false);
    assert_eq!(waiting_at(&a, &run.id).await.as_deref(), Some("second"));
    let (status, body) = post("by-header", "d-1", json!({"orderId": "o-7", "n": 2})).await;
    assert_eq!(status, 200, "a redelivery accepts nothing new: {body}");
    assert_eq!(body["data"]["signal"]["duplicate"], true, "{body}");
    assert_eq!(body["data"]["signal"]["reached"][0]["id"], json!(run.id));
    assert_eq!(waiting_at(&a, &run.id).await.as_deref(), Some("second"));

    // Without an id: the same body is the same delivery.
    let same = json!({"orderId": "o-7", "event": "evt_1"});
    let (status, body) = post("by-body", "ignored-1", same.clone()).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post("by-body", "ignored-2", same).await;
    assert_eq!(
        (status, &body["data"]["signal"]["duplicate"]),
        (200, &json!(true)),
        "{body}"
    );
    let done = a.settle(&run.id).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(a.engine.store().signals(&run.id).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn signal_with_start_redelivered_starts_one_run_and_delivers_once() {
    let a = api(&[TWICE]).await;
    add(
        &a.triggers,
        r#"
trigger: checkout
workflow: twice
webhook:
  endpoint: checkout
  idempotency: {field: /id}
transform: {orderId: "{{ event.body.orderId }}"}
signal:
  type: payment.confirmed
  correlate: "{{ event.body.orderId }}"
  start_if_none: true
"#,
    );
    let event = json!({"id": "evt_9", "orderId": "o-9"});
    let (status, body) = a.post("/v1/webhooks/checkout", event.clone()).await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["data"]["runId"].as_str().unwrap().to_string();
    assert_eq!(waiting_at(&a, &run_id).await.as_deref(), Some("second"));
    // The provider sends the event again: no second run, and `second` still waits.
    let (status, body) = a.post("/v1/webhooks/checkout", event).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["runId"], json!(run_id));
    assert_eq!(body["data"]["signal"]["duplicate"], true);
    assert_eq!(waiting_at(&a, &run_id).await.as_deref(), Some("second"));
    assert_eq!(a.runs("twice").len(), 1);
    assert_eq!(a.engine.store().signals(&run_id).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_sent_again_with_its_idempotency_key_is_delivered_once() {
    let a = api(&[TWICE]).await;
    let run = a.start("twice", json!({"orderId": "K"})).await;
    a.settle(&run.id).await;
    let send =
        json!({"signalType": "payment.confirmed", "correlate": "K", "idempotencyKey": "evt-1"});
    let (status, first) = a.post("/v1/signals", send.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"]["duplicate"], false);
    let (status, again) = a.post("/v1/signals", send).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["duplicate"], true);
    assert_eq!(again["data"]["reached"][0]["id"], json!(run.id));
    assert_eq!(waiting_at(&a, &run.id).await.as_deref(), Some("second"));
    let (status, out) = a
        .post(
            "/v1/signals",
            json!({"signalType": "payment.confirmed", "correlate": "K", "idempotencyKey": 5}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(out["error"]["details"]["field"], "idempotencyKey");
}
