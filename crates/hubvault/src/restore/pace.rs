//! Client-side pacing of registry calls against a hub's throttle: an adaptive rate limiter.
//!
//! IoT Hub throttles registry operations with a token bucket per operation class (so does the
//! simulator: `rate` tokens a second, at most one second's worth banked). Sleeping out every 429's
//! `Retry-After` with a few calls in flight wastes most of that budget. Instead, calls are spaced
//! `1/rate` apart and the rate is learned from the answers, like TCP's congestion control:
//!
//! - **slow start**: until the first 429 every accepted answer raises the rate by
//!   [`SLOW_START_STEP`] (exponential in answers, as TCP's slow start), so an unthrottled hub is
//!   soon limited only by the calls in flight and an unknown limit is found in a second or two;
//! - **decrease**: a 429 cuts the rate to [`CUT`] of what the hub actually accepted over the last
//!   second (when we were far above the limit, cutting from our own rate would take many rounds;
//!   never more than half at once, since one 429 may be someone else's burst). Only once per
//!   reaction: 429s of calls sent before the last cut answer the old rate. The next call waits one
//!   interval at the new rate — not the whole `Retry-After`; the throttled call itself is resent
//!   no sooner than its `Retry-After`, by the caller;
//! - **additive increase**: after a 429 the rate grows by [`PROBE`] of the rate throttled at, a
//!   second. Between cuts it spends most of a cycle between `CUT` of the limit and the limit, and
//!   the hub's bucket absorbs the small overshoot, so the accepted rate stays near the limit.
//!
//! A restore makes several passes (devices, modules, edge links, deletes), each a new pacer: what
//! one learned about a hub ([`Pacer::remember`]) starts the next ([`Pacer::for_hub`]) so passes
//! do not each slow-start and overshoot again.
//!
//! Pure: every decision takes `now` as a parameter. Must not: sleep, send, or read the clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// First rate when the limit is unknown (calls a second).
pub const START_RATE: f64 = 10.0;
/// Slow start: +5 % per accepted answer (doubles every 14 answers: 10 → 50 calls/s in ~1 s).
pub const SLOW_START_STEP: f64 = 0.05;
/// A 429 keeps this share of the accepted rate: just under the limit, so the bucket refills.
pub const CUT: f64 = 0.85;
/// The accepted rate is measured over this window (the hub's bucket banks about one second).
const WINDOW: Duration = Duration::from_secs(1);
/// After a 429, growth per second as a share of the rate throttled at (~1 call/s at 50/s), so a
/// cut is won back in ~7 s and the overshoot past the limit stays small.
pub const PROBE: f64 = 0.02;
/// Bounds of the rate: never stop entirely, never flood.
pub const MIN_RATE: f64 = 0.5;
pub const MAX_RATE: f64 = 2000.0;

/// Per hub and kind of call (`"hub-b bulk"`): the last pacer's rate and the rate it was
/// throttled at, if ever. Process-wide, as one command's passes share the hub's throttle.
static LEARNED: Mutex<BTreeMap<String, (f64, Option<f64>)>> = Mutex::new(BTreeMap::new());

/// The adaptive rate limiter.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: f64,
    /// Earliest start of the next call.
    next: Instant,
    /// Last time the rate grew (growth is per second of accepted answers).
    grown: Instant,
    /// Last cut, and the rate just before it (`None`: still in slow start).
    cut: Option<(Instant, f64)>,
    /// When the pacer started, and the answers accepted within the last [`WINDOW`].
    started: Instant,
    accepts: VecDeque<Instant>,
}

impl Pacer {
    pub fn new(start_rate: f64, now: Instant) -> Pacer {
        Pacer {
            rate: start_rate.clamp(MIN_RATE, MAX_RATE),
            next: now,
            grown: now,
            cut: None,
            started: now,
            accepts: VecDeque::new(),
        }
    }

