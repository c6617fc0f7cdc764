//! The durable record of an agent loop: the tools offered, every model turn (what was
//! sent, what came back, what it cost) and every tool call's result. It is kept in the
//! step record's `meta.agent`, written by the scheduler as each turn and each result
//! arrives, and carried to the step's next attempt, so a resumed loop sends no completed
//! call again and runs no completed tool again. Everything here is pure.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Reply;
use super::tools::Tool;
use crate::exec::StepError;

/// A tool result longer than this reaches the model cut, with a note.
pub const MAX_TOOL_RESULT_CHARS: usize = 32 * 1024;
const CUT_NOTE: &str = "… (cut at 32768 characters)";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transcript {
    /// The tools offered, resolved when the loop first started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub turns: Vec<Turn>,
}

/// One model call and what followed from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Turn {
    /// The step attempt that made the call.
    pub attempt: i64,
    /// The run attempt (limits count the turns of one run attempt).
    pub run_attempt: i64,
    /// User messages sent before this call, after the earlier turns (a correction after an
    /// answer the output schema refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub request: Request,
    /// The assistant message: `{role, content, tool_calls}`.
    pub response: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub usage: TurnUsage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<ToolCall>,
}

/// What a call sent, besides the messages the transcript holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub model: String,
    /// How many messages were sent (the earlier turns', the notes, the prompt).
    pub messages: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnUsage {
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub duration_ms: u64,
    /// At the configured prices, when the model has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// A tool the model called, and (once it finished) its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The parsed arguments (the text as sent when it is not JSON).
    pub arguments: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ToolResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ToolResult {
    Completed {
        output: Value,
    },
    /// The model reads the error and may recover.
    Failed {
        error: Value,
    },
}

impl ToolResult {
    pub fn failed(kind: &str, message: impl Into<String>) -> ToolResult {
        ToolResult::Failed {
            error: json!({"kind": kind, "message": message.into()}),
        }
    }

    /// The result as it is kept: one whose text is over [`MAX_TOOL_RESULT_CHARS`] keeps
    /// only the cut text the model reads (the whole output stays on the child run), so
    /// the transcript stays small and a resumed loop sends the same message.
    pub fn bounded(self) -> ToolResult {
        let text = self.text();
        if text.ends_with(CUT_NOTE) {
            return match self {
                ToolResult::Completed { .. } => ToolResult::Completed {
                    output: Value::String(text),
                },
                ToolResult::Failed { .. } => ToolResult::Failed {
                    error: Value::String(text),
                },
            };
        }
        self
    }

    pub fn status(&self) -> &'static str {
        match self {
            ToolResult::Completed { .. } => "completed",
            ToolResult::Failed { .. } => "failed",
        }
    }

    /// The `tool` message's content.
    fn text(&self) -> String {
        let text = match self {
            ToolResult::Completed {
                output: Value::String(s),
            } => s.clone(),
            ToolResult::Completed { output } => output.to_string(),
            ToolResult::Failed {
                error: Value::String(s),
            } if s.ends_with(CUT_NOTE) => s.clone(),
            ToolResult::Failed { error } => json!({"error": error}).to_string(),
        };
        match text.char_indices().nth(MAX_TOOL_RESULT_CHARS) {
            Some((cut, _)) => format!("{}{CUT_NOTE}", &text[..cut]),
            None => text,
        }
    }
}

/// What the loop does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Call the model: nothing was asked yet, or every tool call has its result.
    Call,
    /// Calls of the last turn that have no result yet: (turn, call).
    Tools(Vec<(usize, usize)>),
    /// The last turn answered without calling tools.
    Answer { turn: usize, content: String },
}

/// What bounds the loop (the step's `max_turns`, `max_tokens`, `budget`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_turns: u32,
    pub max_tokens: Option<u32>,
    pub budget: Option<f64>,
}

impl Transcript {
    /// The transcript kept in a step record's `meta`, if any.
    pub fn from_meta(meta: Option<&Value>) -> Option<Transcript> {
        serde_json::from_value(meta?.get("agent")?.clone()).ok()
    }

    pub fn to_meta(&self) -> Value {
        json!({"agent": self})
    }

    pub fn tools(&self) -> &[Tool] {
        self.tools.as_deref().unwrap_or_default()
    }

    pub fn next(&self) -> Next {
        let Some((t, last)) = self.turns.iter().enumerate().next_back() else {
            return Next::Call;
        };
        if last.calls.is_empty() {
            let content = match &last.response["content"] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            return Next::Answer { turn: t, content };
        }
        let open: Vec<(usize, usize)> = (0..last.calls.len())
            .filter(|&k| last.calls[k].result.is_none())
            .map(|k| (t, k))
            .collect();
        if open.is_empty() {
            Next::Call
        } else {
            Next::Tools(open)
        }
    }

