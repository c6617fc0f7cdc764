//! Ids, run and step statuses, and which transitions between them are legal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Prefixes the seeds use for ids.
pub const RUN_PREFIX: &str = "wfrun_";
pub const DEFINITION_PREFIX: &str = "wfdef_";

/// A new time-ordered id with a prefix, e.g. `wfrun_0193c1…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// An unguessable token (244 random bits), the credential of a hook.
pub fn new_token() -> String {
    format!(
        "hk_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Whether `id` has the shape of an id with `prefix` (used to answer 404 early).
pub fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Pending,
    Running,
    Waiting,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "PENDING",
            RunStatus::Running => "RUNNING",
            RunStatus::Waiting => "WAITING",
            RunStatus::Paused => "PAUSED",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// Suspended: nothing runs until a signal, a decision or a timer.
    pub fn is_suspended(self) -> bool {
        matches!(self, RunStatus::Waiting | RunStatus::Paused)
    }

    pub fn can_cancel(self) -> bool {
        !self.is_terminal()
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a run status (use one of {})",
                    RunStatus::ALL.map(RunStatus::as_str).join(", ")
                )
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Skipped,
    Waiting,
    Cancelled,
}

impl StepStatus {
    pub const ALL: [StepStatus; 7] = [
        StepStatus::Pending,
        StepStatus::Running,
        StepStatus::Completed,
        StepStatus::Failed,
        StepStatus::Skipped,
        StepStatus::Waiting,
        StepStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "PENDING",
            StepStatus::Running => "RUNNING",
            StepStatus::Completed => "COMPLETED",
            StepStatus::Failed => "FAILED",
            StepStatus::Skipped => "SKIPPED",
            StepStatus::Waiting => "WAITING",
            StepStatus::Cancelled => "CANCELLED",
        }
    }

    /// Finished for the purpose of dependents: they may start.
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Completed | StepStatus::Skipped)
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a step status"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefixes_and_shape() {
        let id = new_id(RUN_PREFIX);
        assert!(is_id(&id, RUN_PREFIX), "{id}");
        assert!(!is_id("wfrun_nothex", RUN_PREFIX));
        assert!(!is_id(&id, DEFINITION_PREFIX));
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn statuses_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
        }
        assert_eq!("running".parse::<RunStatus>(), Ok(RunStatus::Running));
        assert!("DONE".parse::<RunStatus>().is_err());
        assert!(RunStatus::Paused.can_cancel() && !RunStatus::Failed.can_cancel());
    }
}

/// An enum stored and served as fixed strings.
macro_rules! text_enum {
    ($t:ident { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $($t::$v => $s),* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($t::$v),)* _ => None }
            }
        }

        /// Compare with the stored text (`status == "pending"`).
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

/// What an entry of a run's trace records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    RunCreated,
    RunStarted,
    RunCompleted,
    RunFailed,
    RunCancelled,
    RunRetried,
    StepStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepSkipped,
    StepWaiting,
    /// The process stopped while an attempt ran; the attempt runs again.
    StepRecovered,
    SignalReceived,
    ApprovalDecided,
    HookResumed,
    TimerFired,
    ChildStarted,
    /// An agent step's model call came back (a turn of its loop).
    AgentTurn,
    /// A tool an agent called has its result.
    AgentTool,
    Log,
    /// A failure alert was created with the run's failure.
    AlertQueued,
    AlertDelivered,
    /// An attempt failed; another follows.
    AlertRetrying,
    /// Given up: the last attempt failed, or the receiver refused for good.
    AlertFailed,
}

text_enum!(EventKind {
    RunCreated => "run.created",
    RunStarted => "run.started",
    RunCompleted => "run.completed",
    RunFailed => "run.failed",
    RunCancelled => "run.cancelled",
    RunRetried => "run.retried",
    StepStarted => "step.started",
    StepCompleted => "step.completed",
    StepFailed => "step.failed",
    StepRetrying => "step.retrying",
    StepSkipped => "step.skipped",
    StepWaiting => "step.waiting",
    StepRecovered => "step.recovered",
    SignalReceived => "signal.received",
    ApprovalDecided => "approval.decided",
    HookResumed => "hook.resumed",
    TimerFired => "timer.fired",
    ChildStarted => "child.started",
    AgentTurn => "agent.turn",
    AgentTool => "agent.tool",
    Log => "log",
    AlertQueued => "alert.queued",
    AlertDelivered => "alert.delivered",
    AlertRetrying => "alert.retrying",
    AlertFailed => "alert.failed",
});

/// Runs a trigger starts carry an idempotency key `<kind>:…` (derived from the event), and
/// a trigger of that `kind` only may use the prefix, so a client's key never takes one.
pub const KEY_PREFIX_WEBHOOK: &str = "webhook:";
pub const KEY_PREFIX_SCHEDULE: &str = "schedule:";
pub const KEY_PREFIX_POLL: &str = "poll:";
/// Runs a failure alert starts (`on_failure: {workflow}`).
pub const KEY_PREFIX_ALERT: &str = "alert:";
pub const RESERVED_KEY_PREFIXES: [&str; 4] = [
    KEY_PREFIX_WEBHOOK,
    KEY_PREFIX_SCHEDULE,
    KEY_PREFIX_POLL,
    KEY_PREFIX_ALERT,
];
