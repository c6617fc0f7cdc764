//! Failure alert delivery: reads due alerts from the store, POSTs a webhook or starts a
//! workflow, and hands each attempt's result to the scheduler, which writes it with the
//! run's trace event. The one write here is the claim.
//!
//! An alert row is created in the same commit as the run's failure, so every failure has
//! its alerts, once (ids are derived from the run, its attempt and the target). Before each
//! attempt the alert is claimed in the store ([`crate::store::Store::claim_alert`]): its
//! attempt is counted and its next try moved past the attempt's time limit, in one
//! statement, so no two processes deliver it at once, and a process killed mid-delivery
//! leaves it to be tried again once that lease ends. A webhook carries the alert id as
//! `Idempotency-Key` and the attempt as `Stepwise-Alert-Attempt`: every copy a receiver
//! gets of one alert has the same key and body, and a copy after the first comes only when
//! the result of the one before was not recorded (no answer, 408, 409, 429, 5xx, or a
//! crash before the answer was written). A workflow alert starts its run with the
//! idempotency key `alert:<id>`, so it starts exactly once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::engine::{AlertOutcome, CreateRun, Engine, EngineError, blocking};
use crate::store::AlertRecord;

/// How often due alerts are looked for.
const POLL: Duration = Duration::from_millis(250);
/// A claim lasts the attempt's time limit plus this, time to record its result.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// The header that counts a webhook alert's attempts (1, 2, …).
pub const ATTEMPT_HEADER: &str = "stepwise-alert-attempt";

/// Deliver due alerts until the engine stops. Called by `Engine::start`.
pub(crate) fn spawn(engine: Engine) {
    let http = match crate::http_client::build(&crate::http_client::ClientOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot build the HTTP client for failure alerts: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        while !engine.stopped() {
            tokio::time::sleep(POLL).await;
            if engine.store_error().is_some() {
                continue;
            }
            let (store, now) = (engine.store().clone(), engine.clock().now());
            let due = match blocking(move || store.alerts_due(now, 50)).await {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    tracing::warn!("cannot read due failure alerts: {e}");
                    continue;
                }
                Err(_) => continue,
            };
            for alert in due {
                let mine = in_flight
                    .lock()
                    .map(|mut f| f.insert(alert.id.clone()))
                    .unwrap_or(false);
                if !mine {
                    continue;
                }
                let (engine, http, in_flight) = (engine.clone(), http.clone(), in_flight.clone());
                tokio::spawn(async move {
                    let id = alert.id.clone();
                    let claimed = claim(&engine, &id).await;
                    let Some(alert) = claimed else {
                        if let Ok(mut f) = in_flight.lock() {
                            f.remove(&id);
                        }
                        return;
                    };
                    let outcome = deliver(&engine, &http, &alert).await;
                    if let Err(e) = engine.alert_done(alert, outcome).await {
                        // Still pending in the store: attempted again.
                        tracing::warn!("cannot record failure alert {id}: {e}");
                    }
                    if let Ok(mut f) = in_flight.lock() {
                        f.remove(&id);
                    }
                });
            }
        }
    });
}

/// The alert, claimed for one attempt (its `attempts` counts this one); `None` when another
/// process has it or it is no longer due.
async fn claim(engine: &Engine, id: &str) -> Option<AlertRecord> {
    let now = engine.clock().now();
    let lease = engine.config().alert_timeout + LEASE_MARGIN;
    let until = jiff::SignedDuration::try_from(lease)
        .ok()
        .and_then(|d| now.checked_add(d).ok())?;
    let (store, id) = (engine.store().clone(), id.to_string());
    match blocking(move || store.claim_alert(&id, now, until)).await {
        Ok(Ok(claimed)) => claimed,
        Ok(Err(e)) => {
            tracing::warn!("cannot claim a failure alert: {e}");
            None
        }
        Err(_) => None,
    }
}

async fn deliver(engine: &Engine, http: &reqwest::Client, alert: &AlertRecord) -> AlertOutcome {
    match alert.kind.as_str() {
        "webhook" => webhook(engine, http, alert).await,
        "workflow" => workflow(engine, alert).await,
        other => AlertOutcome::Fail(format!("unknown alert kind `{other}`")),
    }
}

fn render(
    engine: &Engine,
    alert: &AlertRecord,
    text: &str,
    pointer: &str,
) -> Result<String, String> {
    let ctx = minijinja::Value::from(std::collections::BTreeMap::from([(
        "secrets".to_string(),
        engine.secrets().template(&alert.workspace_id),
    )]));
    match crate::template::render_string(text, &ctx, pointer) {
        Ok(Value::String(s)) => Ok(s),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(format!("{pointer}: {}", e.message)),
    }
}

async fn webhook(engine: &Engine, http: &reqwest::Client, alert: &AlertRecord) -> AlertOutcome {
    let redact = |s: String| engine.secrets().redact_str(&s);
    let url = match render(
        engine,
        alert,
        alert.target["url"].as_str().unwrap_or_default(),
        "/on_failure/webhook/url",
    ) {
        Ok(u) => u,
        Err(e) => return AlertOutcome::Fail(redact(e)),
    };
    let mut req = http
        .post(&url)
        .timeout(engine.config().alert_timeout)
        .header("idempotency-key", &alert.id)
        .header(ATTEMPT_HEADER, alert.attempts.to_string())
        .json(&alert.body);
    if let Some(headers) = alert.target["headers"].as_object() {
        for (k, v) in headers {
            match render(
                engine,
                alert,
                v.as_str().unwrap_or_default(),
                "/on_failure/webhook/headers",
            ) {
                Ok(v) => req = req.header(k.as_str(), v),
                Err(e) => return AlertOutcome::Fail(redact(e)),
            }
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = format!("the receiver answered {status}");
            match status {
                200..=299 => AlertOutcome::Delivered(json!({"status": status})),
                // 409: the receiver is still working on this Idempotency-Key (an earlier
                // copy); asked again later, it answers that copy's result.
                408 | 409 | 429 | 500..=599 => AlertOutcome::Retry(text),
                _ => AlertOutcome::Fail(text),
            }
        }
        Err(e) => AlertOutcome::Retry(redact(format!("the request failed: {e}"))),
    }
}

async fn workflow(engine: &Engine, alert: &AlertRecord) -> AlertOutcome {
    let slug = alert.target["workflow"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let created = engine
        .create_run(CreateRun {
            workspace_id: alert.workspace_id.clone(),
            definition: slug,
            input: alert.body.clone(),
            idempotency_key: Some(format!("{}{}", crate::model::KEY_PREFIX_ALERT, alert.id)),
            trigger: json!({"kind": "alert", "label": "Failure alert", "alertId": alert.id, "runId": alert.run_id}),
        })
        .await;
    match created {
        Ok((run, _)) => AlertOutcome::Delivered(json!({"childRunId": run.id})),
        Err(e @ (EngineError::Validation { .. } | EngineError::Conflict(_))) => {
            AlertOutcome::Fail(e.to_string())
        }
        // An unknown workflow may be one a folder of definitions has not loaded yet.
        Err(e) => AlertOutcome::Retry(e.to_string()),
    }
}
