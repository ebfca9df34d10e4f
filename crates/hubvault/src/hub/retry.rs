//! When to retry a hub request and how long to wait: pure decisions, no clock reads.
//!
//! 429, 5xx, 404012 `IotHubFailingOver` and transport failures are retried (docs/azure.md,
//! §7.3: a failover answers 404012 for a while); everything else is terminal.
//! The budget is bounded both in attempts and in total time, so a throttle storm surfaces as
//! [`super::Error::Throttled`] instead of hanging a nightly backup. A server's `Retry-After` wins
//! over our own backoff, but never beyond the remaining time budget.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// Retry budget for one logical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, including the first.
    pub max_attempts: u32,
    /// Backoff before the second try; doubles after each failure.
    pub base_delay: Duration,
    /// Cap of a single backoff (our own; a larger `Retry-After` is still honoured).
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first try.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    /// IoT Hub asks to "wait 10 seconds" when throttling; six tries over up to five minutes
    /// ride out a short storm without stalling a scheduled run for long.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_total: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (callers that handle retries themselves).
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait before try number `attempt + 1` (after `attempt` failures, 1-based), or `None`
    /// when the budget is spent. `jitter` in `[0, 1)` spreads clients apart (up to +50 %).
    pub fn delay(
        &self,
        attempt: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts || elapsed >= self.max_total {
            return None;
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let own = exp.mul_f64(1.0 + 0.5 * jitter.clamp(0.0, 1.0));
        let wait = retry_after.unwrap_or(own);
        let left = self.max_total.saturating_sub(elapsed);
        (wait <= left).then_some(wait)
    }
}

const HTTP_DATE: &[BorrowedFormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// The longest `Retry-After` honoured: a server (or a proxy in front of it) asking for more is
/// waited for this long, then asked again. Without a cap a huge value overflowed the deadline
/// arithmetic and stopped a restore half-applied.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Parse `Retry-After`: delta seconds, or an HTTP date relative to `now`; capped at
/// [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = time::PrimitiveDateTime::parse(value, HTTP_DATE)
            .ok()?
            .assume_utc();
        let secs = when.unix_timestamp().saturating_sub(now.unix_timestamp());
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Whether a failed response is worth another try: its HTTP status and 6-digit code.
pub fn retryable(status: u16, code: Option<u32>) -> bool {
    status == 429 || status >= 500 || code == Some(404_012)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
            max_total: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        let d: Vec<_> = (1..5)
            .map(|a| p.delay(a, Duration::ZERO, None, 0.0).unwrap().as_secs())
            .collect();
        assert_eq!(d, [1, 2, 4, 4]);
        assert_eq!(
            p.delay(5, Duration::ZERO, None, 0.0),
            None,
            "attempt budget"
        );
    }

    #[test]
    fn jitter_adds_at_most_half() {
        let p = policy();
        assert_eq!(
            p.delay(2, Duration::ZERO, None, 0.999_999)
                .unwrap()
                .as_millis(),
            2999
        );
    }

    #[test]
    fn retry_after_wins_but_not_beyond_the_time_budget() {
        let p = policy();
        assert_eq!(
            p.delay(1, Duration::ZERO, Some(Duration::from_secs(10)), 0.0),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            p.delay(
                1,
                Duration::from_secs(55),
                Some(Duration::from_secs(10)),
                0.0
            ),
            None
        );
        assert_eq!(p.delay(1, Duration::from_secs(60), None, 0.0), None);
    }

    #[test]
    fn a_failover_is_retried_but_other_404s_are_not() {
        assert!(retryable(404, Some(404_012)));
        assert!(!retryable(404, Some(404_001)) && !retryable(404, None));
        assert!(retryable(429, None) && retryable(503, Some(503_001)));
        assert!(!retryable(401, Some(401_002)));
    }

    #[test]
    fn retry_after_forms() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(); // Tue, 14 Nov 2023 22:13:20 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        // A huge value is capped, never overflows a deadline.
        for huge in [
            "18446744073709551615",
            "99999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(
                parse_retry_after(huge, now),
                Some(MAX_RETRY_AFTER),
                "{huge}"
            );
        }
    }
}