    /// The messages of the next call: system, prompt, every turn with its tool results,
    /// then `notes`.
    pub fn messages(
        &self,
        system: Option<&str>,
        prompt: &str,
        output_schema: Option<&Value>,
        notes: &[String],
    ) -> Vec<Value> {
        let mut messages = Vec::new();
        let mut system = system.unwrap_or_default().to_string();
        if let Some(schema) = output_schema {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(&format!(
                "Answer with one JSON value only, no prose, that satisfies this JSON Schema:\n{schema}"
            ));
        }
        if !system.is_empty() {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        for turn in &self.turns {
            for n in &turn.notes {
                messages.push(json!({"role": "user", "content": n}));
            }
            messages.push(turn.response.clone());
            for c in &turn.calls {
                let content = c.result.as_ref().map_or_else(String::new, ToolResult::text);
                messages.push(json!({"role": "tool", "tool_call_id": c.id, "content": content}));
            }
        }
        for n in notes {
            messages.push(json!({"role": "user", "content": n}));
        }
        messages
    }

    /// Record a model call's reply as the next turn; its tool calls get ids where the model
    /// gave none, and calls whose arguments are not a JSON object get that as their result.
    pub fn push(&mut self, reply: Reply, attempt: i64, run_attempt: i64, cost: Option<f64>) {
        let t = self.turns.len();
        let mut response = reply.message;
        let mut calls = Vec::new();
        if let Some(list) = response.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for (k, c) in list.iter_mut().enumerate() {
                let id = match c.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => id.to_string(),
                    _ => format!("call_{}_{}", t + 1, k + 1),
                };
                c["id"] = json!(id);
                c["type"] = json!("function");
                let name = c
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let raw = c.pointer("/function/arguments").cloned();
                let (arguments, result) = parse_arguments(raw);
                calls.push(ToolCall {
                    id,
                    name,
                    arguments,
                    child_run_id: None,
                    result,
                });
            }
        }
        let mut usage = reply.usage;
        usage.cost_usd = cost;
        self.turns.push(Turn {
            attempt,
            run_attempt,
            notes: reply.notes,
            request: reply.request,
            response,
            finish_reason: reply.finish_reason,
            usage,
            calls,
        });
    }

    fn of_run_attempt(&self, run_attempt: i64) -> impl Iterator<Item = &Turn> {
        self.turns
            .iter()
            .filter(move |t| t.run_attempt == run_attempt)
    }

    /// Before a call: the completion tokens it may use (`None`: no bound), or why no
    /// further call may start. Limits count the turns of the current run attempt, so a
    /// retried run continues the conversation with a fresh allowance.
    pub fn allowance(&self, run_attempt: i64, limits: &Limits) -> Result<Option<u32>, StepError> {
        let turns = self.of_run_attempt(run_attempt).count();
        if turns >= limits.max_turns as usize {
            return Err(StepError::permanent(
                "agent_limit",
                format!(
                    "the agent made {turns} model calls without a final answer, its limit (`max_turns: {}`)",
                    limits.max_turns
                ),
            ));
        }
        let cost: f64 = self
            .of_run_attempt(run_attempt)
            .filter_map(|t| t.usage.cost_usd)
            .sum();
        if let Some(budget) = limits.budget
            && cost >= budget
        {
            return Err(over_budget(cost, budget));
        }
        let Some(max) = limits.max_tokens else {
            return Ok(None);
        };
        let used: u64 = self
            .of_run_attempt(run_attempt)
            .map(|t| t.usage.completion_tokens)
            .sum();
        match u32::try_from(u64::from(max).saturating_sub(used)) {
            Ok(0) | Err(_) => Err(StepError::permanent(
                "agent_limit",
                format!(
                    "the agent generated {used} tokens without a final answer, its limit (`max_tokens: {max}`)"
                ),
            )),
            Ok(left) => Ok(Some(left)),
        }
    }

    /// After a call: an error when the calls of this run attempt cost more than the budget.
    pub fn over_budget(&self, run_attempt: i64, limits: &Limits) -> Option<StepError> {
        let budget = limits.budget?;
        let cost: f64 = self
            .of_run_attempt(run_attempt)
            .filter_map(|t| t.usage.cost_usd)
            .sum();
        (cost > budget).then(|| over_budget(cost, budget))
    }

    /// What the calls of one step attempt used, in the shape step records keep
    /// (`model`, token counts, `durationMs`, `calls`, `costUsd`).
    pub fn usage_of_attempt(&self, attempt: i64) -> Option<Value> {
        let turns: Vec<&Turn> = self.turns.iter().filter(|t| t.attempt == attempt).collect();
        let last = turns.last()?;
        let sum = |f: fn(&TurnUsage) -> u64| turns.iter().map(|t| f(&t.usage)).sum::<u64>();
        let mut usage = json!({
            "model": last.usage.model,
            "promptTokens": sum(|u| u.prompt_tokens),
            "completionTokens": sum(|u| u.completion_tokens),
            "totalTokens": sum(|u| u.total_tokens),
            "durationMs": sum(|u| u.duration_ms),
            "calls": turns.len(),
        });
        if turns.iter().all(|t| t.usage.cost_usd.is_some()) {
            let cost: f64 = turns.iter().filter_map(|t| t.usage.cost_usd).sum();
            usage["costUsd"] = json!(cost);
        }
        Some(usage)
    }

    /// The call with this child run, as (turn, call).
    pub fn call_of_child(&self, child_run_id: &str) -> Option<(usize, usize)> {
        self.turns.iter().enumerate().find_map(|(t, turn)| {
            turn.calls
                .iter()
                .position(|c| c.child_run_id.as_deref() == Some(child_run_id))
                .map(|k| (t, k))
        })
    }
}

