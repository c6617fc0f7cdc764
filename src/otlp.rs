//! OpenTelemetry export: each finished run becomes a trace (one span for the run, one per
//! step attempt, the event log as span events), sent as OTLP/HTTP JSON. Off unless an
//! endpoint is configured.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::store::{EventRecord, RunRecord, StepRecord};

fn hex_id(parts: &[&str], bytes: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn nanos(t: jiff::Timestamp) -> String {
    t.as_nanosecond().to_string()
}

fn attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

/// The OTLP/HTTP JSON body for one finished run.
pub fn spans(run: &RunRecord, steps: &[StepRecord], events: &[EventRecord]) -> Value {
    let trace_id = hex_id(&[&run.id], 16);
    let root_id = hex_id(&[&run.id, "run"], 8);
    let end = run.finished_at.unwrap_or(run.updated_at);
    let status = |ok: bool| json!({"code": if ok { 1 } else { 2 }});
    let mut spans = vec![json!({
        "traceId": trace_id,
        "spanId": root_id,
        "name": format!("run {}", run.definition_slug),
        "kind": 1,
        "startTimeUnixNano": nanos(run.created_at),
        "endTimeUnixNano": nanos(end),
        "attributes": [
            attr("stepwise.run.id", &run.id),
            attr("stepwise.definition", &run.definition_slug),
            attr("stepwise.definition.version", &run.definition_id),
            attr("stepwise.status", run.status.as_str()),
            attr("stepwise.trigger", run.trigger.get("label").and_then(Value::as_str).unwrap_or("")),
        ],
        "events": events.iter().map(|e| json!({
            "timeUnixNano": nanos(e.at),
            "name": e.kind,
            "attributes": [attr("stepwise.step", e.step_id.as_deref().unwrap_or(""))],
        })).collect::<Vec<_>>(),
        "status": status(run.status == crate::model::RunStatus::Completed),
    })];
    for s in steps {
        let (Some(start), Some(finish)) = (s.started_at, s.finished_at) else {
            continue;
        };
        let mut attributes = vec![
            attr("stepwise.step", &s.step_id),
            attr("stepwise.attempt", &s.attempt.to_string()),
            attr("stepwise.status", s.status.as_str()),
        ];
        if let Some(u) = &s.usage {
            attributes.push(attr(
                "gen_ai.request.model",
                u["model"].as_str().unwrap_or(""),
            ));
            attributes.push(json!({"key": "gen_ai.usage.input_tokens", "value": {"intValue": u["promptTokens"].as_u64().unwrap_or(0).to_string()}}));
            attributes.push(json!({"key": "gen_ai.usage.output_tokens", "value": {"intValue": u["completionTokens"].as_u64().unwrap_or(0).to_string()}}));
        }
        spans.push(json!({
            "traceId": trace_id,
            "spanId": hex_id(&[&run.id, &s.step_id, &s.attempt.to_string()], 8),
            "parentSpanId": root_id,
            "name": format!("step {}", s.step_id),
            "kind": 1,
            "startTimeUnixNano": nanos(start),
            "endTimeUnixNano": nanos(finish),
            "attributes": attributes,
            "status": status(s.status != crate::model::StepStatus::Failed),
        }));
    }
    json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", "stepwise")]},
        "scopeSpans": [{"scope": {"name": "stepwise", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
    }]})
}

/// The most of a collector's answer read (it is only logged, on failure).
const COLLECTOR_ANSWER_LIMIT: u64 = 4096;

/// Export every run that finishes from now on.
pub fn spawn_exporter(engine: Engine, endpoint: String) {
    let url = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
        endpoint
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    let http = match crate::http_client::build(&crate::http_client::ClientOptions::default()) {
        Ok(http) => http,
        Err(e) => {
            tracing::error!("OTLP export is off: cannot build the HTTP client: {e}");
            return;
        }
    };
    let mut updates = engine.subscribe();
    tokio::spawn(async move {
        loop {
            let u = match updates.recv().await {
                Ok(u) => u,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("OTLP export skipped {n} updates (too many at once)");
                    continue;
                }
                Err(_) => return,
            };
            if u.step.is_some() || !u.status.is_terminal() {
                continue;
            }
            let store = engine.store().clone();
            let id = u.run_id.clone();
            let loaded =
                tokio::task::spawn_blocking(move || -> Result<_, crate::store::StoreError> {
                    Ok((store.run(&id)?, store.steps(&id)?, store.events(&id)?))
                })
                .await;
            let Ok(Ok((Some(run), steps, events))) = loaded else {
                continue;
            };
            let body = spans(&run, &steps, &events);
            let sent = http
                .post(&url)
                .json(&body)
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await;
            match sent {
                Err(e) => tracing::warn!(
                    "OTLP export to {url} failed: {}",
                    crate::http_client::error_chain(&e)
                ),
                Ok(resp) => {
                    let status = resp.status();
                    // Collectors answer a few bytes (or say why they refused); reading them
                    // lets the connection be reused, and the bound keeps a broken one cheap.
                    let answer =
                        crate::http_client::read_body_limited(resp, COLLECTOR_ANSWER_LIMIT).await;
                    if !status.is_success() {
                        let why = answer
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_else(|e| e.to_string());
                        tracing::warn!("OTLP export to {url} answered {status}: {why}");
                    }
                }
            }
        }
    });
}
