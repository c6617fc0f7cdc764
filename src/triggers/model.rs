//! The trigger format: a source (webhook, schedule, poll) attached to a workflow.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub name: String,
    /// Empty for a webhook that only delivers a signal (`signal:` without `workflow:`).
    pub workflow: String,
    pub enabled: bool,
    /// Secrets (names under `secrets.`) without which the trigger stays inactive.
    pub requires: Vec<String>,
    /// Template mapping from the event to the workflow input.
    pub transform: Option<Value>,
    pub source: Source,
    /// Webhooks only: deliver each event as a correlated signal.
    pub signal: Option<SignalSpec>,
}

/// `signal:` of a webhook trigger: each delivery becomes a signal routed by correlation
/// value to the runs waiting for it, instead of (without `workflow`) or as well as starting
/// a run; with `start_if_none` a run starts only when none waits (signal-with-start).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SignalSpec {
    #[serde(rename = "type")]
    pub signal_type: String,
    /// A template over `event`, e.g. `{{ event.body.orderId }}`.
    pub correlate: String,
    /// A template mapping over `event`; default the request body.
    pub payload: Option<Value>,
    #[serde(default)]
    pub start_if_none: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Webhook(Webhook),
    Schedule(Schedule),
    Poll(Poll),
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Webhook(_) => "webhook",
            Source::Schedule(_) => "schedule",
            Source::Poll(_) => "poll",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Webhook {
    pub endpoint: String,
    pub schema: Option<Value>,
    pub signature: Option<Signature>,
    pub idempotency: Option<Idempotency>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Signature {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub header: Option<String>,
    pub secret: String,
    /// Sign `{timestamp}.{body}` and refuse timestamps too far from now: bounds replays.
    pub timestamp: Option<SignedTimestamp>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SignedTimestamp {
    /// Default `X-Signature-Timestamp`.
    pub header: Option<String>,
    /// A duration; default `5m`.
    pub tolerance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Idempotency {
    pub header: Option<String>,
    pub field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Schedule {
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub every: Option<String>,
    pub missed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Poll {
    pub url: String,
    pub interval: String,
    #[serde(default)]
    pub headers: serde_json::Map<String, Value>,
    pub items: Option<String>,
    pub key: String,
    pub cursor: Option<String>,
}

impl Trigger {
    /// Read a trigger from its document; `None` when its shape is wrong (lint says why).
    pub fn from_value(v: &Value) -> Option<Trigger> {
        let sources: Vec<Source> = [
            v.get("webhook")
                .and_then(|w| Webhook::deserialize(w).ok())
                .map(Source::Webhook),
            v.get("schedule")
                .and_then(|w| Schedule::deserialize(w).ok())
                .map(Source::Schedule),
            v.get("poll")
                .and_then(|w| Poll::deserialize(w).ok())
                .map(Source::Poll),
        ]
        .into_iter()
        .flatten()
        .collect();
        let [source] = <[Source; 1]>::try_from(sources).ok()?;
        Some(Trigger {
            name: v.get("trigger")?.as_str()?.to_string(),
            workflow: match v.get("workflow") {
                Some(w) => w.as_str()?.to_string(),
                None if v.get("signal").is_some() => String::new(),
                None => return None,
            },
            enabled: v.get("enabled").and_then(Value::as_bool).unwrap_or(true),
            requires: v
                .pointer("/requires/secrets")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            transform: v.get("transform").cloned(),
            signal: match v.get("signal") {
                Some(s) => Some(SignalSpec::deserialize(s).ok()?),
                None => None,
            },
            source,
        })
    }

    /// The label history shows: "webhook signup", "schedule weekly".
    pub fn label(&self) -> String {
        format!("{} {}", self.source.kind(), self.name)
    }
}

/// Whether a YAML document is a trigger rather than a workflow.
pub fn is_trigger(doc: &Value) -> bool {
    doc.get("trigger").is_some() && doc.get("steps").is_none()
}
