//! Retry and time limits: how many attempts a step gets, how long to wait between them,
//! how long one attempt may take.

use std::time::Duration;

use jiff::Timestamp;

use crate::definition::{Backoff, Retry};
use crate::engine::state::Slot;

pub(super) fn max_attempts(retry: &Option<Retry>) -> i64 {
    match retry {
        None => 1,
        Some(Retry::Attempts(n)) => i64::from(*n).max(1),
        Some(Retry::Policy(p)) => i64::from(p.max_attempts.unwrap_or(3)).max(1),
    }
}

/// The step's attempts are counted from the first of the run's current attempt, so a run
/// retried with `POST /retry` gives each step its full `retry` again.
pub(super) fn retries_left(slot: &Slot, retry: &Option<Retry>) -> bool {
    slot.attempt - slot.base_attempt + 1 < max_attempts(retry)
}

/// Delay before the attempt after `attempt` (counted within the run attempt, from 1).
/// `fixed` waits exactly `initialDelay`; `exponential` doubles from `initialDelay` up to
/// `maxDelay` with equal jitter (half fixed, half random) so retries of many runs spread out;
/// without `jitter` (`stepwise test`'s virtual clock) it waits the full delay, so a case's
/// retries fall at the times its author computes and every case's at the same ones.
pub(super) fn backoff_delay(retry: &Option<Retry>, attempt: i64, jitter: bool) -> Duration {
    let (kind, initial, max) = match retry {
        Some(Retry::Policy(p)) => (
            p.backoff.unwrap_or(Backoff::Exponential),
            p.initial_delay
                .as_deref()
                .and_then(|d| crate::duration::parse(d).ok())
                .unwrap_or(Duration::from_secs(1)),
            p.max_delay
                .as_deref()
                .and_then(|d| crate::duration::parse(d).ok())
                .unwrap_or(Duration::from_secs(300)),
        ),
        _ => (
            Backoff::Exponential,
            Duration::from_secs(1),
            Duration::from_secs(300),
        ),
    };
    match kind {
        Backoff::Fixed => initial,
        Backoff::Exponential => {
            let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
            let base = initial.saturating_mul(2u32.saturating_pow(exp)).min(max);
            if !jitter {
                return base;
            }
            let half = base / 2;
            half + half.mul_f64(fastrand::f64())
        }
    }
}

/// Limit of one attempt: the step's `timeout`, else the engine default; an http action's
/// own `timeout` can only shorten it.
pub(super) fn attempt_timeout(
    default: Duration,
    step_timeout: &Option<String>,
    http_timeout: Option<&str>,
) -> Duration {
    let parse = |t: Option<&str>| t.and_then(|t| crate::duration::parse(t).ok());
    let mut t = parse(step_timeout.as_deref()).unwrap_or(default);
    if let Some(h) = parse(http_timeout) {
        t = t.min(h);
    }
    t
}

pub(super) fn add(t: Timestamp, d: Duration) -> Result<Timestamp, String> {
    let span = jiff::SignedDuration::try_from(d).map_err(|e| e.to_string())?;
    t.checked_add(span).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::RetryPolicy;

    fn policy(backoff: Backoff) -> Option<Retry> {
        Some(Retry::Policy(RetryPolicy {
            max_attempts: Some(10),
            backoff: Some(backoff),
            initial_delay: Some("100ms".into()),
            max_delay: Some("1s".into()),
        }))
    }

    #[test]
    fn exponential_backoff_grows_with_jitter_and_is_capped() {
        let p = policy(Backoff::Exponential);
        let d1 = backoff_delay(&p, 1, true);
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
            "{d1:?}"
        );
        let d3 = backoff_delay(&p, 3, true);
        assert!(
            d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
            "{d3:?}"
        );
        assert!(backoff_delay(&p, 9, true) <= Duration::from_secs(1));
        assert_eq!(backoff_delay(&p, 3, false), Duration::from_millis(400));
        assert_eq!(max_attempts(&None), 1);
        assert_eq!(max_attempts(&Some(Retry::Attempts(4))), 4);
    }

    #[test]
    fn fixed_backoff_waits_exactly_the_initial_delay() {
        let p = policy(Backoff::Fixed);
        for attempt in 1..6 {
            assert_eq!(backoff_delay(&p, attempt, true), Duration::from_millis(100));
        }
    }

    #[test]
    fn attempts_count_from_the_run_attempt() {
        let mut slot = crate::engine::state::Slot {
            attempt: 4,
            base_attempt: 4,
            ..Default::default()
        };
        let retry = Some(Retry::Attempts(3));
        assert!(retries_left(&slot, &retry));
        slot.attempt = 6;
        assert!(!retries_left(&slot, &retry));
    }
}
