//! A hook that stands in for executors: `stepwise test` answers mocked steps with their
//! mocked outcome and refuses unmocked calls to the outside world, while the scheduler,
//! its commits, timers and retries stay the real ones.

use std::sync::Arc;

use serde_json::Value;

use crate::exec::{StepError, Success};

/// A step about to run, as the interceptor sees it.
#[derive(Debug)]
pub struct StepCall<'a> {
    pub run_id: &'a str,
    /// The run that started this one (a `workflow` step's child run).
    pub parent_run_id: Option<&'a str>,
    /// The run's trigger (`{kind, label, …}`).
    pub trigger: &'a Value,
    pub definition_slug: &'a str,
    pub step_id: &'a str,
    /// The action (`http`, `transform`, `log`, `workflow`, …) or `agent`.
    pub kind: &'a str,
    /// The rendered input, as recorded on the step.
    pub input: &'a Value,
    pub attempt: i64,
}

/// What to do with a step.
#[derive(Debug)]
pub enum Intercepted {
    /// Run the real executor.
    Proceed,
    /// Record this outcome as the attempt's, as if an executor had returned it.
    Outcome(Result<Success, StepError>),
}

/// An agent step about to call its model.
#[derive(Debug)]
pub struct ModelTurnCall<'a> {
    pub run_id: &'a str,
    pub step_id: &'a str,
    pub attempt: i64,
    /// Model calls this attempt has made so far.
    pub turn: usize,
}

pub trait StepIntercept: Send + Sync + 'static {
    fn call(&self, call: &StepCall<'_>) -> Intercepted;

    /// The assistant message (`{role, content, tool_calls}`) an agent step's model call
    /// returns instead of calling the model, for a loop the interceptor let run
    /// (`Intercepted::Proceed`) so its tool calls start real child runs; `None`: call the
    /// model.
    fn model_turn(&self, _call: &ModelTurnCall<'_>) -> Option<Result<Value, StepError>> {
        None
    }
}

/// The interceptor an engine is configured with (none outside tests).
#[derive(Clone)]
pub struct Interceptor(pub Arc<dyn StepIntercept>);

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interceptor")
    }
}
