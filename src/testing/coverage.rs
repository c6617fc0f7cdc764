//! Coverage: per workflow, which steps the cases ran and which `when` outcomes they saw.

use serde::Serialize;

use super::expect::last_attempts;
use super::runner::Actual;
use crate::definition::Definition;
use crate::model::StepStatus;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepCoverage {
    pub step: String,
    /// Cases in which the step ran (completed or failed).
    pub ran: usize,
    /// Set for steps with a `when`: cases where it held, and where it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when_true: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when_false: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    pub workflow: String,
    pub steps: Vec<StepCoverage>,
    /// Steps run at least once / all steps.
    pub steps_covered: usize,
    /// `when` outcomes seen / twice the steps with `when`.
    pub branches_covered: usize,
    pub branches: usize,
}

impl Coverage {
    pub fn of(def: &Definition, actuals: &[Actual]) -> Coverage {
        let mut steps: Vec<StepCoverage> = def
            .steps
            .iter()
            .map(|s| StepCoverage {
                step: s.id.clone(),
                ran: 0,
                when_true: s.when.as_ref().map(|_| 0),
                when_false: s.when.as_ref().map(|_| 0),
            })
            .collect();
        for a in actuals {
            let Some(run) = &a.run else { continue };
            let own: Vec<_> = a
                .steps
                .iter()
                .filter(|s| s.run_id == run.id)
                .cloned()
                .collect();
            for s in last_attempts(&own) {
                let Some(c) = steps.iter_mut().find(|c| c.step == s.step_id) else {
                    continue;
                };
                let ran = matches!(s.status, StepStatus::Completed | StepStatus::Failed);
                if ran {
                    c.ran += 1;
                }
                if s.status == StepStatus::Skipped {
                    if let Some(n) = c.when_false.as_mut() {
                        *n += 1;
                    }
                } else if s.status != StepStatus::Pending
                    && let Some(n) = c.when_true.as_mut()
                {
                    *n += 1;
                }
            }
        }
        let steps_covered = steps.iter().filter(|s| s.ran > 0).count();
        let branches = 2 * steps.iter().filter(|s| s.when_true.is_some()).count();
        let branches_covered = steps
            .iter()
            .map(|s| {
                usize::from(s.when_true.is_some_and(|n| n > 0))
                    + usize::from(s.when_false.is_some_and(|n| n > 0))
            })
            .sum();
        Coverage {
            workflow: def.id.clone(),
            steps,
            steps_covered,
            branches_covered,
            branches,
        }
    }
}
