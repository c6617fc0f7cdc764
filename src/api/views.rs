//! How runs, steps, definitions and hooks look on the wire. Each shape is a type that both
//! serializes the answer and derives its OpenAPI schema (`ToSchema`), so the document at
//! `/openapi.json` is the shape handlers send. The functions returning `Value`/`Map` are the
//! same views for callers that add fields.

use std::collections::HashMap;

use indexmap::IndexMap;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::engine::Compiled;
use crate::model::{RunStatus, StepStatus};
use crate::store::{
    DefinitionRecord, EventRecord, HookKind, HookRecord, HookStatus, RunRecord, StepRecord,
};

/// `2026-04-02T12:00:00.000Z`, as in the seeds.
pub fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A time in a view: written as [`time`] on the wire, kept typed for the web UI, which
/// renders the same views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub Timestamp);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

fn opt_time(t: Option<Timestamp>) -> Option<Time> {
    t.map(Time)
}

fn duration_ms(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => {
            Some(i64::try_from(b.duration_since(a).as_millis()).unwrap_or(i64::MAX))
        }
        _ => None,
    }
}

/// A typed view as a JSON object, for callers that add fields.
fn object(v: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Seed 003's `pendingAction`: what a PAUSED or WAITING run waits for. The engine builds
/// it (`engine::state`); this type documents it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct PendingAction {
    /// The suspended step.
    step: String,
    /// The step's type: `approval`, `external_event` or `wait`.
    #[schema(example = "approval")]
    r#type: String,
    #[schema(example = "Approve the refund?")]
    message: Option<String>,
    /// The decisions an approval takes.
    options: Option<Vec<String>>,
    /// The signal an `external_event` step waits for.
    signal_type: Option<String>,
    /// The JSON Schema its payload must match.
    #[schema(value_type = Option<Object>)]
    schema: Option<Value>,
    /// When a `wait` step wakes up.
    #[schema(format = DateTime)]
    until: Option<String>,
}

/// What a suspended run waits on, labelled as in seed 000's run history.
#[derive(Serialize, ToSchema)]
pub struct WaitingOn {
    /// `Waiting for approval` (approval), `Waiting on hook` (external_event) or
    /// `Sleeping` (wait).
    #[schema(example = "Waiting on hook")]
    pub label: &'static str,
    #[schema(value_type = String, required = true)]
    pub step: Option<Value>,
    #[schema(example = "approval")]
    pub r#type: String,
    #[schema(format = DateTime, required = true)]
    pub until: Option<String>,
}

/// The run as listed and created.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Run)]
pub struct RunView {
    #[schema(pattern = "^wfrun_")]
    pub id: String,
    pub workspace_id: String,
    /// The exact definition version the run is pinned to.
    #[schema(pattern = "^wfdef_")]
    pub definition_id: String,
    pub definition_slug: String,
    pub status: RunStatus,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = Value, required = true)]
    pub output: Option<Value>,
    #[schema(value_type = Value, required = true)]
    pub error: Option<Value>,
    #[schema(required = true)]
    pub idempotency_key: Option<String>,
    /// Position of the current step in plan order.
    pub current_step_index: i64,
    /// 1, plus one per retry of the whole run.
    pub attempt: i64,
    #[schema(value_type = Option<PendingAction>, required = true)]
    pub pending_action: Option<Value>,
    #[schema(required = true)]
    pub waiting_on: Option<WaitingOn>,
    #[schema(required = true)]
    pub parent_run_id: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Time,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Time,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub started_at: Option<Time>,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub finished_at: Option<Time>,
    /// From creation to start.
    #[schema(required = true)]
    pub queue_ms: Option<i64>,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
}