fn over_budget(cost: f64, budget: f64) -> StepError {
    StepError::permanent(
        "agent_limit",
        format!("the agent's model calls cost ${cost:.6}, over its limit (`budget: {budget}`)"),
    )
}

/// A call's arguments: the parsed object, or the text and an error result for the model.
fn parse_arguments(raw: Option<Value>) -> (Value, Option<ToolResult>) {
    let text = match raw {
        None | Some(Value::Null) => return (json!({}), None),
        Some(Value::String(s)) => s,
        // Some servers send the object itself.
        Some(v @ Value::Object(_)) => return (v, None),
        Some(other) => other.to_string(),
    };
    if text.trim().is_empty() {
        return (json!({}), None);
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => (v, None),
        Ok(_) => (
            Value::String(text),
            Some(ToolResult::failed(
                "tool_arguments",
                "the arguments must be a JSON object",
            )),
        ),
        Err(e) => (
            Value::String(text),
            Some(ToolResult::failed(
                "tool_arguments",
                format!("the arguments are not JSON: {e}"),
            )),
        ),
    }
}

/// Check a final answer: text without a schema; with one, JSON that satisfies it.
pub fn check_answer(content: &str, schema: Option<&Value>) -> Result<Value, StepError> {
    let Some(schema) = schema else {
        return Ok(Value::String(content.to_string()));
    };
    let parsed = parse_json_answer(content).ok_or_else(|| {
        StepError::new("agent_output", "the answer is not JSON")
            .with_details(json!({"answer": content}))
    })?;
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| {
            StepError::permanent("agent_output", format!("the output schema is invalid: {e}"))
        })?;
    let problems: Vec<String> = validator
        .iter_errors(&parsed)
        .map(|e| format!("{}: {}", e.instance_path(), e.masked()))
        .collect();
    if !problems.is_empty() {
        return Err(StepError::new(
            "agent_output",
            "the answer does not satisfy the output schema",
        )
        .with_details(json!({"answer": parsed, "problems": problems})));
    }
    Ok(parsed)
}

/// The note a resumed loop sends after an answer the output schema refused.
pub fn correction(e: &StepError) -> String {
    let problems = e
        .details
        .as_ref()
        .and_then(|d| d.get("problems"))
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|p| !p.is_empty());
    match problems {
        Some(p) => format!(
            "Your answer was not accepted: {} ({p}). Answer again with one JSON value only that satisfies the schema.",
            e.message
        ),
        None => format!(
            "Your answer was not accepted: {}. Answer again with one JSON value only that satisfies the schema.",
            e.message
        ),
    }
}

