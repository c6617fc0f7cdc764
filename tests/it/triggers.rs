//! Triggers and history: webhooks with signatures and redeliveries, schedules across a
//! restart on an injected clock, polls over several rounds, trace contents, retention, OTLP.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use stepwise::api::{AppState, router};
use stepwise::clock::{Clock, ManualClock};
use stepwise::diagnostics::SourceFile;
use stepwise::engine::{Engine, EngineConfig};
use stepwise::model::RunStatus;
use stepwise::store::{DEFAULT_WORKSPACE, RunQuery, SqliteStore, Synchronous};
use stepwise::triggers::{Trigger, Triggers};

use crate::api::add_key;
use crate::engine::config;
use crate::server::TestServer;

pub const TARGET: &str = r#"
id: target
input:
  type: object
  properties:
    name: {type: string}
    at: {type: string}
    ticket: {type: integer}
steps:
  - id: echo
    type: action
    uses: transform
    with: {value: "{{ input }}"}
"#;

pub fn trigger(yaml: &str) -> Trigger {
    let l = stepwise::validate::lint(&SourceFile::new("t.yaml", yaml));
    l.trigger.unwrap_or_else(|| panic!("{:#?}", l.diagnostics))
}

pub struct Setup {
    _dir: tempfile::TempDir,
    pub db: std::path::PathBuf,
    pub clock: ManualClock,
    pub engine: Engine,
    pub triggers: Arc<Triggers>,
    pub server: TestServer,
}

pub fn start_engine(db: &std::path::Path, clock: &ManualClock, cfg: EngineConfig) -> Engine {
    let store = SqliteStore::open(db, Synchronous::Full).unwrap();
    Engine::start(Arc::new(store), Arc::new(clock.clone()), cfg).unwrap()
}

pub async fn setup() -> Setup {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let clock = ManualClock::new("2026-11-23T08:30:00Z".parse().unwrap());
    let mut cfg = config(&server);
    cfg.secrets
        .insert("HOOK_SECRET".into(), "s3cret-value".into());
    let engine = start_engine(&db, &clock, cfg);
    engine
        .apply_definition(DEFAULT_WORKSPACE, "target.yaml", TARGET)
        .await
        .unwrap()
        .unwrap();
    let triggers = Triggers::new(engine.clone(), DEFAULT_WORKSPACE);
    Setup {
        _dir: dir,
        db,
        clock,
        engine,
        triggers,
        server,
    }
}

pub fn add(t: &Triggers, yaml: &str) {
    t.set(trigger(yaml)).unwrap();
}

pub async fn tick(t: &Arc<Triggers>) {
    let failed = t.tick().await;
    assert!(failed.is_empty(), "{failed:?}");
}

