//! Running triggers: the loaded set, and the tick that fires schedules (`schedule.rs`) and
//! polls (here). Webhook requests come in through `webhook.rs`. Every event becomes a run
//! through the engine, with an idempotency key derived from the event, so a redelivered
//! webhook, a schedule fired again after a crash, or an item seen twice starts one run.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::KEY_PREFIX_POLL;
use super::model::{Poll, Source, Trigger};
use crate::engine::{CreateRun, Engine, EngineError};
use crate::store::RunRecord;
use crate::template;

/// Poll items skipped because the workflow refused them, remembered (newest last) so they
/// are not tried again at every poll.
const SKIPPED_KEPT: usize = 100;

pub struct Triggers {
    pub(super) engine: Engine,
    workspace_id: String,
    http: reqwest::Client,
    list: RwLock<Vec<Arc<Trigger>>>,
    /// Triggers being worked on: a slow poll must not run twice at once.
    busy: std::sync::Mutex<std::collections::HashSet<String>>,
    notes: super::status::Notes,
}

pub(super) type Result<T> = std::result::Result<T, EngineError>;

/// What `replace_all` did with each trigger it was given.
#[derive(Debug, Clone, PartialEq)]
pub enum Placed {
    /// New or changed; `inactive` says why it does not fire, if it does not.
    Loaded {
        inactive: Option<String>,
    },
    Unchanged,
    /// Its name or webhook endpoint was taken by the trigger at index `by`, given earlier.
    Refused {
        reason: String,
        by: usize,
    },
}

