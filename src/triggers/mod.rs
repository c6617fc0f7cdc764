//! Triggers: webhooks, schedules and polls that start runs (seed 000), declared in YAML
//! files beside the workflows and linted like them.

pub mod lint;
pub mod model;
pub mod runner;
mod schedule;
mod webhook;

pub use model::{Trigger, is_trigger};

/// Runs a trigger starts carry an idempotency key with one of these prefixes (derived from
/// the event); they are reserved, so a client's key can never take a trigger's.
pub const KEY_PREFIX_WEBHOOK: &str = "webhook:";
pub const KEY_PREFIX_SCHEDULE: &str = "schedule:";
pub const KEY_PREFIX_POLL: &str = "poll:";
pub const RESERVED_KEY_PREFIXES: [&str; 3] =
    [KEY_PREFIX_WEBHOOK, KEY_PREFIX_SCHEDULE, KEY_PREFIX_POLL];
pub use runner::{Placed, Triggers};
