//! What each trigger last did, as its stored state tells it: the next and last firing and
//! the last error, the same for every kind (the trigger list of the API and the web UI's
//! Triggers page read [`Status::of`]). Webhooks write theirs here ([`Triggers::note`]);
//! schedules and polls keep theirs with their own state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::model::Source;
use super::runner::{Result, Triggers};
use crate::engine::EngineError;

/// A refused webhook delivery is written at most this often per trigger: anyone can post
/// to a webhook, and a flood of bad requests must not become a flood of writes.
const ERROR_WRITES_EVERY: Duration = Duration::from_secs(1);

/// A trigger's firings, read from its state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// When it fires next (schedules: the next due time; polls: the next poll).
    pub next_firing: Option<String>,
    /// When it fired last (schedules: the due time; polls: the poll; webhooks: the last
    /// delivery accepted).
    pub last_firing: Option<String>,
    /// Why the last firing (or, for webhooks, the last refused delivery) failed.
    pub last_error: Option<String>,
    /// When that was.
    pub last_error_at: Option<String>,
}

impl Status {
    pub fn of(source: &Source, state: Option<&Value>) -> Status {
        let text = |k: &str| {
            state
                .and_then(|s| s.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (next, last) = match source {
            Source::Schedule(_) => ("nextDue", "lastDue"),
            Source::Poll(_) => ("nextPoll", "lastPolledAt"),
            Source::Webhook(_) => ("", "lastDeliveryAt"),
        };
        Status {
            next_firing: text(next),
            last_firing: text(last),
            last_error: text("lastError"),
            last_error_at: text("lastErrorAt"),
        }
    }
}

/// When each trigger's last refused delivery was written (see [`ERROR_WRITES_EVERY`]).
#[derive(Default)]
pub(super) struct Notes {
    lock: tokio::sync::Mutex<HashMap<String, Instant>>,
}

impl Triggers {
    /// Record what a webhook delivery or a failed firing came to in the trigger's state,
    /// keeping what else it holds: `lastDeliveryAt` for an accepted delivery, `lastError`
    /// and `lastErrorAt` for a refused one or a failure.
    pub(super) async fn note(&self, name: &str, outcome: std::result::Result<(), &EngineError>) {
        let mut written = self.notes().lock.lock().await;
        if outcome.is_err()
            && written
                .get(name)
                .is_some_and(|at| at.elapsed() < ERROR_WRITES_EVERY)
        {
            return;
        }
        let now = self.engine.clock().now().to_string();
        let r: Result<()> = async {
            let mut state = match self.state(name).await? {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            match outcome {
                Ok(()) => {
                    state.insert("lastDeliveryAt".into(), json!(now));
                }
                Err(e) => {
                    state.insert("lastError".into(), json!(super::runner::last_error_text(e)));
                    state.insert("lastErrorAt".into(), json!(now));
                }
            }
            self.save(name, Value::Object(state)).await
        }
        .await;
        match r {
            Ok(()) if outcome.is_err() => {
                written.insert(name.to_string(), Instant::now());
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(trigger = %name, "cannot record what the trigger did: {e}"),
        }
    }
}
