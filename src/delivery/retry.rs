//! What happens after an attempt: done, retry when, disable, or give up. Pure: no I/O, no clock.
//!
//! CONTRACT sections 3 and 6: 2xx is success; 410 disables the webhook; 3xx (never followed),
//! other statuses, timeouts and connection errors retry with
//! `min(initial_delay_ms * backoff_multiplier^(n-1), max_delay_ms)` ±20% jitter, and a
//! `Retry-After` on 429/503 sets the earliest next attempt (capped).

use std::time::{Duration, SystemTime};

use crate::outcome::OutcomeClass;
use crate::webhook::model::RetryPolicy;

/// The next step for a delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    /// Delivered.
    Done,
    /// Try again after this delay.
    Retry(Duration),
    /// The endpoint answered 410 Gone: disable the webhook.
    Gone,
    /// Attempts used up.
    GiveUp,
}

/// Decides what follows attempt number `attempt` (1-based) that ended with `class`/`status`.
///
/// `jitter` is a uniform random number in [0, 1).
pub(crate) fn decide(
    policy: &RetryPolicy,
    attempt: u32,
    class: OutcomeClass,
    status: Option<u16>,
    retry_after: Option<Duration>,
    max_retry_after: Duration,
    jitter: f64,
) -> Decision {
    if class == OutcomeClass::Success {
        return Decision::Done;
    }
    if status == Some(410) {
        return Decision::Gone;
    }
    if attempt >= policy.max_attempts {
        return Decision::GiveUp;
    }
    let mut delay = backoff(policy, attempt, jitter);
    if matches!(status, Some(429) | Some(503))
        && let Some(after) = retry_after
    {
        delay = delay.max(after.min(max_retry_after));
    }
    Decision::Retry(delay)
}

/// The delay after failed attempt `attempt` (1-based), with ±20% jitter (`jitter` in [0, 1)).
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(1000) as i32;
    let base = (policy.initial_delay_ms as f64 * policy.backoff_multiplier.powi(exponent))
        .min(policy.max_delay_ms as f64);
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    Duration::from_millis((base * factor).round() as u64)
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 section 10.2.3).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        initial_delay_ms: 1000,
        backoff_multiplier: 2.0,
        max_delay_ms: 3000,
    };
    const CAP: Duration = Duration::from_secs(3600);

    fn d(ms: u64) -> Decision {
        Decision::Retry(Duration::from_millis(ms))
    }

    #[test]
    fn schedule_grows_and_caps() {
        let mid = 0.5; // no jitter
        assert_eq!(
            decide(&P, 1, OutcomeClass::ServerError, Some(500), None, CAP, mid),
            d(1000)
        );
        assert_eq!(
            decide(&P, 2, OutcomeClass::Timeout, None, None, CAP, mid),
            d(2000)
        );
        assert_eq!(
            decide(&P, 3, OutcomeClass::Connect, None, None, CAP, mid),
            d(3000)
        );
        assert_eq!(
            decide(&P, 4, OutcomeClass::Connect, None, None, CAP, mid),
            Decision::GiveUp
        );
        assert_eq!(
            decide(&P, 1, OutcomeClass::Success, Some(204), None, CAP, mid),
            Decision::Done
        );
        assert_eq!(
            decide(&P, 1, OutcomeClass::Redirect, Some(302), None, CAP, mid),
            d(1000)
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        assert_eq!(backoff(&P, 1, 0.0), Duration::from_millis(800));
        assert_eq!(backoff(&P, 1, 0.999_999), Duration::from_millis(1200));
    }

    #[test]
    fn gone_disables_even_on_the_last_attempt() {
        assert_eq!(
            decide(&P, 4, OutcomeClass::ClientError, Some(410), None, CAP, 0.5),
            Decision::Gone
        );
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only_and_capped() {
        let after = Some(Duration::from_secs(30));
        assert_eq!(
            decide(&P, 1, OutcomeClass::ClientError, Some(429), after, CAP, 0.5),
            d(30_000)
        );
        assert_eq!(
            decide(&P, 1, OutcomeClass::ServerError, Some(503), after, CAP, 0.5),
            d(30_000)
        );
        assert_eq!(
            decide(&P, 1, OutcomeClass::ServerError, Some(500), after, CAP, 0.5),
            d(1000)
        );
        let cap = Duration::from_secs(10);
        assert_eq!(
            decide(&P, 1, OutcomeClass::ClientError, Some(429), after, cap, 0.5),
            d(10_000)
        );
        // A Retry-After shorter than the backoff does not bring the retry forward.
        let short = Some(Duration::from_millis(10));
        assert_eq!(
            decide(&P, 1, OutcomeClass::ClientError, Some(429), short, CAP, 0.5),
            d(1000)
        );
    }

    #[test]
    fn retry_after_formats() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:27 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