    /// A pacer for `key` (hub and kind of call) that starts where the last one remembered left
    /// off, or from [`START_RATE`] in slow start.
    pub fn for_hub(key: &str, now: Instant) -> Pacer {
        let learned = LEARNED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied();
        let Some((rate, throttled_at)) = learned else {
            return Pacer::new(START_RATE, now);
        };
        Pacer {
            cut: throttled_at.map(|t| (now, t)),
            ..Pacer::new(rate, now)
        }
    }

    /// Keep what this pacer learned for the next [`Pacer::for_hub`] with the same `key`.
    pub fn remember(&self, key: &str) {
        LEARNED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), (self.rate, self.cut.map(|(_, t)| t)));
    }

    /// Calls a second currently allowed.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When the next call may start (not before `now`).
    pub fn next_start(&self, now: Instant) -> Instant {
        self.next.max(now)
    }

    /// A call starts at `now`: the one after it waits one interval.
    pub fn sent(&mut self, now: Instant) {
        let start = self.next.max(now);
        self.next = start.checked_add(interval(self.rate)).unwrap_or(start);
    }

    /// A call was accepted (any answer but 429): grow the rate (see the module comment).
    pub fn accepted(&mut self, now: Instant) {
        self.forget_before(now);
        self.accepts.push_back(now);
        let dt = now
            .saturating_duration_since(self.grown)
            .as_secs_f64()
            .min(1.0);
        self.grown = now;
        let step = match self.cut {
            None => self.rate * SLOW_START_STEP,
            Some((_, throttled_at)) => throttled_at * PROBE * dt,
        };
        self.rate = (self.rate + step).min(MAX_RATE);
    }

    /// Calls a second the hub accepted over the last [`WINDOW`] (or since the start, if shorter).
    fn accepted_rate(&mut self, now: Instant) -> f64 {
        self.forget_before(now);
        let span = now
            .saturating_duration_since(self.started)
            .min(WINDOW)
            .as_secs_f64()
            .max(0.001);
        // At most MAX_RATE × WINDOW entries: fits a u32.
        f64::from(u32::try_from(self.accepts.len()).unwrap_or(u32::MAX)) / span
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .accepts
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > WINDOW)
        {
            self.accepts.pop_front();
        }
    }

    /// A call sent at `sent_at` came back 429 at `now`. Returns whether the rate was cut.
    pub fn throttled(&mut self, sent_at: Instant, now: Instant) -> bool {
        if self.cut.is_some_and(|(at, _)| sent_at < at) {
            // It was sent at the rate already cut for: the cut is still taking effect.
            return false;
        }
        let accepted = self.accepted_rate(now).clamp(self.rate * 0.5, self.rate);
        self.cut = Some((now, self.rate));
        self.rate = (accepted * CUT).max(MIN_RATE);
        self.grown = now;
        self.next = self
            .next
            .max(now.checked_add(interval(self.rate)).unwrap_or(now));
        true
    }
}