impl RunView {
    pub fn new(r: &RunRecord) -> Self {
        RunView {
            id: r.id.clone(),
            workspace_id: r.workspace_id.clone(),
            definition_id: r.definition_id.clone(),
            definition_slug: r.definition_slug.clone(),
            status: r.status,
            input: r.input.clone(),
            output: r.output.clone(),
            error: r.error.clone(),
            idempotency_key: r.idempotency_key.clone(),
            current_step_index: r.current_step_index,
            attempt: r.attempt,
            pending_action: r.pending_action.clone(),
            waiting_on: waiting_on(r),
            parent_run_id: r.parent_run_id.clone(),
            created_at: Time(r.created_at),
            updated_at: Time(r.updated_at),
            started_at: opt_time(r.started_at),
            finished_at: opt_time(r.finished_at),
            queue_ms: duration_ms(Some(r.created_at), r.started_at),
            duration_ms: duration_ms(r.started_at, r.finished_at),
        }
    }
}

/// The run as listed and created.
pub fn run(r: &RunRecord) -> Map<String, Value> {
    object(&RunView::new(r))
}

/// What a suspended run waits on, labelled as in seed 000's run history: an external event
/// waits on its hook ("Waiting on hook"), a `wait` step sleeps until its due time
/// ("Sleeping"), an approval waits for a person ("Waiting for approval"). `None` while the
/// run is not suspended.
fn waiting_on(r: &RunRecord) -> Option<WaitingOn> {
    let action = r
        .pending_action
        .as_ref()
        .filter(|_| r.status.is_suspended())?;
    let step_type = action
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let label = match step_type {
        "approval" => "Waiting for approval",
        "external_event" => "Waiting on hook",
        "wait" => "Sleeping",
        _ => "Waiting",
    };
    let until = action
        .get("until")
        .and_then(Value::as_str)
        .map(|u| u.parse::<Timestamp>().map_or_else(|_| u.to_string(), time));
    Some(WaitingOn {
        label,
        step: action.get("step").cloned(),
        r#type: step_type.to_string(),
        until,
    })
}

/// One attempt of a step.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = StepAttempt)]
pub struct AttemptView {
    pub attempt: i64,
    /// The run's attempt (1, plus one per retry of the run) this step attempt belongs to.
    pub run_attempt: i64,
    pub status: StepStatus,
    #[schema(value_type = Value, required = true)]
    pub input: Option<Value>,
    #[schema(value_type = Value, required = true)]
    pub output: Option<Value>,
    #[schema(value_type = Value, required = true)]
    pub error: Option<Value>,
    /// Tokens and time of an agent step.
    #[schema(value_type = Value, required = true)]
    pub usage: Option<Value>,
    /// What the executor reports besides its output (HTTP status, …).
    #[schema(value_type = Value, required = true)]
    pub meta: Option<Value>,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub started_at: Option<Time>,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub finished_at: Option<Time>,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
}

impl AttemptView {
    pub fn new(s: &StepRecord) -> Self {
        AttemptView {
            attempt: s.attempt,
            run_attempt: s.run_attempt,
            status: s.status,
            input: s.input.clone(),
            output: s.output.clone(),
            error: s.error.clone(),
            usage: s.usage.clone(),
            meta: s.meta.clone(),
            started_at: opt_time(s.started_at),
            finished_at: opt_time(s.finished_at),
            duration_ms: duration_ms(s.started_at, s.finished_at),
        }
    }
}

/// A step of the definition with its latest attempt and all attempts.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Step)]
pub struct StepView {
    pub name: String,
    /// Position in plan order.
    pub index: usize,
    #[schema(example = "action")]
    pub r#type: &'static str,
    pub status: StepStatus,
    /// The latest attempt's number (0: not started).
    pub attempt: i64,
    #[schema(value_type = Value, required = true)]
    pub output: Option<Value>,
    #[schema(value_type = Value, required = true)]
    pub error: Option<Value>,
    #[schema(value_type = Value, required = true)]
    pub usage: Option<Value>,
    #[schema(value_type = Value, required = true)]
    pub meta: Option<Value>,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub started_at: Option<Time>,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub finished_at: Option<Time>,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    pub attempts: Vec<AttemptView>,
}

