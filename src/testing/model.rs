//! The test file format (`NAME.test.yaml`), read from the YAML's JSON form after the schema
//! check. Every piece keeps its JSON Pointer, so failures point at the line that states them.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::yaml::pointer_push;

/// Where every case starts when the file names no `start`.
pub const DEFAULT_START: &str = "2026-01-01T00:00:00Z";

/// Whether a YAML document is a test file rather than a workflow or a trigger.
pub fn is_test_file(doc: &Value) -> bool {
    doc.get("tests").is_some() && doc.get("steps").is_none() && doc.get("trigger").is_none()
}

#[derive(Debug, Clone)]
pub struct TestFile {
    /// The workflow file, relative to the test file.
    pub workflow: String,
    pub start: Timestamp,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// e.g. `/tests/2`.
    pub pointer: String,
    pub input: Value,
    pub mocks: BTreeMap<String, Vec<MockOutcome>>,
    pub live: Vec<String>,
    pub events: Vec<Event>,
    pub run_for: Option<Duration>,
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MockOutcome {
    Output(Value),
    Error {
        message: String,
        retryable: bool,
    },
    /// An agent step whose model first calls tools (one call per turn, each a real child
    /// run of the tool workflow), then gives `then` as its answer.
    ToolCalls {
        calls: Vec<ToolCallMock>,
        then: Box<MockOutcome>,
    },
}

/// One tool call a mocked model makes: `{tool, input}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallMock {
    pub tool: String,
    pub input: Value,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub pointer: String,
    pub kind: EventKind,
    /// After the start; `None`: as soon as its step waits.
    pub at: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Approve { step: String, option: String },
    Signal { signal: String, payload: Value },
    Hook { step: String, payload: Value },
}

impl EventKind {
    pub fn describe(&self) -> String {
        match self {
            EventKind::Approve { step, option } => format!("approve `{step}` with `{option}`"),
            EventKind::Signal { signal, .. } => format!("signal `{signal}`"),
            EventKind::Hook { step, .. } => format!("hook of `{step}`"),
        }
    }
}

/// What a case checks; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// `/tests/N/expect`.
    pub pointer: String,
    pub status: Option<String>,
    pub output: Option<Value>,
    pub output_contains: Option<Value>,
    pub error: Option<Value>,
    pub ran: Option<Vec<String>>,
    pub skipped: Option<Vec<String>>,
    pub order: Option<Vec<String>>,
    pub steps: BTreeMap<String, StepExpect>,
}

