//! Triggers: webhooks, schedules and polls that start runs (seed 000), declared in YAML
//! files beside the workflows and linted like them.

pub mod lint;
pub mod model;
pub mod runner;
mod schedule;
mod status;
mod webhook;

pub use model::{Trigger, is_trigger};

pub use crate::model::{KEY_PREFIX_POLL, KEY_PREFIX_SCHEDULE, KEY_PREFIX_WEBHOOK};
pub use runner::{Placed, Triggers};
pub use status::Status;
pub use webhook::WebhookOutcome;