/// Models often wrap JSON in a fenced block; accept that.
fn parse_json_answer(content: &str) -> Option<Value> {
    let t = content.trim();
    if let Ok(v) = serde_json::from_str(t) {
        return Some(v);
    }
    let inner = t.strip_prefix("```")?;
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    let inner = inner.strip_suffix("```")?;
    serde_json::from_str(inner.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(message: Value, completion: u64) -> Reply {
        Reply {
            message,
            finish_reason: None,
            usage: TurnUsage {
                model: "m".into(),
                prompt_tokens: 10,
                completion_tokens: completion,
                total_tokens: 10 + completion,
                duration_ms: 5,
                cost_usd: None,
            },
            request: Request {
                model: "m".into(),
                messages: 1,
                max_tokens: None,
            },
            notes: Vec::new(),
        }
    }

    fn calling(args: &str) -> Value {
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"type": "function", "function": {"name": "lookup-order", "arguments": args}}
        ]})
    }

    #[test]
    fn fenced_json_is_accepted() {
        assert_eq!(
            parse_json_answer("```json\n{\"a\": 1}\n```"),
            Some(json!({"a": 1}))
        );
        assert_eq!(parse_json_answer(" {\"a\": 1} "), Some(json!({"a": 1})));
        assert_eq!(parse_json_answer("sure! {\"a\": 1}"), None);
    }

    #[test]
    fn a_loop_asks_runs_tools_then_answers() {
        let mut t = Transcript::default();
        assert_eq!(t.next(), Next::Call);
        t.push(reply(calling(r#"{"orderId": "A1"}"#), 3), 1, 1, None);
        assert_eq!(t.next(), Next::Tools(vec![(0, 0)]));
        let call = &t.turns[0].calls[0];
        assert_eq!(call.id, "call_1_1", "an id is made for a call without one");
        assert_eq!(call.arguments, json!({"orderId": "A1"}));
        t.turns[0].calls[0].result = Some(ToolResult::Completed {
            output: json!({"status": "delivered"}),
        });
        assert_eq!(t.next(), Next::Call);
        let messages = t.messages(Some("Be brief."), "Where is A1?", None, &[]);
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[2]["tool_calls"][0]["id"], "call_1_1");
        assert_eq!(
            messages[3],
            json!({"role": "tool", "tool_call_id": "call_1_1", "content": "{\"status\":\"delivered\"}"})
        );
        t.push(
            reply(json!({"role": "assistant", "content": "Delivered."}), 2),
            2,
            1,
            None,
        );
        assert_eq!(
            t.next(),
            Next::Answer {
                turn: 1,
                content: "Delivered.".into()
            }
        );
        assert_eq!(t.usage_of_attempt(1).unwrap()["completionTokens"], 3);
        assert_eq!(t.usage_of_attempt(2).unwrap()["calls"], 1);
        assert_eq!(t.usage_of_attempt(3), None);
        let back = Transcript::from_meta(Some(&t.to_meta())).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn long_results_are_kept_as_the_cut_text_the_model_reads() {
        let long = ToolResult::Completed {
            output: json!({"blob": "x".repeat(40_000)}),
        };
        assert!(CUT_NOTE.contains(&MAX_TOOL_RESULT_CHARS.to_string()));
        let text = long.text();
        assert_eq!(
            text.chars().count(),
            MAX_TOOL_RESULT_CHARS + CUT_NOTE.chars().count()
        );
        let kept = long.bounded();
        assert_eq!(kept.text(), text, "a resumed loop sends the same message");
        let failed = ToolResult::Failed {
            error: json!({"message": "y".repeat(40_000)}),
        };
        assert_eq!(failed.clone().bounded().text(), failed.text());
        let short = ToolResult::failed("k", "m");
        assert_eq!(short.clone().bounded(), short);
    }

    #[test]
    fn arguments_that_are_not_an_object_answer_the_model_at_once() {
        let mut t = Transcript::default();
        t.push(reply(calling("{oops"), 1), 1, 1, None);
        let r = t.turns[0].calls[0].result.clone().unwrap();
        assert_eq!(r.status(), "failed");
        assert_eq!(t.next(), Next::Call, "nothing is left to run");
    }

    #[test]
    fn limits_bound_turns_tokens_and_cost_per_run_attempt() {
        let limits = Limits {
            max_turns: 2,
            max_tokens: Some(10),
            budget: Some(0.5),
        };
        let mut t = Transcript::default();
        assert_eq!(t.allowance(1, &limits), Ok(Some(10)));
        t.push(reply(calling("{}"), 4), 1, 1, Some(0.2));
        assert_eq!(t.allowance(1, &limits), Ok(Some(6)));
        t.push(reply(calling("{}"), 4), 1, 1, Some(0.2));
        let e = t.allowance(1, &limits).unwrap_err();
        assert_eq!(e.kind, "agent_limit");
        assert!(e.message.contains("`max_turns: 2`"), "{}", e.message);
        assert!(!e.retryable);
        assert_eq!(
            t.allowance(2, &limits),
            Ok(Some(10)),
            "a run retry starts afresh"
        );
        assert_eq!(t.over_budget(1, &limits), None);
        t.push(reply(calling("{}"), 4), 1, 1, Some(0.2));
        assert!(
            t.over_budget(1, &limits)
                .unwrap()
                .message
                .contains("budget")
        );
        let tokens = Limits {
            max_turns: 10,
            max_tokens: Some(8),
            budget: None,
        };
        assert!(
            t.allowance(1, &tokens)
                .unwrap_err()
                .message
                .contains("`max_tokens: 8`")
        );
    }
}