/// Every step of the definition in plan order, with its latest attempt and all attempts.
pub fn step_views(def: &Compiled, records: &[StepRecord]) -> Vec<StepView> {
    let mut by_step: HashMap<&str, Vec<&StepRecord>> = HashMap::new();
    for r in records {
        by_step.entry(r.step_id.as_str()).or_default().push(r);
    }
    def.plan
        .order
        .iter()
        .enumerate()
        .map(|(index, &i)| {
            let step = &def.plan.definition.steps[i];
            let attempts = by_step.remove(step.id.as_str()).unwrap_or_default();
            let last = attempts.iter().max_by_key(|r| r.attempt);
            StepView {
                name: step.id.clone(),
                index,
                r#type: step.kind.type_name(),
                status: last.map_or(StepStatus::Pending, |r| r.status),
                attempt: last.map_or(0, |r| r.attempt),
                output: last.and_then(|r| r.output.clone()),
                error: last.and_then(|r| r.error.clone()),
                usage: last.and_then(|r| r.usage.clone()),
                meta: last.and_then(|r| r.meta.clone()),
                started_at: opt_time(last.and_then(|r| r.started_at)),
                finished_at: opt_time(last.and_then(|r| r.finished_at)),
                duration_ms: duration_ms(
                    last.and_then(|r| r.started_at),
                    last.and_then(|r| r.finished_at),
                ),
                attempts: attempts.iter().map(|r| AttemptView::new(r)).collect(),
            }
        })
        .collect()
}

/// Every step of the definition in plan order, with its latest attempt and all attempts.
pub fn steps(def: &Compiled, records: &[StepRecord]) -> Vec<Value> {
    step_views(def, records)
        .iter()
        .map(|s| Value::Object(object(s)))
        .collect()
}

/// One entry of a run's trace.
#[derive(Serialize, ToSchema)]
pub struct TraceEvent {
    #[schema(value_type = String, format = DateTime)]
    pub at: Time,
    #[schema(value_type = String, example = "step.completed")]
    pub kind: crate::model::EventKind,
    #[schema(required = true)]
    pub step: Option<String>,
    #[schema(value_type = Value)]
    pub data: Value,
}

pub fn trace_events(events: &[EventRecord]) -> Vec<TraceEvent> {
    events
        .iter()
        .map(|e| TraceEvent {
            at: Time(e.at),
            kind: e.kind,
            step: e.step_id.clone(),
            data: e.data.clone(),
        })
        .collect()
}

pub fn trace(events: &[EventRecord]) -> Vec<Value> {
    trace_events(events)
        .iter()
        .map(|e| Value::Object(object(e)))
        .collect()
}

/// A definition version.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Definition)]
pub struct DefinitionView {
    /// The exact version (`wfdef_…`).
    #[schema(pattern = "^wfdef_")]
    pub id: String,
    /// The definition's slug (its `id:` in YAML).
    pub definition_id: String,
    pub version: i64,
    #[schema(required = true)]
    pub label: Option<String>,
    pub hash: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Time,
}

impl DefinitionView {
    pub fn new(d: &DefinitionRecord) -> Self {
        DefinitionView {
            id: d.version_id.clone(),
            definition_id: d.slug.clone(),
            version: d.version,
            label: d.label.clone(),
            hash: d.hash.clone(),
            created_at: Time(d.created_at),
        }
    }
}

pub fn definition(d: &DefinitionRecord) -> Value {
    Value::Object(object(&DefinitionView::new(d)))
}

/// A hook: the token that resumes a suspended step.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Hook)]
pub struct HookView {
    pub token: String,
    pub status: HookStatus,
    pub step: String,
    pub r#type: HookKind,
    /// POST JSON here, or open it with query parameters.
    #[schema(format = "uri")]
    pub resume_url: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub resumed_at: Option<String>,
}

impl HookView {
    pub fn new(h: &HookRecord, base_url: &str) -> Self {
        HookView {
            token: h.token.clone(),
            status: h.status,
            step: h.step_id.clone(),
            r#type: h.kind,
            resume_url: format!(
                "{}/v1/hooks/{}/resume",
                base_url.trim_end_matches('/'),
                h.token
            ),
            created_at: time(h.created_at),
            resumed_at: h.resumed_at.map(time),
        }
    }
}

