//! Triggers under faults: a poll item the workflow refuses, a restart while schedules are
//! due, replayed webhook deliveries, triggers whose secrets are not set.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use stepwise::api::{AppState, router};
use stepwise::clock::Clock;
use stepwise::diagnostics::SourceFile;
use stepwise::store::DEFAULT_WORKSPACE;
use stepwise::triggers::Triggers;

use crate::engine::config;
use crate::triggers::{Setup, add, runs, setup, start_engine, tick, trigger};

/// Serve the API (with the triggers) on a loopback port; returns its base URL.
async fn serve_api(s: &Setup) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app =
        router(AppState::new(s.engine.clone(), false, None).with_triggers(s.triggers.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

fn state(s: &Setup, name: &str) -> Value {
    s.engine
        .store()
        .trigger_state(DEFAULT_WORKSPACE, name)
        .unwrap()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poll_skips_an_item_the_workflow_refuses_and_goes_on() {
    let s = setup().await;
    let feed = s.server.url("/feed");
    // `ticket` must be an integer: the item with id "x" is refused by the workflow's schema.
    add(
        &s.triggers,
        &format!(
            "trigger: tickets\nworkflow: target\npoll:\n  url: \"{feed}?after={{{{ cursor or 0 }}}}\"\n  interval: 1m\n  items: /tickets\n  key: \"{{{{ item.id }}}}\"\n  cursor: \"{{{{ items | map(attribute='seq') | max if items else cursor }}}}\"\ntransform: {{ticket: \"{{{{ event.item.id }}}}\"}}\n"
        ),
    );
    *s.server.shared.feed.lock().unwrap() = vec![
        json!({"id": 1, "seq": 1}),
        json!({"id": "x", "seq": 2}),
        json!({"id": 3, "seq": 3}),
    ];
    tick(&s.triggers).await;
    let mut tickets: Vec<i64> = runs(&s.engine)
        .iter()
        .map(|r| r.input["ticket"].as_i64().unwrap())
        .collect();
    tickets.sort();
    assert_eq!(
        tickets,
        vec![1, 3],
        "the good items after the bad one start"
    );
    let st = state(&s, "tickets");
    assert_eq!(
        st["cursor"], 3,
        "the cursor moves past the skipped item: {st}"
    );
    assert_eq!(st["lastStarted"], 2);
    let err = st["lastError"].as_str().unwrap_or_default();
    assert!(err.contains("`x`") && err.contains("input schema"), "{st}");
    assert_eq!(st["skipped"][0]["key"], "x", "{st}");
    assert!(
        st["skipped"][0]["error"]
            .as_str()
            .unwrap()
            .contains("integer")
    );

    // GET /v1/triggers shows why.
    let base = serve_api(&s).await;
    let key = crate::api::add_key(s.engine.store().as_ref(), DEFAULT_WORKSPACE);
    let listed: Value = reqwest::Client::new()
        .get(format!("{base}/v1/triggers"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["state"]["skipped"][0]["key"], "x");
    assert!(listed["data"][0]["state"]["lastError"].is_string());

    // The source keeps returning the refused item: it is not tried again, new items start.
    s.server
        .shared
        .feed
        .lock()
        .unwrap()
        .push(json!({"id": 4, "seq": 4}));
    s.clock.advance(Duration::from_secs(61));
    tick(&s.triggers).await;
    assert_eq!(runs(&s.engine).len(), 3);
    let st = state(&s, "tickets");
    assert_eq!(st["cursor"], 4);
    assert_eq!(st["lastStarted"], 1);
    assert!(
        st.get("lastError").is_none(),
        "a skipped item is not retried: {st}"
    );
    assert_eq!(st["skipped"].as_array().unwrap().len(), 1, "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poll_whose_workflow_is_missing_fails_and_keeps_its_cursor() {
    let s = setup().await;
    let feed = s.server.url("/feed");
    add(
        &s.triggers,
        &format!(
            "trigger: orphan\nworkflow: nowhere\npoll:\n  url: \"{feed}\"\n  interval: 1m\n  items: /tickets\n  key: \"{{{{ item.id }}}}\"\n  cursor: \"{{{{ items | map(attribute='id') | max if items else cursor }}}}\"\n"
        ),
    );
    *s.server.shared.feed.lock().unwrap() = vec![json!({"id": 1}), json!({"id": 2})];
    tick(&s.triggers).await;
    let st = state(&s, "orphan");
    assert!(
        st["lastError"].as_str().unwrap().contains("nowhere"),
        "{st}"
    );
    assert_eq!(
        st["cursor"],
        Value::Null,
        "no item is lost to a trigger-wide error"
    );
    assert!(st.get("skipped").is_none(), "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_due_while_the_server_was_down_runs_after_a_short_restart() {
    let mut s = setup().await;
    let every = "trigger: every5\nworkflow: target\nschedule: {every: 5s}\ntransform: {at: \"{{ event.scheduledAt }}\"}\n";
    add(&s.triggers, every);
    tick(&s.triggers).await; // first sight at 08:30:00: next due 08:30:05
    s.clock.advance(Duration::from_secs(5));
    tick(&s.triggers).await; // 08:30:05 fires
    assert_eq!(runs(&s.engine).len(), 1);

    // Killed, and back 12 seconds later: 08:30:10 and 08:30:15 came while it was down.
    s.engine.shutdown().await;
    s.clock.advance(Duration::from_secs(12));
    s.engine = start_engine(&s.db, &s.clock, config(&s.server));
    s.triggers = Triggers::new(s.engine.clone(), DEFAULT_WORKSPACE);
    add(&s.triggers, every);
    tick(&s.triggers).await;
    tick(&s.triggers).await;
    s.clock.advance(Duration::from_secs(3)); // 08:30:20
    tick(&s.triggers).await;
    let mut ats: Vec<String> = runs(&s.engine)
        .iter()
        .map(|r| r.input["at"].as_str().unwrap().to_string())
        .collect();
    ats.sort();
    assert_eq!(
        ats,
        vec![
            "2026-11-23T08:30:05Z",
            "2026-11-23T08:30:10Z",
            "2026-11-23T08:30:15Z",
            "2026-11-23T08:30:20Z"
        ],
        "every due time within the grace period runs once"
    );
    let st = state(&s, "every5");
    assert_eq!(st["missed"], 0, "{st}");
    assert_eq!(st["nextDue"], "2026-11-23T08:30:25Z");
}

#[tokio::test(flavor = "multi_thread")]
async fn missed_firings_add_up_across_restarts() {
    let mut s = setup().await;
    let hourly = "trigger: hourly\nworkflow: target\nschedule: {every: 1h}\n";
    add(&s.triggers, hourly);
    tick(&s.triggers).await; // next due 09:30
    for _ in 0..2 {
        // Down for three hours and two minutes: three due times more than a minute late.
        s.engine.shutdown().await;
        s.clock.advance(Duration::from_secs(3 * 3600 + 120));
        s.engine = start_engine(&s.db, &s.clock, config(&s.server));
        s.triggers = Triggers::new(s.engine.clone(), DEFAULT_WORKSPACE);
        add(&s.triggers, hourly);
        tick(&s.triggers).await;
        s.clock.advance(Duration::from_secs(3600 - 120)); // an on-time firing in between
        tick(&s.triggers).await;
    }
    let st = state(&s, "hourly");
    assert_eq!(
        st["missed"], 6,
        "the count is not reset by the next firing: {st}"
    );
    assert_eq!(runs(&s.engine).len(), 2);
}

fn sign_at(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_signatures_with_a_timestamp_refuse_replays() {
    let s = setup().await;
    add(
        &s.triggers,
        r#"
trigger: signed
workflow: target
webhook:
  endpoint: signed
  signature:
    secret: "{{ secrets.HOOK_SECRET }}"
    timestamp: {tolerance: 5m}
"#,
    );
    let base = serve_api(&s).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/webhooks/signed");
    let body = br#"{"name": "ada"}"#.to_vec();
    let post = |ts: Option<String>, sig: String| {
        let mut r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-signature", sig)
            .body(body.clone());
        if let Some(ts) = ts {
            r = r.header("x-signature-timestamp", ts);
        }
        r.send()
    };
    let status_and_message = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let b: Value = r.json().await.unwrap();
        (
            status,
            b["error"]["message"].as_str().unwrap_or("").to_string(),
        )
    };
    let now = s.clock.now().as_second().to_string();
    let sig = sign_at("s3cret-value", &now, &body);

    let (st, msg) = status_and_message(post(None, sig.clone()).await.unwrap()).await;
    assert_eq!(st, 401, "{msg}");
    assert!(msg.contains("X-Signature-Timestamp"), "{msg}");
    let (st, msg) = status_and_message(
        post(
            Some(now.clone()),
            crate::triggers::sign("s3cret-value", &body),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 401, "a signature over the body alone: {msg}");
    let other = (s.clock.now().as_second() - 1).to_string();
    let (st, _) = status_and_message(post(Some(other), sig.clone()).await.unwrap()).await;
    assert_eq!(st, 401, "a signature over another timestamp");
    let (st, msg) = status_and_message(post(Some("soon".into()), sig.clone()).await.unwrap()).await;
    assert_eq!(st, 401);
    assert!(msg.contains("unix"), "{msg}");

    let ok = post(Some(now.clone()), sig.clone()).await.unwrap();
    assert_eq!(ok.status().as_u16(), 202);

    // Six minutes later the same request, signature and all, is refused.
    s.clock.advance(Duration::from_secs(6 * 60));
    let (st, msg) = status_and_message(post(Some(now.clone()), sig.clone()).await.unwrap()).await;
    assert_eq!(st, 401, "{msg}");
    assert!(msg.contains("tolerance"), "{msg}");
    // A timestamp from the future beyond the tolerance is refused as well.
    let ahead = (s.clock.now().as_second() + 600).to_string();
    let (st, _) = status_and_message(
        post(Some(ahead.clone()), sign_at("s3cret-value", &ahead, &body))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 401);
    // A fresh one is accepted.
    let fresh = s.clock.now().as_second().to_string();
    let r = post(Some(fresh.clone()), sign_at("s3cret-value", &fresh, &body))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(runs(&s.engine).len(), 2);
}

#[test]
fn signature_timestamps_are_linted() {
    let lint = |yaml: &str| {
        stepwise::validate::lint(&SourceFile::new("t.yaml", yaml))
            .diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.code.as_str(), d.message))
            .collect::<Vec<_>>()
    };
    let base = "trigger: t\nworkflow: w\nwebhook:\n  endpoint: t\n  signature:\n    secret: s\n";
    assert!(lint(&format!("{base}    timestamp: {{}}\n")).is_empty());
    assert!(
        lint(&format!(
            "{base}    timestamp: {{header: X-Timestamp, tolerance: 30s}}\n"
        ))
        .is_empty()
    );
    let bad = lint(&format!("{base}    timestamp: {{tolerance: soon}}\n"));
    assert!(
        bad.iter()
            .any(|d| d.starts_with("stepwise::definition::invalid_duration")),
        "{bad:?}"
    );
    let shared = lint(&format!(
        "{base}    type: shared-secret\n    timestamp: {{}}\n"
    ));
    assert!(
        shared
            .iter()
            .any(|d| d.starts_with("stepwise::schema::invalid_value") && d.contains("timestamp")),
        "{shared:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_stays_inactive_until_its_secrets_are_set() {
    let s = setup().await; // the engine has HOOK_SECRET, nothing else
    let feed = s.server.url("/feed");
    let poll = |name: &str, secret: &str| {
        format!(
            "trigger: {name}\nworkflow: target\nrequires: {{secrets: [{secret}]}}\npoll:\n  url: \"{feed}\"\n  interval: 1m\n  items: /tickets\n  key: \"{{{{ item.id }}}}\"\n"
        )
    };
    *s.server.shared.feed.lock().unwrap() = vec![json!({"id": 1})];
    let inactive = s
        .triggers
        .set(trigger(&poll("needs-token", "TOKEN")))
        .unwrap();
    assert!(
        inactive.as_deref().is_some_and(|w| w.contains("TOKEN")),
        "{inactive:?}"
    );
    let active = s
        .triggers
        .set(trigger(&poll("has-secret", "HOOK_SECRET")))
        .unwrap();
    assert_eq!(active, None);
    tick(&s.triggers).await;
    let polls = s
        .server
        .seen()
        .iter()
        .filter(|r| r.path.starts_with("/feed"))
        .count();
    assert_eq!(polls, 1, "only the trigger whose secrets are set polls");
    let listed: Vec<(String, bool)> = s
        .triggers
        .list()
        .iter()
        .map(|t| (t.name.clone(), t.enabled))
        .collect();
    assert_eq!(
        listed,
        vec![("has-secret".into(), true), ("needs-token".into(), false)]
    );
    let _: Arc<Triggers> = s.triggers.clone();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_poll_keeps_its_secret_out_of_last_error() {
    let s = setup().await;
    let url = s.server.url("/status/500");
    add(
        &s.triggers,
        &format!(
            "trigger: leaky\nworkflow: target\npoll:\n  url: \"{url}?key={{{{ secrets.HOOK_SECRET }}}}\"\n  interval: 1m\n  items: /tickets\n  key: \"{{{{ item.id }}}}\"\n"
        ),
    );
    tick(&s.triggers).await;
    assert!(
        s.server.seen().iter().any(|r| r.path == "/status/500"),
        "the poll ran"
    );
    let st = state(&s, "leaky");
    let text = st.to_string();
    assert!(st["lastError"].as_str().is_some(), "{st}");
    assert!(!text.contains("s3cret-value"), "{text}");
    assert!(text.contains("***"), "{text}");
}
