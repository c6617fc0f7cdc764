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

pub trait StepIntercept: Send + Sync + 'static {
    fn call(&self, call: &StepCall<'_>) -> Intercepted;
}

/// The interceptor an engine is configured with (none outside tests).
#[derive(Clone)]
pub struct Interceptor(pub Arc<dyn StepIntercept>);

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interceptor")
    }
}
