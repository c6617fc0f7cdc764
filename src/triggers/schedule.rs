//! Schedules: the next due time is stored under the trigger's name, so a restart neither
//! skips nor repeats a firing: due times reached late are caught up by one rule, `catch_up`,
//! and each firing's idempotency key is its due time.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::model::{Schedule, Trigger};
use super::runner::{Result, Triggers, add};
use crate::engine::EngineError;

/// A due time reached this late is "missed" (the server was down), not merely a slow tick.
const GRACE: Duration = Duration::from_secs(60);

/// Due times looked at in one tick; a longer backlog is worked off over the next ticks.
const MAX_DUES_PER_TICK: usize = 10_000;

/// What a tick does with the due times that came since the stored `nextDue`.
#[derive(Debug, PartialEq)]
pub(super) struct CatchUp {
    /// Due times that start a run, oldest first.
    pub fire: Vec<Timestamp>,
    /// Due times skipped under the `missed` policy.
    pub missed: usize,
    /// The last due time looked at: the next one comes after it.
    pub latest: Timestamp,
}

/// Every due time reached within the grace period fires, whatever `missed` says, so a short
/// restart loses nothing. Later ones are missed: `skip` drops them, `run_once` fires the most
/// recent of them unless a due time on time fires anyway.
pub(super) fn catch_up(s: &Schedule, first: Timestamp, now: Timestamp) -> CatchUp {
    let mut dues = vec![first];
    while dues.len() < MAX_DUES_PER_TICK
        && let Some(n) = dues.last().and_then(|d| next_after(s, *d))
        && n <= now
    {
        dues.push(n);
    }
    let latest = *dues.last().unwrap_or(&first);
    let grace = SignedDuration::try_from(GRACE).unwrap_or_default();
    let (late, on_time): (Vec<Timestamp>, Vec<Timestamp>) = dues
        .into_iter()
        .partition(|d| now.duration_since(*d) > grace);
    let run_once = s.missed.as_deref() == Some("run_once");
    match late.last() {
        Some(last) if run_once && on_time.is_empty() => CatchUp {
            fire: vec![*last],
            missed: late.len() - 1,
            latest,
        },
        _ => CatchUp {
            missed: late.len(),
            fire: on_time,
            latest,
        },
    }
}

impl Triggers {
    pub(super) async fn schedule(&self, t: &Trigger, s: &Schedule) -> Result<()> {
        let now = self.engine.clock().now();
        let state = self.state(&t.name).await?;
        let next_due = state
            .get("nextDue")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<Timestamp>().ok());
        let no_next = || EngineError::Internal(format!("schedule `{}` has no next time", t.name));
        let Some(first) = next_due else {
            // First sight of this schedule: it starts at its next due time, not in the past.
            let next = next_after(s, now).ok_or_else(no_next)?;
            return self
                .save(&t.name, json!({"nextDue": next.to_string(), "missed": 0}))
                .await;
        };
        if first > now {
            return Ok(());
        }
        let plan = catch_up(s, first, now);
        // A crash before the save below fires these again at the next start: the keys,
        // derived from the due times, make that start nothing twice.
        for due in &plan.fire {
            let event = json!({"kind": "schedule", "scheduledAt": due.to_string(), "firedAt": now.to_string()});
            let input = self.input(t, &event, json!({"scheduledAt": due.to_string()}))?;
            let context = json!({"kind": "schedule", "name": t.name, "label": t.label(), "scheduledAt": due.to_string(), "event": event});
            self.start(
                t,
                input,
                Some(format!("{}{}:{}", super::KEY_PREFIX_SCHEDULE, t.name, due)),
                context,
            )
            .await?;
        }
        if plan.missed > 0 {
            tracing::info!(trigger = %t.name, "{} firing(s) more than {}s late were skipped", plan.missed, GRACE.as_secs());
        }
        let next = next_after(s, plan.latest).ok_or_else(no_next)?;
        let missed_before = state.get("missed").and_then(Value::as_u64).unwrap_or(0);
        let mut saved = json!({
            "nextDue": next.to_string(),
            "missed": missed_before + plan.missed as u64,
        });
        if let Some(last) = plan.fire.last() {
            saved["lastDue"] = json!(last.to_string());
        } else if let Some(last) = state.get("lastDue") {
            saved["lastDue"] = last.clone();
        }
        self.save(&t.name, saved).await
    }
}

/// The first due time strictly after `t`.
pub fn next_after(s: &Schedule, t: Timestamp) -> Option<Timestamp> {
    if let Some(every) = &s.every {
        let d = crate::duration::parse(every).ok()?;
        if d.is_zero() {
            return None;
        }
        return Some(add(t, d));
    }
    let cron: croner::Cron = s.cron.as_deref()?.parse().ok()?;
    let tz = match s.timezone.as_deref() {
        Some(name) => jiff::tz::TimeZone::get(name).ok()?,
        None => jiff::tz::TimeZone::UTC,
    };
    let zoned = t.to_zoned(tz);
    cron.find_next_occurrence(&zoned, false)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(d: &str, missed: Option<&str>) -> Schedule {
        Schedule {
            cron: None,
            timezone: None,
            every: Some(d.into()),
            missed: missed.map(str::to_string),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn cron_in_a_time_zone() {
        let s = Schedule {
            cron: Some("0 9 * * MON".into()),
            timezone: Some("Europe/Berlin".into()),
            every: None,
            missed: None,
        };
        let t = ts("2026-11-22T12:00:00Z"); // a Sunday
        assert_eq!(
            next_after(&s, t).unwrap().to_string(),
            "2026-11-23T08:00:00Z"
        );
        assert_eq!(
            next_after(&every("15m", None), t).unwrap().to_string(),
            "2026-11-22T12:15:00Z"
        );
    }

    #[test]
    fn due_times_within_the_grace_period_all_fire() {
        let c = catch_up(
            &every("5s", None),
            ts("2026-11-23T08:00:10Z"),
            ts("2026-11-23T08:00:17Z"),
        );
        assert_eq!(
            c.fire,
            vec![ts("2026-11-23T08:00:10Z"), ts("2026-11-23T08:00:15Z")]
        );
        assert_eq!((c.missed, c.latest), (0, ts("2026-11-23T08:00:15Z")));
    }

    #[test]
    fn late_due_times_are_skipped_or_run_once() {
        let (first, now) = (ts("2026-11-23T09:00:00Z"), ts("2026-11-23T12:00:30Z"));
        // 09:00, 10:00, 11:00 late; 12:00 on time: it fires under either policy.
        for policy in [None, Some("run_once")] {
            let c = catch_up(&every("1h", policy), first, now);
            assert_eq!(c.fire, vec![ts("2026-11-23T12:00:00Z")], "{policy:?}");
            assert_eq!(c.missed, 3, "{policy:?}");
        }
        let now = ts("2026-11-23T12:05:00Z");
        let skip = catch_up(&every("1h", None), first, now);
        assert_eq!((skip.fire.len(), skip.missed), (0, 4));
        let once = catch_up(&every("1h", Some("run_once")), first, now);
        assert_eq!(
            (once.fire, once.missed),
            (vec![ts("2026-11-23T12:00:00Z")], 3)
        );
    }
}
