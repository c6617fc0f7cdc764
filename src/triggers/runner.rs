//! Running triggers: webhook requests in, schedules and polls on each tick. Every event
//! becomes a run through the engine, with an idempotency key derived from the event, so a
//! redelivered webhook, a schedule fired again after a crash, or an item seen twice starts
//! one run.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde_json::{Value, json};
use sha2::Sha256;

use super::model::{Poll, Schedule, Source, Trigger, Webhook};
use crate::engine::{CreateRun, Engine, EngineError, violations};
use crate::store::RunRecord;
use crate::template;

/// A due time this late is "missed" (the server was down), not merely a slow tick.
const GRACE: Duration = Duration::from_secs(60);

pub struct Triggers {
    engine: Engine,
    workspace_id: String,
    http: reqwest::Client,
    list: RwLock<Vec<Arc<Trigger>>>,
    /// Triggers being worked on: a slow poll must not run twice at once.
    busy: std::sync::Mutex<std::collections::HashSet<String>>,
}

type Result<T> = std::result::Result<T, EngineError>;

fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|s| t.checked_add(s).ok())
        .unwrap_or(t)
}

impl Triggers {
    pub fn new(engine: Engine, workspace_id: &str) -> Arc<Triggers> {
        let http = crate::http_client::build(&crate::http_client::ClientOptions::default())
            .unwrap_or_else(|e| {
                // Only a TLS stack that cannot start gets here (then no client can).
                tracing::error!("cannot build the HTTP client for polls: {e}");
                reqwest::Client::default()
            });
        Arc::new(Triggers {
            engine,
            workspace_id: workspace_id.to_string(),
            http,
            list: RwLock::new(Vec::new()),
            busy: Default::default(),
        })
    }

