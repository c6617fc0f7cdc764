//! Webhooks: a request to `POST /v1/webhooks/{endpoint}` is checked (signature, timestamp,
//! body schema) and becomes a run, keyed by the delivery id when the trigger names one,
//! or (with `signal:`) a correlated signal, perhaps starting a run when none waits.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::model::{SignalSpec, Signature, Source, Trigger, Webhook};
use super::runner::{Result, Triggers};
use crate::engine::{CreateRun, EngineError, SendSignal, SignalOutcome, violations};
use crate::store::RunRecord;
use crate::template;

const SIGNATURE_HEADER: &str = "X-Signature";
const TIMESTAMP_HEADER: &str = "X-Signature-Timestamp";
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// What a webhook delivery did.
#[derive(Debug, Clone)]
pub struct WebhookOutcome {
    /// The run it started (`true`) or found by its idempotency key (`false`).
    pub run: Option<(RunRecord, bool)>,
    /// With `signal:`: its type, rendered correlation value and what it reached.
    pub signal: Option<(String, String, SignalOutcome)>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A key that fits the store's 255 characters: a longer one is kept as its hash.
fn bounded(key: String) -> String {
    if key.chars().count() <= 255 {
        key
    } else {
        format!("sha256:{}", sha256_hex(key.as_bytes()))
    }
}

/// The idempotency key of signal-with-start: one run per trigger, signal type and
/// correlation value, however many deliveries race (hashed when it would be too long).
fn signal_key(trigger: &str, signal_type: &str, correlate: &str) -> String {
    let key = format!(
        "{}{trigger}:signal:{signal_type}:{correlate}",
        super::KEY_PREFIX_WEBHOOK
    );
    if key.chars().count() <= 255 {
        return key;
    }
    let hex = sha256_hex(format!("{signal_type}\0{correlate}").as_bytes());
    format!("{}{trigger}:signal:{hex}", super::KEY_PREFIX_WEBHOOK)
}

impl Triggers {
    /// Handle `POST /v1/webhooks/{endpoint}`. `headers` are lowercase names. What it came
    /// to is noted in the trigger's state (the last delivery, or the last error).
    pub async fn webhook(
        &self,
        endpoint: &str,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> Result<WebhookOutcome> {
        let t = self
            .list()
            .into_iter()
            .find(|t| {
                t.enabled && matches!(&t.source, Source::Webhook(w) if w.endpoint == endpoint)
            })
            .ok_or_else(|| EngineError::NotFound(format!("no webhook `{endpoint}`")))?;
        let Source::Webhook(w) = &t.source else {
            return Err(EngineError::NotFound(format!("no webhook `{endpoint}`")));
        };
        let out = self.deliver(&t, w, headers, body).await;
        // Each delivery counts once: a firing when it was accepted (it started a run,
        // delivered or buffered a signal, or was a redelivery answered with what the first
        // did), an error when it was refused (signature, body, schema, a run the engine
        // refused, a signal that failed).
        self.count(&t, out.is_ok());
        self.note(&t.name, out.as_ref().map(drop)).await;
        out
    }

    async fn deliver(
        &self,
        t: &Trigger,
        w: &Webhook,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> Result<WebhookOutcome> {
        let payload = self.accepted(w, &w.endpoint, headers, body)?;
        let delivery = match &w.idempotency {
            Some(i) => match (&i.header, &i.field) {
                (Some(h), _) => headers.get(&h.to_ascii_lowercase()).cloned(),
                (None, Some(f)) => payload.pointer(f).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                _ => None,
            },
            None => None,
        };
        let now = self.engine.clock().now();
        let safe_headers: serde_json::Map<String, Value> = headers
            .iter()
            .filter(|(k, _)| {
                !matches!(k.as_str(), "authorization" | "cookie" | "x-api-key")
                    && !w.signature.as_ref().is_some_and(|s| {
                        s.header
                            .as_deref()
                            .unwrap_or(SIGNATURE_HEADER)
                            .eq_ignore_ascii_case(k)
                    })
            })
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let event = json!({"kind": "webhook", "body": payload, "headers": safe_headers, "receivedAt": now.to_string()});
        let context = json!({"kind": "webhook", "name": t.name, "label": t.label(), "event": event, "deliveryId": delivery});
        let Some(spec) = &t.signal else {
            let key = delivery.map(|d| format!("{}{}:{d}", super::KEY_PREFIX_WEBHOOK, t.name));
            let input = self.input(t, &event, payload.clone())?;
            let run = self.create(t, input, key, context).await?;
            return Ok(WebhookOutcome {
                run: Some(run),
                signal: None,
            });
        };
        // A signal is delivered once per delivery: by the id the trigger names, or else by
        // the body's hash (a provider's redelivery sends the same bytes).
        let delivery = delivery.unwrap_or_else(|| format!("sha256:{}", sha256_hex(body)));
        let key = Some(format!(
            "{}{}:{delivery}",
            super::KEY_PREFIX_WEBHOOK,
            t.name
        ));
        let (correlate, signal_payload) = self.signal_values(&t.name, spec, &event, &payload)?;
        let mut run = None;
        let mut start = None;
        if spec.start_if_none {
            start = Some(CreateRun {
                workspace_id: self.workspace_id().to_string(),
                definition: t.workflow.clone(),
                input: self.input(t, &event, payload.clone())?,
                idempotency_key: Some(signal_key(&t.name, &spec.signal_type, &correlate)),
                trigger: context,
            });
        } else if !t.workflow.is_empty() {
            let input = self.input(t, &event, payload.clone())?;
            run = Some(self.create(t, input, key, context).await?);
        }
        let out = self
            .engine
            .signal(SendSignal {
                workspace_id: self.workspace_id().to_string(),
                signal_type: spec.signal_type.clone(),
                correlate: correlate.clone(),
                payload: signal_payload,
                via: format!("webhook {}", t.name),
                start,
                delivery: Some(bounded(format!("webhook:{}:{delivery}", t.name))),
            })
            .await?;
        if let Some(started) = &out.started {
            run = Some(started.clone());
        }
        Ok(WebhookOutcome {
            run,
            signal: Some((spec.signal_type.clone(), correlate, out)),
        })
    }

    /// The rendered `signal.correlate` and `signal.payload` of one delivery.
    fn signal_values(
        &self,
        trigger: &str,
        spec: &SignalSpec,
        event: &Value,
        body: &Value,
    ) -> Result<(String, Value)> {
        let ctx = self.scope("event", event);
        let failed = |field: &str, e: template::RenderError| {
            EngineError::validation(
                format!("trigger `{trigger}`: signal.{field} failed: {}", e.message),
                json!({"field": format!("signal.{field}")}),
            )
        };
        let correlate = match template::render_string(&spec.correlate, &ctx, "/signal/correlate")
            .map_err(|e| failed("correlate", e))?
        {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        if correlate.is_empty() {
            return Err(EngineError::validation(
                format!("trigger `{trigger}`: signal.correlate rendered nothing for this body"),
                json!({"field": "signal.correlate"}),
            ));
        }
        let payload = match &spec.payload {
            Some(p) => template::render_value(p, &ctx, "/signal/payload")
                .map_err(|e| failed("payload", e))?,
            None => body.clone(),
        };
        Ok((correlate, payload))
    }

    /// The delivery's JSON payload, once its signature and schema check out.
    fn accepted(
        &self,
        w: &Webhook,
        endpoint: &str,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> Result<Value> {
        self.verify(w, headers, body)?;
        let payload: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|e| {
                EngineError::validation(
                    format!("the body is not JSON: {e}"),
                    json!({"line": e.line(), "column": e.column()}),
                )
            })?
        };
        if let Some(schema) = &w.schema {
            let v = jsonschema::options().build(schema).map_err(|e| {
                EngineError::Internal(format!("webhook `{endpoint}` has an invalid schema: {e}"))
            })?;
            let problems = violations(&v, &payload);
            if !problems.is_empty() {
                return Err(EngineError::validation(
                    format!("the body does not match the schema of webhook `{endpoint}`"),
                    json!({"field": "body", "problems": problems}),
                ));
            }
        }
        Ok(payload)
    }

    fn verify(&self, w: &Webhook, headers: &HashMap<String, String>, body: &[u8]) -> Result<()> {
        let Some(sig) = &w.signature else {
            return Ok(());
        };
        let ctx = self.scope("event", &Value::Null);
        let secret = match template::render_string(&sig.secret, &ctx, "/webhook/signature/secret") {
            Ok(Value::String(s)) if !s.is_empty() => s,
            _ => {
                return Err(EngineError::Internal(format!(
                    "the signature secret of webhook `{}` is not set",
                    w.endpoint
                )));
            }
        };
        let header = sig.header.as_deref().unwrap_or(SIGNATURE_HEADER);
        let presented = headers.get(&header.to_ascii_lowercase()).ok_or_else(|| {
            EngineError::Unauthorized(format!("missing signature header {header}"))
        })?;
        let ok = match sig.kind.as_deref().unwrap_or("hmac-sha256") {
            "shared-secret" => constant_time_eq(presented.trim().as_bytes(), secret.as_bytes()),
            _ => {
                let timestamp = signed_timestamp(sig, headers)?;
                let hex = presented
                    .trim()
                    .strip_prefix("sha256=")
                    .unwrap_or(presented.trim());
                let ok = match (
                    decode_hex(hex),
                    Hmac::<Sha256>::new_from_slice(secret.as_bytes()),
                ) {
                    (Some(bytes), Ok(mut mac)) => {
                        if let Some(ts) = &timestamp {
                            mac.update(ts.raw.as_bytes());
                            mac.update(b".");
                        }
                        mac.update(body);
                        mac.verify_slice(&bytes).is_ok()
                    }
                    _ => false,
                };
                // Only a genuine signature learns about the clock.
                if ok && let Some(ts) = timestamp {
                    self.within_tolerance(sig, &ts)?;
                }
                ok
            }
        };
        if ok {
            Ok(())
        } else {
            Err(EngineError::Unauthorized(format!(
                "the {header} signature does not match"
            )))
        }
    }

    /// A signed timestamp farther than the tolerance from the engine's clock (either way)
    /// is a replayed or badly delayed delivery.
    fn within_tolerance(&self, sig: &Signature, ts: &Stamp) -> Result<()> {
        let tolerance = match sig.timestamp.as_ref().and_then(|t| t.tolerance.as_deref()) {
            None => DEFAULT_TOLERANCE,
            Some(d) => crate::duration::parse(d).map_err(|e| {
                EngineError::Internal(format!("signature.timestamp.tolerance: {e}"))
            })?,
        };
        let now = self.engine.clock().now().as_second();
        if now.abs_diff(ts.seconds) > tolerance.as_secs() {
            return Err(EngineError::Unauthorized(format!(
                "the {} timestamp {} is outside the tolerance of {}s around the server's time {now}",
                ts.header,
                ts.seconds,
                tolerance.as_secs()
            )));
        }
        Ok(())
    }
}

/// The timestamp a signature with `timestamp` covers.
struct Stamp {
    header: String,
    /// Exactly as sent: the sender signed these characters.
    raw: String,
    seconds: i64,
}

/// The signed timestamp of a request, `None` when the signature has no `timestamp`.
fn signed_timestamp(sig: &Signature, headers: &HashMap<String, String>) -> Result<Option<Stamp>> {
    let Some(t) = &sig.timestamp else {
        return Ok(None);
    };
    let header = t.header.as_deref().unwrap_or(TIMESTAMP_HEADER);
    let value = headers.get(&header.to_ascii_lowercase()).ok_or_else(|| {
        EngineError::Unauthorized(format!("missing signature timestamp header {header}"))
    })?;
    let raw = value.trim();
    let seconds = raw.parse::<i64>().map_err(|_| {
        EngineError::Unauthorized(format!("the {header} header is not a unix time in seconds"))
    })?;
    Ok(Some(Stamp {
        header: header.to_string(),
        raw: raw.to_string(),
        seconds,
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_comparison() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0g"), None);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}
