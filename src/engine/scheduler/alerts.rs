//! Failure alerts on the scheduler's side: an alert row is written with the failure itself
//! (one commit), and each delivery attempt's result is written with its trace event.
//! Delivering is `crate::alerts`' job; it never writes.

use serde_json::{Value, json};

use super::Scheduler;
use crate::engine::state::Active;
use crate::metrics::Metrics;
use crate::model::{EventKind, RunStatus};
use crate::store::{AlertRecord, AlertStatus, Write};

/// What one delivery attempt came to.
#[derive(Debug, Clone)]
pub enum AlertOutcome {
    /// Delivered: what the receiver said (`{status}` or `{childRunId}`).
    Delivered(Value),
    /// Try again later.
    Retry(String),
    /// Refused for good (a 4xx, an unknown workflow, an input it does not take).
    Fail(String),
}

fn run_view(run: &Active) -> Value {
    let r = &run.rec;
    json!({
        "id": r.id,
        "workspaceId": r.workspace_id,
        "definitionId": r.definition_id,
        "definitionSlug": r.definition_slug,
        "status": r.status.as_str(),
        "attempt": r.attempt,
        "input": r.input,
        "trigger": r.trigger,
        "currentStepIndex": r.current_step_index,
        "createdAt": r.created_at.to_string(),
        "startedAt": r.started_at.map(|t| t.to_string()),
        "finishedAt": r.finished_at.map(|t| t.to_string()),
    })
}

impl Scheduler {
    /// The run just failed: one alert per target, in the batch that records the failure.
    pub(super) fn queue_alerts(&mut self, run: &Active) {
        if run.rec.status != RunStatus::Failed {
            return;
        }
        // A run an alert started never starts another alert workflow: no alert loops.
        let started_by_alert = run.rec.trigger["kind"] == "alert";
        let mut targets: Vec<(&str, &str, Value)> = Vec::new();
        let own = run.def.plan.definition.on_failure.clone();
        let global = self.engine.config().on_failure.clone();
        for (scope, of) in [("workflow", own), ("global", global)] {
            let Some(of) = of else { continue };
            if let Some(w) = &of.webhook {
                targets.push((
                    "webhook",
                    scope,
                    json!({"url": w.url, "headers": w.headers}),
                ));
            }
            if let Some(slug) = of.workflow.as_ref().filter(|_| !started_by_alert) {
                targets.push(("workflow", scope, json!({"workflow": slug})));
            }
        }
        let now = self.now();
        for (n, (kind, scope, target)) in targets.into_iter().enumerate() {
            let id = format!("{}-{}-{n}", run.rec.id, run.rec.attempt);
            let body = json!({
                "alertId": id,
                "event": "run.failed",
                "scope": scope,
                "run": run_view(run),
                "error": run.rec.error,
            });
            let shown = match kind {
                "webhook" => json!({"url": target["url"]}),
                _ => target.clone(),
            };
            self.event(
                &run.rec.id,
                EventKind::AlertQueued,
                None,
                json!({"alertId": id, "kind": kind, "scope": scope, "target": shown}),
            );
            self.write(Write::PutAlert(Box::new(AlertRecord {
                id,
                run_id: run.rec.id.clone(),
                workspace_id: run.rec.workspace_id.clone(),
                kind: kind.to_string(),
                target,
                body,
                status: AlertStatus::Pending,
                attempts: 0,
                next_at: now,
                last_error: None,
                created_at: now,
                finished_at: None,
            })));
        }
    }

    /// A delivery attempt finished: its result and trace event commit together. `alert`
    /// is as claimed for the attempt (its `attempts` counts it).
    pub(super) fn alert_done(&mut self, alert: &AlertRecord, outcome: AlertOutcome) {
        let now = self.now();
        let attempts = alert.attempts;
        let cfg = self.engine.config();
        let (first, max) = (cfg.alert_retry_first, cfg.alert_max_attempts);
        let (status, kind, error, data) = match outcome {
            AlertOutcome::Delivered(detail) => (
                AlertStatus::Delivered,
                EventKind::AlertDelivered,
                None,
                json!({"alertId": alert.id, "attempts": attempts, "result": detail}),
            ),
            AlertOutcome::Retry(e) if attempts < max => {
                let exp = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(16);
                let delay = first
                    .saturating_mul(2u32.saturating_pow(exp))
                    .min(std::time::Duration::from_secs(300));
                let next = super::policy::add(now, delay).unwrap_or(now);
                let data = json!({"alertId": alert.id, "attempt": attempts, "error": e, "nextAt": next.to_string()});
                self.write(Write::UpdateAlert {
                    id: alert.id.clone(),
                    status: AlertStatus::Pending,
                    attempts,
                    next_at: next,
                    last_error: Some(e),
                    finished_at: None,
                });
                self.event(&alert.run_id, EventKind::AlertRetrying, None, data);
                self.alert_fact(alert, "retrying");
                return;
            }
            AlertOutcome::Retry(e) | AlertOutcome::Fail(e) => (
                AlertStatus::Failed,
                EventKind::AlertFailed,
                Some(e.clone()),
                json!({"alertId": alert.id, "attempts": attempts, "error": e}),
            ),
        };
        self.write(Write::UpdateAlert {
            id: alert.id.clone(),
            status,
            attempts,
            next_at: now,
            last_error: error,
            finished_at: Some(now),
        });
        self.event(&alert.run_id, kind, None, data);
        self.alert_fact(alert, status.as_str());
    }

    fn alert_fact(&mut self, alert: &AlertRecord, outcome: &str) {
        let labels = vec![
            ("kind", alert.kind.clone()),
            ("outcome", outcome.to_string()),
        ];
        self.batch
            .facts
            .push(Box::new(move |m: &Metrics| Metrics::inc(&m.alerts, labels)));
    }
}