fn interval(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate)
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

    fn at(base: Instant, secs: f64) -> Instant {
        base + Duration::from_secs_f64(secs)
    }

    #[test]
    fn calls_are_spaced_by_the_rate_and_never_in_the_past() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10.0, t0);
        assert_eq!(p.next_start(t0), t0);
        p.sent(t0);
        assert_eq!(p.next_start(t0), at(t0, 0.1));
        // Idle time is not banked: after a pause the next call goes now, not in a burst.
        assert_eq!(p.next_start(at(t0, 5.0)), at(t0, 5.0));
    }

    #[test]
    fn slow_start_grows_per_answer_then_a_429_cuts_to_the_accepted_rate_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(START_RATE, t0);
        // 40 answers over the first second: 10 × 1.05⁴⁰ ≈ 70 calls/s.
        for i in 1..=40 {
            p.accepted(at(t0, f64::from(i) / 40.0));
        }
        let before = p.rate();
        assert!((before - 10.0 * 1.05f64.powi(40)).abs() < 1e-6, "{before}");

        // The hub accepted 40 in the last second: the cut goes to 85 % of 40, not of 70.
        let t = at(t0, 1.0);
        assert!(p.throttled(at(t0, 0.99), t));
        assert!((p.rate() - 40.0 * CUT).abs() < 1e-6, "{}", p.rate());
        // The next call waits one interval at the new rate, not the 1 s of a Retry-After.
        assert_eq!(p.next_start(t), t + interval(p.rate()));
        // A second 429 for a call sent before the cut does not cut again.
        assert!(!p.throttled(at(t0, 0.995), at(t0, 1.01)));
        assert!((p.rate() - 40.0 * CUT).abs() < 1e-6);

        // Additive: one second later, +2 % of the rate throttled at.
        let cut = p.rate();
        p.accepted(at(t0, 2.0));
        assert!(
            (p.rate() - (cut + before * PROBE)).abs() < 1e-6,
            "{}",
            p.rate()
        );
    }

    #[test]
    fn one_cut_never_takes_more_than_half() {
        let t0 = Instant::now();
        let mut p = Pacer::new(40.0, t0);
        // Nothing accepted yet (another client drained the bucket): halve, don't stop.
        assert!(p.throttled(t0, at(t0, 0.5)));
        assert!((p.rate() - 20.0 * CUT).abs() < 1e-6, "{}", p.rate());
    }

    #[test]
    fn the_next_pass_starts_at_the_learned_rate() {
        let t0 = Instant::now();
        let key = "pace-test-hub bulk";
        let fresh = Pacer::for_hub(key, t0);
        assert!((fresh.rate() - START_RATE).abs() < 1e-9);
        let mut p = Pacer::new(60.0, t0);
        p.throttled(t0, at(t0, 0.1));
        p.remember(key);
        let next = Pacer::for_hub(key, at(t0, 5.0));
        assert!((next.rate() - p.rate()).abs() < 1e-9);
        // Past slow start: it probes additively from there.
        let mut grown = next.clone();
        grown.accepted(at(t0, 6.0));
        assert!((grown.rate() - (p.rate() + 60.0 * PROBE)).abs() < 1e-6);
    }

    #[test]
    fn a_storm_floors_the_rate_but_never_stops_it() {
        let t0 = Instant::now();
        let mut p = Pacer::new(START_RATE, t0);
        for i in 0..100 {
            let now = at(t0, f64::from(i));
            p.throttled(now, now);
        }
        assert!((p.rate() - MIN_RATE).abs() < 1e-12, "{}", p.rate());
    }

    /// Against a token bucket like the hub's (50/s, one second banked), with calls answered
    /// after 20 ms, the pacer keeps the accepted rate at ≥ 90 % of the limit and few calls 429.
    #[test]
    fn against_a_token_bucket_the_accepted_rate_stays_near_the_limit() {
        const LIMIT: f64 = 50.0;
        const LATENCY: f64 = 0.02;
        let t0 = Instant::now();
        let mut p = Pacer::new(START_RATE, t0);
        let (mut tokens, mut last) = (LIMIT, 0.0f64);
        let (mut accepted, mut throttled) = (0u32, 0u32);
        let mut now = 0.0;
        let end = 60.0;
        // Sends in time order; each answer is applied before the next send (latency < interval).
        while now < end {
            now = p.next_start(at(t0, now)).duration_since(t0).as_secs_f64();
            let sent = at(t0, now);
            p.sent(sent);
            tokens = (tokens + (now - last) * LIMIT).min(LIMIT);
            last = now;
            let answer = at(t0, now + LATENCY);
            if tokens >= 1.0 {
                tokens -= 1.0;
                accepted += 1;
                p.accepted(answer);
            } else {
                throttled += 1;
                p.throttled(sent, answer);
            }
        }
        let rate = f64::from(accepted) / end;
        assert!(rate >= 0.9 * LIMIT, "accepted {rate:.1}/s");
        assert!(
            f64::from(throttled) < 0.1 * f64::from(accepted),
            "{throttled} throttled of {accepted}"
        );
    }
}
