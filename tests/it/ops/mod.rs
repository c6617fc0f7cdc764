//! Operations (issue 14): `/metrics`, `/healthz`, `/readyz`, bulk actions, failure alerts.

mod alerts;
mod bulk;
mod metrics;
