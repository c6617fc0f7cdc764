//! The interceptor `stepwise test` gives the engine: mocked steps return their mocked
//! outcome (one per attempt), `transform`/`log`/`workflow` run for real, and any other
//! executor (http, agent, unknown actions) is refused unless the case lists it in `live`.
//! An agent mock with `toolCalls` lets the step's real loop run: the interceptor answers
//! each model call (`model_turn`) with the next tool call, whose child run the engine starts
//! as usual (its steps mocked by id like any other), then with the answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::model::{Case, MockOutcome};
use crate::engine::{Intercepted, ModelTurnCall, StepCall, StepIntercept};
use crate::exec::{StepError, Success};

/// Actions that never leave the process: they run for real unless mocked.
const LOCAL: &[&str] = &["transform", "log", "workflow"];

pub(super) struct CaseMocks {
    pub mocks: BTreeMap<String, Vec<MockOutcome>>,
    pub live: Vec<String>,
}

impl CaseMocks {
    pub fn of(case: &Case) -> Self {
        Self {
            mocks: case.mocks.clone(),
            live: case.live.clone(),
        }
    }
}

#[derive(Default)]
struct State {
    /// Run id → case index (root runs from their trigger, children from their parent).
    runs: HashMap<String, usize>,
    /// Calls so far per (run, step): the next attempt's mock.
    calls: HashMap<(String, String), usize>,
    /// Per case: unmocked steps that were refused.
    unmocked: HashMap<usize, Vec<String>>,
    /// (run, agent step) → its `toolCalls` mock, for the model calls of its loop.
    loops: HashMap<(String, String), MockOutcome>,
}

pub(super) struct Mocks {
    cases: Vec<CaseMocks>,
    state: Mutex<State>,
}

impl Mocks {
    pub fn new(cases: Vec<CaseMocks>) -> Self {
        Self {
            cases,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The case a run belongs to, once one of its steps started.
    pub fn case_of(&self, run_id: &str) -> Option<usize> {
        self.lock().runs.get(run_id).copied()
    }

    /// Refusals of a case: "step `x` (http) is not mocked …".
    pub fn unmocked(&self, case: usize) -> Vec<String> {
        self.lock().unmocked.get(&case).cloned().unwrap_or_default()
    }
}

impl StepIntercept for Mocks {
    fn call(&self, call: &StepCall<'_>) -> Intercepted {
        let mut st = self.lock();
        let case = match call.trigger.get("case").and_then(Value::as_u64) {
            Some(c) if call.parent_run_id.is_none() => usize::try_from(c).ok(),
            _ => call.parent_run_id.and_then(|p| st.runs.get(p).copied()),
        };
        let Some(case) = case.filter(|&c| c < self.cases.len()) else {
            return Intercepted::Proceed;
        };
        st.runs.insert(call.run_id.to_string(), case);
        let spec = &self.cases[case];
        if let Some(list) = spec.mocks.get(call.step_id) {
            let n = st
                .calls
                .entry((call.run_id.to_string(), call.step_id.to_string()))
                .or_default();
            let mut pick = list.get(*n).or(list.last());
            *n += 1;
            if let Some(m @ MockOutcome::ToolCalls { then, .. }) = pick {
                if call.kind == "agent" {
                    st.loops.insert(
                        (call.run_id.to_string(), call.step_id.to_string()),
                        m.clone(),
                    );
                    return Intercepted::Proceed;
                }
                // Not an agent (lint says so): its answer alone.
                pick = Some(then);
            }
            let outcome = match pick {
                Some(MockOutcome::Output(v)) => Ok(Success {
                    output: v.clone(),
                    usage: None,
                }),
                Some(MockOutcome::Error { message, retryable }) => {
                    let e = StepError::new("mock", message.clone());
                    Err(StepError {
                        retryable: *retryable,
                        ..e
                    })
                }
                Some(MockOutcome::ToolCalls { .. }) | None => Ok(Success {
                    output: Value::Null,
                    usage: None,
                }),
            };
            return Intercepted::Outcome(outcome);
        }
        if LOCAL.contains(&call.kind) || spec.live.iter().any(|s| s == call.step_id) {
            return Intercepted::Proceed;
        }
        let msg = format!(
            "step `{}` ({}) is not mocked: add `mocks: {{{}: {{output: …}}}}` to the case, or `live: [{}]` to call the real service",
            call.step_id, call.kind, call.step_id, call.step_id
        );
        let list = st.unmocked.entry(case).or_default();
        if !list.contains(&msg) {
            list.push(msg.clone());
        }
        Intercepted::Outcome(Err(StepError::permanent("unmocked", msg)))
    }

    fn model_turn(&self, call: &ModelTurnCall<'_>) -> Option<Result<Value, StepError>> {
        let st = self.lock();
        let Some(MockOutcome::ToolCalls { calls, then }) = st
            .loops
            .get(&(call.run_id.to_string(), call.step_id.to_string()))
        else {
            return None;
        };
        if let Some(c) = calls.get(call.turn) {
            return Some(Ok(json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": format!("call_{}", call.turn + 1),
                    "type": "function",
                    "function": {"name": c.tool, "arguments": c.input.to_string()},
                }],
            })));
        }
        Some(match then.as_ref() {
            MockOutcome::Error { message, retryable } => Err(StepError {
                retryable: *retryable,
                ..StepError::new("mock", message.clone())
            }),
            MockOutcome::Output(v) => {
                let content = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Ok(json!({"role": "assistant", "content": content}))
            }
            MockOutcome::ToolCalls { .. } => Ok(json!({"role": "assistant", "content": ""})),
        })
    }
}