    /// Add or replace (by name) a trigger. A webhook endpoint another trigger already
    /// serves is refused.
    pub fn set(&self, t: Trigger) -> std::result::Result<(), String> {
        let mut list = self
            .list
            .write()
            .map_err(|_| "trigger list poisoned".to_string())?;
        if let Source::Webhook(w) = &t.source
            && let Some(other) = list.iter().find(|x| {
                x.name != t.name
                    && matches!(&x.source, Source::Webhook(o) if o.endpoint == w.endpoint)
            })
        {
            return Err(format!(
                "webhook endpoint `{}` is already served by trigger `{}`",
                w.endpoint, other.name
            ));
        }
        list.retain(|x| x.name != t.name);
        list.push(Arc::new(t));
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    pub fn remove(&self, name: &str) {
        if let Ok(mut list) = self.list.write() {
            list.retain(|x| x.name != name);
        }
    }

    pub fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    pub fn list(&self) -> Vec<Arc<Trigger>> {
        self.list.read().map(|l| l.clone()).unwrap_or_default()
    }

    fn secrets(&self) -> &HashMap<String, String> {
        &self.engine.config().secrets
    }

    fn input(&self, t: &Trigger, event: &Value, default: Value) -> Result<Value> {
        let Some(transform) = &t.transform else {
            return Ok(default);
        };
        let ctx = template::context(&json!({"event": event, "secrets": self.secrets()}));
        template::render_value(transform, &ctx, "/transform").map_err(|e| {
            EngineError::validation(
                format!("trigger `{}`: the transform failed: {}", t.name, e.message),
                json!({"field": "transform"}),
            )
        })
    }

    async fn start(
        &self,
        t: &Trigger,
        input: Value,
        key: Option<String>,
        trigger: Value,
    ) -> Result<(RunRecord, bool)> {
        self.engine
            .create_run(CreateRun {
                workspace_id: self.workspace_id.clone(),
                definition: t.workflow.clone(),
                input,
                idempotency_key: key,
                trigger,
            })
            .await
    }

    // ----- webhooks -------------------------------------------------------------------------

    /// Handle `POST /v1/webhooks/{endpoint}`. `headers` are lowercase names.
    pub async fn webhook(
        &self,
        endpoint: &str,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> Result<(RunRecord, bool)> {
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
                            .unwrap_or("x-signature")
                            .eq_ignore_ascii_case(k)
                    })
            })
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let event = json!({"kind": "webhook", "body": payload, "headers": safe_headers, "receivedAt": now.to_string()});
        let input = self.input(&t, &event, payload.clone())?;
        let context = json!({"kind": "webhook", "name": t.name, "label": t.label(), "event": event, "deliveryId": delivery});
        self.start(
            &t,
            input,
            delivery.map(|d| format!("webhook:{}:{d}", t.name)),
            context,
        )
        .await
    }

    fn verify(&self, w: &Webhook, headers: &HashMap<String, String>, body: &[u8]) -> Result<()> {
        let Some(sig) = &w.signature else {
            return Ok(());
        };
        let ctx = template::context(&json!({"secrets": self.secrets()}));
        let secret = match template::render_string(&sig.secret, &ctx, "/webhook/signature/secret") {
            Ok(Value::String(s)) if !s.is_empty() => s,
            _ => {
                return Err(EngineError::Internal(format!(
                    "the signature secret of webhook `{}` is not set",
                    w.endpoint
                )));
            }
        };
        let header = sig.header.as_deref().unwrap_or("X-Signature");
        let presented = headers.get(&header.to_ascii_lowercase()).ok_or_else(|| {
            EngineError::Unauthorized(format!("missing signature header {header}"))
        })?;
        let ok = match sig.kind.as_deref().unwrap_or("hmac-sha256") {
            "shared-secret" => constant_time_eq(presented.trim().as_bytes(), secret.as_bytes()),
            _ => {
                let hex = presented
                    .trim()
                    .strip_prefix("sha256=")
                    .unwrap_or(presented.trim());
                match (
                    decode_hex(hex),
                    Hmac::<Sha256>::new_from_slice(secret.as_bytes()),
                ) {
                    (Some(bytes), Ok(mut mac)) => {
                        mac.update(body);
                        mac.verify_slice(&bytes).is_ok()
                    }
                    _ => false,
                }
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

    // ----- schedules and polls --------------------------------------------------------------

    /// Fire what is due: schedules whose time came, polls whose interval passed. Each trigger
    /// works in its own task, so a slow poll delays no schedule. Returns the triggers that
    /// failed, with why (they are tried again on a later tick).
    pub async fn tick(self: &Arc<Self>) -> Vec<(String, EngineError)> {
        let mut tasks = tokio::task::JoinSet::new();
        for t in self.list() {
            if !t.enabled || matches!(t.source, Source::Webhook(_)) {
                continue;
            }
            let claimed = self
                .busy
                .lock()
                .map(|mut b| b.insert(t.name.clone()))
                .unwrap_or(false);
            if !claimed {
                continue;
            }
            let this = self.clone();
            tasks.spawn(async move {
                let r = match &t.source {
                    Source::Schedule(s) => this.schedule(&t, s).await,
                    Source::Poll(p) => this.poll(&t, p).await,
                    Source::Webhook(_) => Ok(()),
                };
                if let Ok(mut b) = this.busy.lock() {
                    b.remove(&t.name);
                }
                r.map_err(|e| (t.name.clone(), e))
            });
        }
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err((name, e))) = joined {
                tracing::warn!(trigger = %name, "trigger failed: {e}");
                failed.push((name, e));
            }
        }
        failed
    }

    async fn state(&self, name: &str) -> Result<Value> {
        let store = self.engine.store().clone();
        let (ws, n) = (self.workspace_id.clone(), name.to_string());
        Ok(
            crate::engine::blocking(move || store.trigger_state(&ws, &n))
                .await??
                .unwrap_or(Value::Null),
        )
    }

    async fn save(&self, name: &str, state: Value) -> Result<()> {
        let store = self.engine.store().clone();
        let (ws, n) = (self.workspace_id.clone(), name.to_string());
        crate::engine::blocking(move || store.put_trigger_state(&ws, &n, &state)).await??;
        Ok(())
    }

    async fn schedule(&self, t: &Trigger, s: &Schedule) -> Result<()> {
        let now = self.engine.clock().now();
        let state = self.state(&t.name).await?;
        let next_due = state
            .get("nextDue")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<Timestamp>().ok());
        let Some(first) = next_due else {
            // First sight of this schedule: it starts at its next due time, not in the past.
            let next = next_after(s, now).ok_or_else(|| {
                EngineError::Internal(format!("schedule `{}` has no next time", t.name))
            })?;
            return self
                .save(&t.name, json!({"nextDue": next.to_string()}))
                .await;
        };
        if first > now {
            return Ok(());
        }
        let mut dues = vec![first];
        while let Some(n) = next_after(s, *dues.last().unwrap_or(&first)) {
            if n > now || dues.len() >= 10_000 {
                break;
            }
            dues.push(n);
        }
        let latest = *dues.last().unwrap_or(&first);
        let on_time =
            now.duration_since(latest) <= jiff::SignedDuration::try_from(GRACE).unwrap_or_default();
        let run_once = s.missed.as_deref() == Some("run_once");
        let fire: Vec<Timestamp> = if on_time || run_once {
            vec![latest]
        } else {
            Vec::new()
        };
        let missed = dues.len() - fire.len();
        for due in fire {
            let event = json!({"kind": "schedule", "scheduledAt": due.to_string(), "firedAt": now.to_string()});
            let input = self.input(t, &event, json!({"scheduledAt": due.to_string()}))?;
            let context = json!({"kind": "schedule", "name": t.name, "label": t.label(), "scheduledAt": due.to_string(), "event": event});
            self.start(
                t,
                input,
                Some(format!("schedule:{}:{}", t.name, due)),
                context,
            )
            .await?;
        }
        if missed > 0 {
            tracing::info!(trigger = %t.name, "{missed} firing(s) missed while the server was down were skipped");
        }
        let next = next_after(s, latest).ok_or_else(|| {
            EngineError::Internal(format!("schedule `{}` has no next time", t.name))
        })?;
        self.save(
            &t.name,
            json!({"nextDue": next.to_string(), "lastDue": latest.to_string(), "missed": missed}),
        )
        .await
    }

    async fn poll(&self, t: &Trigger, p: &Poll) -> Result<()> {
        let now = self.engine.clock().now();
        let state = self.state(&t.name).await?;
        if let Some(next) = state
            .get("nextPoll")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<Timestamp>().ok())
            && next > now
        {
            return Ok(());
        }
        let interval = crate::duration::parse(&p.interval).unwrap_or(Duration::from_secs(60));
        let cursor = state.get("cursor").cloned().unwrap_or(Value::Null);
        let mut next_state = json!({"cursor": cursor, "nextPoll": add(now, interval).to_string(), "lastPolledAt": now.to_string()});
        match self.poll_once(t, p, &cursor, now).await {
            Ok((new_cursor, started)) => {
                next_state["cursor"] = new_cursor;
                next_state["lastStarted"] = json!(started);
            }
            Err(e) => {
                tracing::warn!(trigger = %t.name, "poll failed: {e}");
                next_state["lastError"] = json!(e.to_string());
            }
        }
        self.save(&t.name, next_state).await
    }

    async fn poll_once(
        &self,
        t: &Trigger,
        p: &Poll,
        cursor: &Value,
        now: Timestamp,
    ) -> Result<(Value, usize)> {
        let ctx = template::context(&json!({"cursor": cursor, "secrets": self.secrets()}));
        let url = match template::render_string(&p.url, &ctx, "/poll/url") {
            Ok(Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(e) => return Err(EngineError::Internal(e.to_string())),
        };
        let mut req = self.http.get(&url).timeout(Duration::from_secs(30));
        for (k, v) in &p.headers {
            if let Value::String(v) = v
                && let Ok(Value::String(v)) = template::render_string(v, &ctx, "/poll/headers")
            {
                req = req.header(k.as_str(), v);
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| EngineError::Internal(format!("GET {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(EngineError::Internal(format!(
                "GET {url} answered {}",
                resp.status()
            )));
        }
        let body =
            crate::http_client::read_body_limited(resp, crate::http_client::DEFAULT_MAX_BODY)
                .await
                .map_err(|e| EngineError::Internal(format!("GET {url}: {e}")))?;
        let response: Value = serde_json::from_slice(&body)
            .map_err(|e| EngineError::Internal(format!("GET {url}: not JSON: {e}")))?;
        let items = match p.items.as_deref() {
            None | Some("") => response.clone(),
            Some(ptr) if ptr.starts_with('/') => {
                response.pointer(ptr).cloned().unwrap_or(Value::Null)
            }
            Some(tpl) => template::render_string(
                tpl,
                &template::context(&json!({"response": response})),
                "/poll/items",
            )
            .map_err(|e| EngineError::Internal(e.to_string()))?,
        };
        let Value::Array(items) = items else {
            return Err(EngineError::Internal(format!(
                "the items of {url} are not a list"
            )));
        };
        let mut started = 0;
        for item in &items {
            let key = match template::render_string(
                &p.key,
                &template::context(&json!({"item": item})),
                "/poll/key",
            ) {
                Ok(Value::String(s)) => s,
                Ok(Value::Null) | Err(_) => {
                    tracing::warn!(trigger = %t.name, "an item has no key; skipped");
                    continue;
                }
                Ok(other) => other.to_string(),
            };
            let event = json!({"kind": "poll", "item": item, "cursor": cursor, "polledAt": now.to_string()});
            let input = self.input(t, &event, item.clone())?;
            let context = json!({"kind": "poll", "name": t.name, "label": t.label(), "itemKey": key, "event": event});
            let (_, created) = self
                .start(t, input, Some(format!("poll:{}:{key}", t.name)), context)
                .await?;
            started += usize::from(created);
        }
        let new_cursor = match &p.cursor {
            Some(tpl) => template::render_string(
                tpl,
                &template::context(
                    &json!({"response": response, "items": items, "cursor": cursor}),
                ),
                "/poll/cursor",
            )
            .map_err(|e| EngineError::Internal(e.to_string()))?,
            None => cursor.clone(),
        };
        Ok((new_cursor, started))
    }
}