pub fn runs(engine: &Engine) -> Vec<stepwise::store::RunRecord> {
    engine
        .store()
        .list_runs(&RunQuery {
            workspace_id: DEFAULT_WORKSPACE.into(),
            page: 1,
            page_size: 1000,
            ..Default::default()
        })
        .unwrap()
        .0
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_check_signatures_schemas_and_redeliveries() {
    let s = setup().await;
    add(
        &s.triggers,
        r#"
trigger: signup
workflow: target
webhook:
  endpoint: signup
  schema: {type: object, required: [name], properties: {name: {type: string}}}
  signature: {secret: "{{ secrets.HOOK_SECRET }}"}
  idempotency: {header: X-Delivery-Id}
transform: {name: "{{ event.body.name | upper }}"}
"#,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app =
        router(AppState::new(s.engine.clone(), false, None).with_triggers(s.triggers.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/webhooks/signup");
    let body = br#"{"name": "ada", "email": "ada@example.com"}"#.to_vec();
    let post = |sig: Option<String>, delivery: &str, body: Vec<u8>| {
        let mut r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-delivery-id", delivery)
            .body(body);
        if let Some(sig) = sig {
            r = r.header("x-signature", sig);
        }
        r.send()
    };

    let bad = post(Some(sign("wrong", &body)), "d1", body.clone())
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let b: Value = bad.json().await.unwrap();
    assert_eq!(b["error"]["code"], "AUTH_ERROR");
    let missing = post(None, "d1", body.clone()).await.unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    let invalid = br#"{"email": "x"}"#.to_vec();
    let r = post(Some(sign("s3cret-value", &invalid)), "d0", invalid)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(
        runs(&s.engine).is_empty(),
        "refused deliveries start nothing"
    );

    let good = post(Some(sign("s3cret-value", &body)), "d1", body.clone())
        .await
        .unwrap();
    assert_eq!(good.status().as_u16(), 202);
    let first: Value = good.json().await.unwrap();
    let again = post(Some(sign("s3cret-value", &body)), "d1", body.clone())
        .await
        .unwrap();
    assert_eq!(
        again.status().as_u16(),
        200,
        "a redelivery is answered, not run again"
    );
    let second: Value = again.json().await.unwrap();
    assert_eq!(first["data"]["runId"], second["data"]["runId"]);
    let all = runs(&s.engine);
    assert_eq!(all.len(), 1);
    let run = &all[0];
    assert_eq!(run.input, json!({"name": "ADA"}));
    assert_eq!(run.trigger["kind"], "webhook");
    assert_eq!(run.trigger["label"], "webhook signup");
    assert_eq!(run.trigger["event"]["body"]["email"], "ada@example.com");
    assert!(
        run.trigger["event"]["headers"].get("x-signature").is_none(),
        "the signature is not kept"
    );
    let r = http
        .post(format!("{base}/v1/webhooks/nothing"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // /metrics: three refused deliveries, one firing and one redelivery that found its run.
    let text = s.engine.metrics().render(&Default::default(), 0, true);
    assert!(
        text.contains("stepwise_trigger_errors_total{trigger=\"signup\",kind=\"webhook\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("stepwise_trigger_firings_total{trigger=\"signup\",kind=\"webhook\"} 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_fire_once_per_due_time_across_a_restart() {
    let mut s = setup().await;
    let hourly = r#"
trigger: hourly
workflow: target
schedule: {cron: "0 * * * *", timezone: Europe/Berlin}
transform: {at: "{{ event.scheduledAt }}"}
"#;
    add(&s.triggers, hourly);
    tick(&s.triggers).await; // first sight: next due 09:00Z, nothing fires
    assert!(runs(&s.engine).is_empty());
    s.clock.advance(Duration::from_secs(30 * 60)); // 09:00:00Z
    tick(&s.triggers).await;
    tick(&s.triggers).await;
    let r = runs(&s.engine);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].input["at"], "2026-11-23T09:00:00Z");
    assert_eq!(r[0].trigger["scheduledAt"], "2026-11-23T09:00:00Z");

    // Restart: a new engine and trigger runner on the same database, same due times.
    s.engine.shutdown().await;
    s.engine = start_engine(&s.db, &s.clock, config(&s.server));
    s.triggers = Triggers::new(s.engine.clone(), DEFAULT_WORKSPACE);
    add(&s.triggers, hourly);
    tick(&s.triggers).await;
    assert_eq!(runs(&s.engine).len(), 1, "no double firing after a restart");
    s.clock.advance(Duration::from_secs(3600)); // 10:00Z
    tick(&s.triggers).await;
    let r = runs(&s.engine);
    assert_eq!(r.len(), 2);
    let mut ats: Vec<String> = r
        .iter()
        .map(|r| r.input["at"].as_str().unwrap().to_string())
        .collect();
    ats.sort();
    assert_eq!(ats, vec!["2026-11-23T09:00:00Z", "2026-11-23T10:00:00Z"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn missed_firings_are_skipped_or_run_once() {
    let s = setup().await;
    add(
        &s.triggers,
        "trigger: skipper\nworkflow: target\nschedule: {every: 1h}\n",
    );
    add(
        &s.triggers,
        "trigger: catcher\nworkflow: target\nschedule: {every: 1h, missed: run_once}\n",
    );
    tick(&s.triggers).await;
    // The server is "down" for five hours: no ticks.
    s.clock.advance(Duration::from_secs(5 * 3600 + 120));
    tick(&s.triggers).await;
    let r = runs(&s.engine);
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0].trigger["name"], "catcher");
    assert_eq!(r[0].input["scheduledAt"], "2026-11-23T13:30:00Z");
    let state = s
        .engine
        .store()
        .trigger_state(DEFAULT_WORKSPACE, "skipper")
        .unwrap()
        .unwrap();
    assert_eq!(state["missed"], 5);
    assert_eq!(state["nextDue"], "2026-11-23T14:30:00Z");
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_start_one_run_per_new_item() {
    let s = setup().await;
    let feed = s.server.url("/feed");
    add(
        &s.triggers,
        &format!(
            "trigger: tickets\nworkflow: target\npoll:\n  url: \"{feed}?after={{{{ cursor or 0 }}}}\"\n  interval: 1m\n  items: /tickets\n  key: \"{{{{ item.id }}}}\"\n  cursor: \"{{{{ items | map(attribute='id') | max if items else cursor }}}}\"\ntransform: {{ticket: \"{{{{ event.item.id }}}}\"}}\n"
        ),
    );
    *s.server.shared.feed.lock().unwrap() = vec![json!({"id": 1}), json!({"id": 2})];
    tick(&s.triggers).await;
    assert_eq!(runs(&s.engine).len(), 2);
    tick(&s.triggers).await; // not due yet: no request
    assert_eq!(
        s.server
            .seen()
            .iter()
            .filter(|r| r.path.starts_with("/feed"))
            .count(),
        1
    );
    s.server.shared.feed.lock().unwrap().push(json!({"id": 3}));
    s.clock.advance(Duration::from_secs(61));
    tick(&s.triggers).await;
    s.clock.advance(Duration::from_secs(61));
    tick(&s.triggers).await;
    let r = runs(&s.engine);
    assert_eq!(r.len(), 3, "items already seen start nothing");
    let mut tickets: Vec<i64> = r
        .iter()
        .map(|r| r.input["ticket"].as_i64().unwrap())
        .collect();
    tickets.sort();
    assert_eq!(tickets, vec![1, 2, 3]);
    let polls: Vec<String> = s
        .server
        .seen()
        .iter()
        .filter(|r| r.path.starts_with("/feed"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        polls,
        vec!["/feed?after=0", "/feed?after=2", "/feed?after=3"]
    );
    let state = s
        .engine
        .store()
        .trigger_state(DEFAULT_WORKSPACE, "tickets")
        .unwrap()
        .unwrap();
    assert_eq!(state["cursor"], 3);
    assert_eq!(r[0].trigger["label"], "poll tickets");
}

#[tokio::test(flavor = "multi_thread")]
async fn history_shows_attempts_hooks_usage_and_the_trace() {
    let api = crate::api::Api::start().await;
    api.env.server.answer_llm(&["all good"]);
    let (s, _) = api
        .apply(
            r#"
id: traced
steps:
  - id: flaky
    type: action
    uses: http
    retry: {max_attempts: 2, initial_delay: 10ms}
    with: {url: "{server}/flaky/1"}
  - id: think
    type: agent
    prompt: "Summarise"
  - id: confirm
    type: external_event
    signal: done
"#,
        )
        .await;
    assert_eq!(s, 201);
    let (_, run) = api
        .call(
            "POST",
            "/v1/workflow-runs?wait=10s",
            Some(json!({"definitionId": "traced"})),
        )
        .await;
    let id = run["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(run["data"]["status"], "WAITING", "{run}");
    let (_, hooks) = api
        .call("GET", &format!("/v1/workflow-runs/{id}/hooks"), None)
        .await;
    let url = hooks["data"][0]["resumeUrl"].as_str().unwrap().to_string();
    let r = api
        .http
        .post(&url)
        .json(&json!({"ok": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let (_, got) = api
        .call(
            "GET",
            &format!("/v1/workflow-runs/{id}?wait=10s&include=trigger,steps,trace,usage"),
            None,
        )
        .await;
    let d = &got["data"];
    assert_eq!(d["status"], "COMPLETED", "{got}");
    let flaky = &d["steps"][0];
    let attempts: Vec<&str> = flaky["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(attempts, vec!["FAILED", "COMPLETED"]);
    assert!(
        flaky["attempts"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("503")
    );
    assert!(flaky["attempts"][0]["durationMs"].is_number());
    assert_eq!(d["usage"]["models"]["test-model"]["totalTokens"], 17);
    assert_eq!(d["trigger"]["label"], "API");
    assert!(d["actor"].as_str().unwrap().starts_with("key:stw_"));
    assert!(d["queueMs"].is_number() && d["durationMs"].is_number());
    let kinds: Vec<&str> = d["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "run.created",
        "run.started",
        "step.started",
        "step.retrying",
        "step.completed",
        "step.waiting",
        "signal.received",
        "hook.resumed",
        "run.completed",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let (_, hist) = api
        .call("GET", "/v1/history?kind=workflow&status=completed", None)
        .await;
    assert_eq!(hist["meta"]["total"], 1);
    assert_eq!(hist["data"][0]["trigger"]["label"], "API");
    let (s, b) = api.call("GET", "/v1/history?kind=agent", None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("VALIDATION_ERROR"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_only_old_finished_runs() {
    let s = setup().await;
    s.engine
        .apply_definition(
            DEFAULT_WORKSPACE,
            "w.yaml",
            "id: waiter\nsteps:\n  - {id: w, type: external_event, signal: go}\n",
        )
        .await
        .unwrap()
        .unwrap();
    let start = |def: &'static str| {
        let e = s.engine.clone();
        async move {
            let (r, _) = e
                .create_run(stepwise::engine::CreateRun {
                    workspace_id: DEFAULT_WORKSPACE.into(),
                    definition: def.into(),
                    input: json!({}),
                    idempotency_key: None,
                    trigger: json!({"kind": "api"}),
                })
                .await
                .unwrap();
            e.wait_for(DEFAULT_WORKSPACE, &r.id, Duration::from_secs(10), |st| {
                st.is_terminal() || st.is_suspended()
            })
            .await
            .unwrap()
        }
    };
    let old_done = start("target").await;
    let old_waiting = start("waiter").await;
    assert_eq!(
        (old_done.status, old_waiting.status),
        (RunStatus::Completed, RunStatus::Waiting)
    );
    s.clock.advance(Duration::from_secs(10 * 86_400));
    let recent = start("target").await;
    let n = stepwise::history::sweep(&s.engine, Duration::from_secs(5 * 86_400)).await;
    assert_eq!(n, 1);
    let store = s.engine.store();
    assert!(store.run(&old_done.id).unwrap().is_none());
    assert!(store.steps(&old_done.id).unwrap().is_empty());
    assert!(store.events(&old_done.id).unwrap().is_empty());
    assert!(
        store.run(&old_waiting.id).unwrap().is_some(),
        "waiting runs are never deleted"
    );
    assert!(store.run(&recent.id).unwrap().is_some());
    let _ = s.clock.now();
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_runs_are_exported_as_otlp_spans() {
    let env = crate::engine::Env::new().await;
    stepwise::otlp::spawn_exporter(env.engine.clone(), env.server.url(""));
    let def = env.apply(TARGET).await;
    let run = env.start(&def, json!({"name": "x"})).await;
    env.finish(&run.id).await;
    let mut body = None;
    for _ in 0..100 {
        if let Some(b) = env.server.shared.traces.lock().unwrap().first().cloned() {
            body = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = body.expect("no OTLP export arrived");
    let spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["name"], "run target");
    assert_eq!(spans[1]["name"], "step echo");
    assert_eq!(spans[1]["parentSpanId"], spans[0]["spanId"]);
    assert_eq!(spans[0]["traceId"].as_str().unwrap().len(), 32);
    let _ = add_key;
}

/// Two processes on one Postgres store: a poll is fired by one of them, and by the other
/// once the first stops. Needs Postgres (`STEPWISE_TEST_POSTGRES`).
#[tokio::test(flavor = "multi_thread")]
async fn on_a_shared_store_one_process_fires_each_poll() {
    use stepwise::store::test_backends::{self, Schemas};
    use stepwise::store::{PgOptions, PgStore};

    if !test_backends::postgres_enabled() {
        return;
    }
    let _schemas = Schemas;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = test_backends::open_postgres(&dir.path().join("t")).unwrap();
    let mut opts = PgOptions::new(&test_backends::postgres_url().unwrap_or_default());
    opts.schema = first.schema().map(str::to_string);
    opts.pool_size = 4;
    let second = PgStore::open(&opts).unwrap();
    let clock = ManualClock::new("2026-11-23T08:30:00Z".parse().unwrap());
    let start = |store: PgStore| {
        Engine::start(Arc::new(store), Arc::new(clock.clone()), config(&server)).unwrap()
    };
    let (a, b) = (start(first), start(second));
    a.apply_definition(DEFAULT_WORKSPACE, "target.yaml", TARGET)
        .await
        .unwrap()
        .unwrap();
    let feed = server.url("/feed");
    let yaml = format!(
        "trigger: tickets\nworkflow: target\npoll:\n  url: \"{feed}?after={{{{ cursor or 0 }}}}\"\n  interval: 1m\n  items: /tickets\n  key: \"{{{{ item.id }}}}\"\n  cursor: \"{{{{ items | map(attribute='id') | max if items else cursor }}}}\"\ntransform: {{ticket: \"{{{{ event.item.id }}}}\"}}\n"
    );
    let (ta, tb) = (
        Triggers::new(a.clone(), DEFAULT_WORKSPACE),
        Triggers::new(b.clone(), DEFAULT_WORKSPACE),
    );
    add(&ta, &yaml);
    add(&tb, &yaml);
    *server.shared.feed.lock().unwrap() = vec![json!({"id": 1})];
    let polls = || {
        server
            .seen()
            .iter()
            .filter(|r| r.path.starts_with("/feed"))
            .count()
    };
    tick(&ta).await;
    assert_eq!(polls(), 1);
    // Due again, but the first process holds the trigger: the second does not poll.
    clock.advance(Duration::from_secs(61));
    tick(&tb).await;
    assert_eq!(polls(), 1, "polled by both processes");
    tick(&ta).await;
    assert_eq!(polls(), 2);
    // The first process stops (and lets go): the second takes the trigger over.
    a.shutdown().await;
    clock.advance(Duration::from_secs(61));
    tick(&tb).await;
    assert_eq!(polls(), 3);
    assert_eq!(runs(&b).len(), 1, "one run per item across both processes");
    b.shutdown().await;
}
