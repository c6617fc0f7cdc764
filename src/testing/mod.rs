//! `stepwise test`: workflow tests with mocked steps on a virtual clock.
//!
//! A test file (`NAME.test.yaml`, schema `schemas/test.schema.json`) names a workflow and
//! lists cases: input, mocks per step, events (approvals, signals, hook resumes) at virtual
//! times, and expectations. `files` reads and lints it with its workflow (`lint`), `runner`
//! runs every case on the real engine with a `ManualClock` and the `mocks` interceptor,
//! `expect` compares, `coverage` counts steps and `when` outcomes, `update` writes goldens.

pub mod coverage;
pub mod expect;
pub mod files;
pub mod from_run;
pub mod lint;
mod mocks;
pub mod model;
pub mod runner;
pub mod update;

pub use coverage::Coverage;
pub use expect::Failure;
pub use files::{Loaded, Suite, load};
pub use model::is_test_file;
pub use runner::Actual;

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub name: String,
    pub pointer: String,
    pub failures: Vec<Failure>,
    pub actual: Actual,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The outcome of one test file.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    pub cases: Vec<CaseReport>,
    pub coverage: Coverage,
    pub elapsed: std::time::Duration,
}

/// Run a suite and check every case.
pub async fn run(suite: &Suite) -> Result<SuiteReport, String> {
    run_with(suite, None).await
}

/// [`run`], with how `live` script steps may run (`stepwise test --allow-scripts`);
/// `None`: as the environment says.
pub async fn run_with(
    suite: &Suite,
    scripts: Option<&crate::exec::script::ScriptConfig>,
) -> Result<SuiteReport, String> {
    let started = std::time::Instant::now();
    let actuals = runner::run_suite(suite, scripts).await?;
    let coverage = Coverage::of(&suite.workflow.definition, &actuals);
    let cases = suite
        .test
        .cases
        .iter()
        .zip(actuals)
        .map(|(case, actual)| CaseReport {
            name: case.name.clone(),
            pointer: case.pointer.clone(),
            failures: expect::check(case, &actual),
            actual,
        })
        .collect();
    Ok(SuiteReport {
        cases,
        coverage,
        elapsed: started.elapsed(),
    })
}