/// The first due time strictly after `t`.
pub fn next_after(s: &Schedule, t: Timestamp) -> Option<Timestamp> {
    if let Some(every) = &s.every {
        let d = crate::duration::parse(every).ok()?;
        if d.is_zero() {
            return None;
        }
        return Some(add(t, d));
    }
    let cron: croner::Cron = s.cron.as_deref()?.parse().ok()?;
    let tz = match s.timezone.as_deref() {
        Some(name) => jiff::tz::TimeZone::get(name).ok()?,
        None => jiff::tz::TimeZone::UTC,
    };
    let zoned = t.to_zoned(tz);
    cron.find_next_occurrence(&zoned, false)
        .ok()
        .map(|z| z.timestamp())
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
    fn cron_in_a_time_zone() {
        let s = Schedule {
            cron: Some("0 9 * * MON".into()),
            timezone: Some("Europe/Berlin".into()),
            every: None,
            missed: None,
        };
        let t: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap(); // a Sunday
        assert_eq!(
            next_after(&s, t).unwrap().to_string(),
            "2026-11-23T08:00:00Z"
        );
        let e = Schedule {
            cron: None,
            timezone: None,
            every: Some("15m".into()),
            missed: None,
        };
        assert_eq!(
            next_after(&e, t).unwrap().to_string(),
            "2026-11-22T12:15:00Z"
        );
    }

    #[test]
    fn hex_and_comparison() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0g"), None);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}
