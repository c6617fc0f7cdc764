//! How runs, steps, definitions and hooks look on the wire.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::engine::Compiled;
use crate::model::StepStatus;
use crate::store::{DefinitionRecord, EventRecord, HookRecord, RunRecord, StepRecord};

/// `2026-04-02T12:00:00.000Z`, as in the seeds.
pub fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn opt_time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(time(t)))
}

fn duration_ms(a: Option<Timestamp>, b: Option<Timestamp>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) => json!(b.duration_since(a).as_millis()),
        _ => Value::Null,
    }
}

/// The run as listed and created.
pub fn run(r: &RunRecord) -> Map<String, Value> {
    let v = json!({
        "id": r.id,
        "workspaceId": r.workspace_id,
        "definitionId": r.definition_id,
        "definitionSlug": r.definition_slug,
        "status": r.status,
        "input": r.input,
        "output": r.output,
        "error": r.error,
        "idempotencyKey": r.idempotency_key,
        "currentStepIndex": r.current_step_index,
        "attempt": r.attempt,
        "pendingAction": r.pending_action,
        "waitingOn": waiting_on(r),
        "parentRunId": r.parent_run_id,
        "createdAt": time(r.created_at),
        "updatedAt": time(r.updated_at),
        "startedAt": opt_time(r.started_at),
        "finishedAt": opt_time(r.finished_at),
        "queueMs": duration_ms(Some(r.created_at), r.started_at),
        "durationMs": duration_ms(r.started_at, r.finished_at),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// What a suspended run waits on, labelled as in seed 000's run history: an approval or an
/// external event waits on its hook ("Waiting on hook"), a `wait` step sleeps until its due
/// time ("Sleeping"). `null` while the run is not suspended.
fn waiting_on(r: &RunRecord) -> Value {
    let Some(action) = r
        .pending_action
        .as_ref()
        .filter(|_| r.status.is_suspended())
    else {
        return Value::Null;
    };
    let step_type = action
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let label = match step_type {
        "approval" | "external_event" => "Waiting on hook",
        "wait" => "Sleeping",
        _ => "Waiting",
    };
    let until = action
        .get("until")
        .and_then(Value::as_str)
        .map(|u| u.parse::<Timestamp>().map_or_else(|_| u.to_string(), time));
    json!({
        "label": label,
        "step": action.get("step"),
        "type": step_type,
        "until": until,
    })
}

fn attempt(s: &StepRecord) -> Value {
    json!({
        "attempt": s.attempt,
        "status": s.status,
        "input": s.input,
        "output": s.output,
        "error": s.error,
        "usage": s.usage,
        "meta": s.meta,
        "startedAt": opt_time(s.started_at),
        "finishedAt": opt_time(s.finished_at),
        "durationMs": duration_ms(s.started_at, s.finished_at),
    })
}

/// Every step of the definition in plan order, with its latest attempt and all attempts.
pub fn steps(def: &Compiled, records: &[StepRecord]) -> Vec<Value> {
    def.plan
        .order
        .iter()
        .enumerate()
        .map(|(index, &i)| {
            let step = &def.plan.definition.steps[i];
            let attempts: Vec<&StepRecord> = records.iter().filter(|r| r.step_id == step.id).collect();
            let last = attempts.iter().max_by_key(|r| r.attempt);
            json!({
                "name": step.id,
                "index": index,
                "type": step.kind.type_name(),
                "status": last.map_or(StepStatus::Pending, |r| r.status),
                "attempt": last.map_or(0, |r| r.attempt),
                "output": last.and_then(|r| r.output.clone()),
                "error": last.and_then(|r| r.error.clone()),
                "usage": last.and_then(|r| r.usage.clone()),
                "meta": last.and_then(|r| r.meta.clone()),
                "startedAt": opt_time(last.and_then(|r| r.started_at)),
                "finishedAt": opt_time(last.and_then(|r| r.finished_at)),
                "durationMs": duration_ms(last.and_then(|r| r.started_at), last.and_then(|r| r.finished_at)),
                "attempts": attempts.iter().map(|r| attempt(r)).collect::<Vec<_>>(),
            })
        })
        .collect()
}

pub fn trace(events: &[EventRecord]) -> Vec<Value> {
    events
        .iter()
        .map(|e| json!({"at": time(e.at), "kind": e.kind, "step": e.step_id, "data": e.data}))
        .collect()
}

pub fn definition(d: &DefinitionRecord) -> Value {
    json!({
        "id": d.version_id,
        "definitionId": d.slug,
        "version": d.version,
        "label": d.label,
        "hash": d.hash,
        "createdAt": time(d.created_at),
    })
}

pub fn hook(h: &HookRecord, base_url: &str) -> Value {
    json!({
        "token": h.token,
        "status": h.status,
        "step": h.step_id,
        "type": h.kind,
        "resumeUrl": format!("{}/v1/hooks/{}/resume", base_url.trim_end_matches('/'), h.token),
        "createdAt": time(h.created_at),
        "resumedAt": opt_time(h.resumed_at),
    })
}

/// Token counts and durations per model, and a cost line where prices are configured
/// (`STEPWISE_PRICES`: `{"model": {"input": USD per 1M tokens, "output": …}}`).
pub fn usage(steps: &[StepRecord], prices: &Value) -> Value {
    let mut models: Map<String, Value> = Map::new();
    let mut cost = 0.0;
    let mut priced = false;
    for s in steps {
        let Some(u) = &s.usage else { continue };
        let model = u["model"].as_str().unwrap_or("unknown").to_string();
        let e = models.entry(model.clone()).or_insert_with(|| {
            json!({"calls": 0, "promptTokens": 0, "completionTokens": 0, "totalTokens": 0, "durationMs": 0})
        });
        for k in [
            "promptTokens",
            "completionTokens",
            "totalTokens",
            "durationMs",
        ] {
            e[k] = json!(e[k].as_u64().unwrap_or(0) + u[k].as_u64().unwrap_or(0));
        }
        e["calls"] = json!(e["calls"].as_u64().unwrap_or(0) + 1);
        if let Some(p) = prices.get(&model) {
            let c = u["promptTokens"].as_f64().unwrap_or(0.0) * p["input"].as_f64().unwrap_or(0.0)
                / 1e6
                + u["completionTokens"].as_f64().unwrap_or(0.0)
                    * p["output"].as_f64().unwrap_or(0.0)
                    / 1e6;
            cost += c;
            priced = true;
        }
    }
    for (model, e) in models.iter_mut() {
        if let Some(p) = prices.get(model) {
            e["costUsd"] = json!(
                e["promptTokens"].as_f64().unwrap_or(0.0) * p["input"].as_f64().unwrap_or(0.0)
                    / 1e6
                    + e["completionTokens"].as_f64().unwrap_or(0.0)
                        * p["output"].as_f64().unwrap_or(0.0)
                        / 1e6
            );
        }
    }
    json!({"models": models, "costUsd": if priced { json!(cost) } else { Value::Null }})
}