pub fn hook(h: &HookRecord, base_url: &str) -> Value {
    Value::Object(object(&HookView::new(h, base_url)))
}

/// Tokens, calls and time of one model, and its cost where a price is configured.
#[derive(Serialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelUsage {
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// Usage of a run, per model.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub models: IndexMap<String, ModelUsage>,
    /// The total cost; `null` when no model used has a price.
    #[schema(required = true)]
    pub cost_usd: Option<f64>,
}

/// Token counts and durations per model, and a cost line where prices are configured
/// (`STEPWISE_PRICES`: `{"model": {"input": USD per 1M tokens, "output": …}}`).
pub fn usage_view(steps: &[StepRecord], prices: &Value) -> Usage {
    let price = |p: &Value, prompt: f64, completion: f64| {
        prompt * p["input"].as_f64().unwrap_or(0.0) / 1e6
            + completion * p["output"].as_f64().unwrap_or(0.0) / 1e6
    };
    let count = |u: &Value, k: &str| u[k].as_u64().unwrap_or(0);
    let mut models: IndexMap<String, ModelUsage> = IndexMap::new();
    let mut cost = 0.0;
    let mut priced = false;
    for s in steps {
        let Some(u) = &s.usage else { continue };
        let model = u["model"].as_str().unwrap_or("unknown").to_string();
        let e = models.entry(model.clone()).or_default();
        e.prompt_tokens += count(u, "promptTokens");
        e.completion_tokens += count(u, "completionTokens");
        e.total_tokens += count(u, "totalTokens");
        e.duration_ms += count(u, "durationMs");
        // An agent step's record sums the model calls of its attempt.
        e.calls += u["calls"].as_u64().unwrap_or(1);
        if let Some(p) = prices.get(&model) {
            cost += price(
                p,
                u["promptTokens"].as_f64().unwrap_or(0.0),
                u["completionTokens"].as_f64().unwrap_or(0.0),
            );
            priced = true;
        }
    }
    for (model, e) in models.iter_mut() {
        if let Some(p) = prices.get(model) {
            e.cost_usd = Some(price(p, e.prompt_tokens as f64, e.completion_tokens as f64));
        }
    }
    Usage {
        models,
        cost_usd: priced.then_some(cost),
    }
}

pub fn usage(steps: &[StepRecord], prices: &Value) -> Value {
    json!(usage_view(steps, prices))
}

/// A run with its steps and trigger (`GET /v1/workflow-runs/{id}`).
#[derive(Serialize, ToSchema)]
#[schema(as = RunDetail)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunView,
    pub steps: Vec<StepView>,
    /// How the run started: `{kind, label, actor, …}`.
    #[schema(value_type = Object)]
    pub trigger: Value,
    /// Who started it.
    #[schema(value_type = Value, required = true)]
    pub actor: Value,
    /// With `include=usage` or `include=steps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// With `include=trace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<TraceEvent>>,
}

/// A run in the history (seed 002): the run with its kind and trigger.
#[derive(Serialize, ToSchema)]
#[schema(as = HistoryRun)]
pub struct HistoryRun {
    #[serde(flatten)]
    pub run: RunView,
    /// Always `workflow`.
    #[schema(example = "workflow")]
    pub kind: &'static str,
    #[schema(value_type = Object)]
    pub trigger: Value,
}

impl HistoryRun {
    pub fn new(r: &RunRecord) -> Self {
        HistoryRun {
            run: RunView::new(r),
            kind: "workflow",
            trigger: r.trigger.clone(),
        }
    }
}

/// A definition version with its source and every version of its slug.
#[derive(Serialize, ToSchema)]
#[schema(as = DefinitionDetail)]
pub struct DefinitionDetail {
    #[serde(flatten)]
    pub definition: DefinitionView,
    pub source: String,
    pub versions: Vec<DefinitionView>,
}