pub(super) fn add(t: Timestamp, d: Duration) -> Timestamp {
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
            notes: Default::default(),
        })
    }

    /// Add or replace (by name) a trigger. A webhook endpoint another trigger already
    /// serves is refused. `Some` says why the trigger is loaded but inactive.
    pub fn set(&self, t: Trigger) -> std::result::Result<Option<String>, String> {
        let (t, inactive) = self.admit(t);
        let mut list = self
            .list
            .write()
            .map_err(|_| "trigger list poisoned".to_string())?;
        if let Some(other) = list
            .iter()
            .find(|x| x.name != t.name && same_endpoint(x, &t))
        {
            return Err(endpoint_taken(&t, other));
        }
        list.retain(|x| x.name != t.name);
        list.push(Arc::new(t));
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(inactive)
    }

    /// Make the loaded triggers exactly `want` (e.g. what a folder declares now), in one step:
    /// a trigger not in `want` stops. Earlier entries take precedence: one whose name or
    /// webhook endpoint an earlier one has is refused. Returns what became of each entry and
    /// the names of the triggers stopped.
    pub fn replace_all(&self, want: Vec<Trigger>) -> (Vec<Placed>, Vec<String>) {
        let Ok(mut list) = self.list.write() else {
            return (Vec::new(), Vec::new());
        };
        let mut next: Vec<(usize, Arc<Trigger>)> = Vec::new();
        let mut placed = Vec::new();
        for (i, t) in want.into_iter().enumerate() {
            let (t, inactive) = self.admit(t);
            let taken = next.iter().find_map(|(j, x)| {
                if x.name == t.name {
                    Some((
                        *j,
                        format!("a trigger named `{}` is already loaded", t.name),
                    ))
                } else {
                    same_endpoint(x, &t).then(|| (*j, endpoint_taken(&t, x)))
                }
            });
            if let Some((by, reason)) = taken {
                placed.push(Placed::Refused { reason, by });
                continue;
            }
            placed.push(if list.iter().any(|x| **x == t) {
                Placed::Unchanged
            } else {
                Placed::Loaded { inactive }
            });
            next.push((i, Arc::new(t)));
        }
        let stopped = list
            .iter()
            .filter(|x| !next.iter().any(|(_, n)| n.name == x.name))
            .map(|x| x.name.clone())
            .collect();
        let mut next: Vec<Arc<Trigger>> = next.into_iter().map(|(_, t)| t).collect();
        next.sort_by(|a, b| a.name.cmp(&b.name));
        *list = next;
        (placed, stopped)
    }

    /// A trigger whose required secrets the server lacks is kept, disabled: it would only
    /// fail, or reach services nobody set up (the examples must not on a first run).
    fn admit(&self, mut t: Trigger) -> (Trigger, Option<String>) {
        let secrets = self.engine.secrets();
        let missing: Vec<&str> = t
            .requires
            .iter()
            .filter(|n| !secrets.has(&self.workspace_id, n))
            .map(String::as_str)
            .collect();
        if missing.is_empty() || !t.enabled {
            return (t, None);
        }
        let why = format!(
            "inactive until the secret{} {} {} set ({})",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            missing
                .iter()
                .map(|n| format!("STEPWISE_SECRET_{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        t.enabled = false;
        (t, Some(why))
    }

    pub fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    pub(super) fn notes(&self) -> &super::status::Notes {
        &self.notes
    }

    pub fn list(&self) -> Vec<Arc<Trigger>> {
        self.list.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Why a loaded trigger does not fire: the secrets it requires that the server lacks.
    pub fn inactive_reason(&self, name: &str) -> Option<String> {
        let t = self.list().into_iter().find(|t| t.name == name)?;
        let mut probe = (*t).clone();
        probe.enabled = true;
        self.admit(probe).1
    }

    /// A template scope: `name` bound to `value`, and `secrets`, this workspace's secrets
    /// (converted once per workspace by the engine).
    pub(super) fn scope(&self, name: &str, value: &Value) -> minijinja::Value {
        let secrets = self.engine.secrets().template(&self.workspace_id);
        minijinja::Value::from(std::collections::BTreeMap::from([
            (name.to_string(), template::context(value)),
            ("secrets".to_string(), secrets),
        ]))
    }

    pub(super) fn input(&self, t: &Trigger, event: &Value, default: Value) -> Result<Value> {
        let Some(transform) = &t.transform else {
            return Ok(default);
        };
        let ctx = self.scope("event", event);
        template::render_value(transform, &ctx, "/transform").map_err(|e| {
            EngineError::validation(
                format!("trigger `{}`: the transform failed: {}", t.name, e.message),
                json!({"field": "transform"}),
            )
        })
    }

    /// Start a run of the trigger's workflow for a schedule or a poll, counted in
    /// `stepwise_trigger_firings_total` or `stepwise_trigger_errors_total`.
    pub(super) async fn start(
        &self,
        t: &Trigger,
        input: Value,
        key: Option<String>,
        trigger: Value,
    ) -> Result<(RunRecord, bool)> {
        let r = self.create(t, input, key, trigger).await;
        self.count(t, r.is_ok());
        r
    }

    /// Start a run without counting it: a webhook counts each delivery once, whatever it
    /// came to (a run, a signal, both, or an error), in `Triggers::webhook`.
    pub(super) async fn create(
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

    /// One firing (`ok`) or one error of the trigger, in the metrics.
    pub(super) fn count(&self, t: &Trigger, ok: bool) {
        let m = self.engine.metrics();
        let family = if ok {
            &m.trigger_firings
        } else {
            &m.trigger_errors
        };
        crate::metrics::Metrics::inc(family, self.trigger_labels(t));
    }

    fn trigger_labels(&self, t: &Trigger) -> crate::metrics::Labels {
        vec![
            ("trigger", t.name.clone()),
            ("kind", t.source.kind().to_string()),
        ]
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
                if !this.hold(&t.name).await {
                    if let Ok(mut b) = this.busy.lock() {
                        b.remove(&t.name);
                    }
                    return Ok(());
                }
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
                tracing::warn!(trigger = %name, "trigger failed: {}", self.engine.secrets().redact_str(&e.to_string()));
                self.note(&name, Err(&e)).await;
                failed.push((name, e));
            }
        }
        failed
    }

    /// Whether this process fires the trigger now: on a store that several processes
    /// share, one holds each schedule and poll (renewed at every tick), so a schedule
    /// fires and a source is polled once, not once per process.
    async fn hold(&self, name: &str) -> bool {
        let store = self.engine.store().clone();
        let (ws, n) = (self.workspace_id.clone(), name.to_string());
        match crate::engine::blocking(move || store.claim_trigger(&ws, &n)).await {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                tracing::warn!(trigger = %name, "cannot hold the trigger: {e}");
                false
            }
            Err(e) => {
                tracing::warn!(trigger = %name, "cannot hold the trigger: {e}");
                false
            }
        }
    }

    pub(super) async fn state(&self, name: &str) -> Result<Value> {
        let store = self.engine.store().clone();
        let (ws, n) = (self.workspace_id.clone(), name.to_string());
        Ok(
            crate::engine::blocking(move || store.trigger_state(&ws, &n))
                .await??
                .unwrap_or(Value::Null),
        )
    }

    /// Store a trigger's state; its errors may quote URLs and bodies, so secrets go first.
    pub(super) async fn save(&self, name: &str, state: Value) -> Result<()> {
        let state = self.engine.secrets().redact(&state);
        let store = self.engine.store().clone();
        let (ws, n) = (self.workspace_id.clone(), name.to_string());
        crate::engine::blocking(move || store.put_trigger_state(&ws, &n, &state)).await??;
        Ok(())
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
        let mut skipped: Vec<Value> = state
            .get("skipped")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let known: HashSet<String> = skipped
            .iter()
            .filter_map(|s| s.get("key").and_then(Value::as_str).map(str::to_string))
            .collect();
        match self.poll_once(t, p, &cursor, now, &known).await {
            Ok(polled) => {
                next_state["cursor"] = polled.cursor;
                next_state["lastStarted"] = json!(polled.started);
                if let Some((key, e)) = polled.skipped.first() {
                    let more = polled.skipped.len() - 1;
                    let text = format!(
                        "item `{key}` was skipped: {}{}",
                        last_error_text(e),
                        if more > 0 {
                            format!(" (and {more} more, see `skipped`)")
                        } else {
                            String::new()
                        }
                    );
                    tracing::warn!(trigger = %t.name, "{}", self.engine.secrets().redact_str(&text));
                    next_state["lastError"] = json!(text);
                    next_state["lastErrorAt"] = json!(now.to_string());
                }
                skipped.extend(polled.skipped.iter().map(|(key, e)| {
                    json!({"key": key, "error": last_error_text(e), "at": now.to_string()})
                }));
            }
            Err(e) => {
                crate::metrics::Metrics::inc(
                    &self.engine.metrics().trigger_errors,
                    self.trigger_labels(t),
                );
                tracing::warn!(trigger = %t.name, "poll failed: {}", self.engine.secrets().redact_str(&e.to_string()));
                next_state["lastError"] = json!(last_error_text(&e));
                next_state["lastErrorAt"] = json!(now.to_string());
            }
        }
        if !skipped.is_empty() {
            skipped.drain(..skipped.len().saturating_sub(SKIPPED_KEPT));
            next_state["skipped"] = Value::Array(skipped);
        }
        self.save(&t.name, next_state).await
    }

    /// Start the run for one poll item. A `Validation` error is the item's own fault (its
    /// transform fails, or the workflow's input schema refuses it).
    async fn poll_item(
        &self,
        t: &Trigger,
        item: &Value,
        key: &str,
        cursor: &Value,
        now: Timestamp,
    ) -> Result<bool> {
        let event =
            json!({"kind": "poll", "item": item, "cursor": cursor, "polledAt": now.to_string()});
        let input = self.input(t, &event, item.clone())?;
        let context = json!({"kind": "poll", "name": t.name, "label": t.label(), "itemKey": key, "event": event});
        let (_, created) = self
            .start(
                t,
                input,
                Some(format!("{}{}:{key}", KEY_PREFIX_POLL, t.name)),
                context,
            )
            .await?;
        Ok(created)
    }

    async fn poll_once(
        &self,
        t: &Trigger,
        p: &Poll,
        cursor: &Value,
        now: Timestamp,
        known_bad: &HashSet<String>,
    ) -> Result<Polled> {
        let ctx = self.scope("cursor", cursor);
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
        let mut skipped = Vec::new();
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
            if known_bad.contains(&key) {
                continue;
            }
            // One refused item must not hold back the others, nor, by failing the poll and
            // keeping the cursor, every later poll: it is skipped, and remembered.
            match self.poll_item(t, item, &key, cursor, now).await {
                Ok(created) => started += usize::from(created),
                Err(e @ EngineError::Validation { .. }) => skipped.push((key, e)),
                Err(e) => return Err(e),
            }
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
        Ok(Polled {
            cursor: new_cursor,
            started,
            skipped,
        })
    }
}

/// What one poll did.
struct Polled {
    cursor: Value,
    started: usize,
    /// Items the workflow refused, by key.
    skipped: Vec<(String, EngineError)>,
}

/// The text a trigger's state keeps for an error (`lastError`, `skipped[].error`): the one
/// place that turns errors into stored, listed text. A refused input says which fields.
pub(super) fn last_error_text(e: &EngineError) -> String {
    let problems: Vec<String> = match e {
        EngineError::Validation { details, .. } => details
            .get("problems")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        let at = p.get("path").and_then(Value::as_str).unwrap_or_default();
                        let msg = p.get("message").and_then(Value::as_str).unwrap_or_default();
                        if at.is_empty() {
                            msg.to_string()
                        } else {
                            format!("{at}: {msg}")
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if problems.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {}", problems.join("; "))
    }
}

fn same_endpoint(a: &Trigger, b: &Trigger) -> bool {
    matches!((&a.source, &b.source), (Source::Webhook(x), Source::Webhook(y)) if x.endpoint == y.endpoint)
}

fn endpoint_taken(t: &Trigger, by: &Trigger) -> String {
    let endpoint = match &t.source {
        Source::Webhook(w) => w.endpoint.as_str(),
        _ => "",
    };
    format!(
        "webhook endpoint `{endpoint}` is already served by trigger `{}`",
        by.name
    )
}