#[derive(Debug, Clone, Default)]
pub struct StepExpect {
    pub status: Option<String>,
    pub attempts: Option<i64>,
    pub output: Option<Value>,
    pub input: Option<Value>,
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

fn duration(v: Option<&Value>) -> Option<Duration> {
    v.and_then(Value::as_str)
        .and_then(|s| crate::duration::parse(s).ok())
}

impl TestFile {
    /// Read a test file that passed the schema check; what is malformed is left out (lint
    /// reports it).
    pub fn from_value(doc: &Value) -> Result<TestFile, String> {
        let workflow = doc
            .get("workflow")
            .and_then(Value::as_str)
            .ok_or("a test file needs `workflow`")?
            .to_string();
        let start = match doc.get("start").and_then(Value::as_str) {
            Some(s) => s
                .parse::<Timestamp>()
                .map_err(|e| format!("`start` is not an RFC 3339 time: {e}"))?,
            None => DEFAULT_START
                .parse::<Timestamp>()
                .map_err(|e| e.to_string())?,
        };
        let cases = doc
            .get("tests")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(i, c)| Case::from_value(c, pointer_push("/tests", &i.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(TestFile {
            workflow,
            start,
            cases,
        })
    }
}

impl Case {
    fn from_value(v: &Value, pointer: String) -> Case {
        let mut mocks = BTreeMap::new();
        if let Some(Value::Object(m)) = v.get("mocks") {
            for (step, spec) in m {
                let list = match spec {
                    Value::Array(a) => a.iter().filter_map(MockOutcome::from_value).collect(),
                    other => MockOutcome::from_value(other).into_iter().collect(),
                };
                mocks.insert(step.clone(), list);
            }
        }
        let events = v
            .get("events")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .enumerate()
                    .filter_map(|(i, e)| {
                        Event::from_value(
                            e,
                            pointer_push(&pointer_push(&pointer, "events"), &i.to_string()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let expect_ptr = pointer_push(&pointer, "expect");
        let expect = v
            .get("expect")
            .map(|e| Expect::from_value(e, expect_ptr.clone()))
            .unwrap_or(Expect {
                pointer: expect_ptr,
                ..Expect::default()
            });
        Case {
            name: v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            input: v
                .get("input")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new())),
            mocks,
            live: strings(v.get("live")).unwrap_or_default(),
            events,
            run_for: duration(v.get("runFor")),
            expect,
            pointer,
        }
    }
}

impl MockOutcome {
    fn from_value(v: &Value) -> Option<MockOutcome> {
        if let Some(Value::Array(list)) = v.get("toolCalls") {
            let calls = list
                .iter()
                .filter_map(|c| {
                    Some(ToolCallMock {
                        tool: c.get("tool")?.as_str()?.to_string(),
                        input: c
                            .get("input")
                            .cloned()
                            .unwrap_or_else(|| Value::Object(Map::new())),
                    })
                })
                .collect();
            let mut rest = v.clone();
            if let Some(o) = rest.as_object_mut() {
                o.remove("toolCalls");
            }
            let then = MockOutcome::from_value(&rest).unwrap_or(MockOutcome::Output(Value::Null));
            return Some(MockOutcome::ToolCalls {
                calls,
                then: Box::new(then),
            });
        }
        if let Some(e) = v.get("error") {
            let (message, retryable) = match e {
                Value::String(s) => (s.clone(), true),
                Value::Object(o) => (
                    o.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    o.get("retryable").and_then(Value::as_bool).unwrap_or(true),
                ),
                other => (other.to_string(), true),
            };
            return Some(MockOutcome::Error { message, retryable });
        }
        v.get("output").cloned().map(MockOutcome::Output)
    }
}

impl Event {
    fn from_value(v: &Value, pointer: String) -> Option<Event> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let payload = v.get("payload").cloned().unwrap_or(Value::Null);
        let kind = if let (Some(step), Some(option)) = (s("approve"), s("option")) {
            EventKind::Approve { step, option }
        } else if let Some(signal) = s("signal") {
            EventKind::Signal {
                signal,
                payload: if payload.is_null() {
                    Value::Object(Map::new())
                } else {
                    payload
                },
            }
        } else if let Some(step) = s("hook") {
            EventKind::Hook { step, payload }
        } else {
            return None;
        };
        Some(Event {
            pointer,
            kind,
            at: duration(v.get("at")),
        })
    }
}

impl Expect {
    fn from_value(v: &Value, pointer: String) -> Expect {
        let mut steps = BTreeMap::new();
        if let Some(Value::Object(m)) = v.get("steps") {
            for (id, e) in m {
                steps.insert(
                    id.clone(),
                    StepExpect {
                        status: e.get("status").and_then(Value::as_str).map(str::to_string),
                        attempts: e.get("attempts").and_then(Value::as_i64),
                        output: e.get("output").cloned(),
                        input: e.get("input").cloned(),
                    },
                );
            }
        }
        Expect {
            pointer,
            status: v.get("status").and_then(Value::as_str).map(str::to_string),
            output: v.get("output").cloned(),
            output_contains: v.get("outputContains").cloned(),
            error: v.get("error").cloned(),
            ran: strings(v.get("ran")),
            skipped: strings(v.get("skipped")),
            order: strings(v.get("order")),
            steps,
        }
    }
}
