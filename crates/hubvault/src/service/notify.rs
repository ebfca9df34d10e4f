//! Notifications of scheduled runs: a webhook on a hub's first failure and on its recovery (one
//! pair per outage, judged from the hub's status record in the store, so a failure seen by one
//! replica and the recovery seen by another still make one pair), optionally on every success;
//! and healthchecks-style pings (`/start`, success, `/fail`).
//!
//! Sending never blocks a run: each message goes on its own task, retried with backoff a bounded
//! number of times, then dropped with a warning. URLs carry tokens: they live in [`HookUrl`],
//! whose `Debug` shows nothing, and client errors are stripped of their URL.
//!
//! Body: `{"event", "policy", "hub", "snapshot", "started_at", "finished_at",
//! "error": {"code", "message", "fix"}, "drill"}`; `drill` (`null` for backups) carries a
//! scheduled drill's figures (`to`, `rto_seconds`, `rpo_seconds`, `expected`, `restored`,
//! `left_on_target`, `report`), whose events are `drill_failure` / `drill_recovery` /
//! `drill_success`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

pub use super::targets::{HookUrl, Targets};

use super::hub_run::{Outcome, Report};
use super::status::Transition;
use crate::policy::NotifyOn;

/// Attempts per message, and the first pause between them (doubled each time).
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which webhook event a finished run makes, if any: `failure`, `recovery`, `success` for
/// backups, `drill_failure`, `drill_recovery`, `drill_success` for scheduled drills.
pub fn event_for(report: &Report, on: &[NotifyOn]) -> Option<&'static str> {
    let event = backup_event(report, on)?;
    Some(match (report.drill.is_some(), event) {
        (false, e) => e,
        (true, "failure") => "drill_failure",
        (true, "recovery") => "drill_recovery",
        (true, _) => "drill_success",
    })
}

fn backup_event(report: &Report, on: &[NotifyOn]) -> Option<&'static str> {
    match (report.outcome, report.transition) {
        (Outcome::Failed, Some(Transition::Failed)) if on.contains(&NotifyOn::Failure) => {
            Some("failure")
        }
        (Outcome::Ok, Some(Transition::Recovered)) if on.contains(&NotifyOn::Failure) => {
            Some("recovery")
        }
        (Outcome::Ok, Some(_)) if on.contains(&NotifyOn::Success) => Some("success"),
        _ => None,
    }
}

/// The webhook's JSON body.
pub fn body(event: &str, report: &Report) -> serde_json::Value {
    json!({
        "event": event,
        "policy": report.policy,
        "hub": report.hub,
        "snapshot": report.snapshot,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "error": report.error.as_ref().map(|e| json!({
            "code": e.code, "message": e.message, "fix": e.fix,
        })),
        "drill": report.drill,
    })
}

/// Sends notifications in the background.
#[derive(Debug, Clone)]
pub struct Notifier {
    client: reqwest::Client,
    /// Messages still being sent (for [`Notifier::drain`]).
    in_flight: Arc<AtomicUsize>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

impl Notifier {
    pub fn new() -> Notifier {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Notifier {
            client,
            in_flight: Arc::default(),
        }
    }

    /// Wait (at most `limit`) for the messages still being sent: before a process exits.
    pub async fn drain(&self, limit: Duration) {
        let started = tokio::time::Instant::now();
        while self.in_flight.load(Ordering::SeqCst) > 0 && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A run started: the ping's `/start`.
    pub fn started(&self, targets: &Targets) {
        if let Some(ping) = &targets.ping {
            self.send(
                format!("{}/start", ping.expose().trim_end_matches('/')),
                None,
            );
        }
    }

    /// A run finished: the ping (success or `/fail`), and the webhook when its event is asked for.
    pub fn finished(&self, targets: &Targets, report: &Report) {
        if let Some(ping) = &targets.ping {
            let base = ping.expose().trim_end_matches('/');
            match report.outcome {
                Outcome::Ok => self.send(base.to_owned(), None),
                Outcome::Failed => self.send(format!("{base}/fail"), None),
                Outcome::Skipped | Outcome::Stopped => {}
            }
        }
        if let (Some(hook), Some(event)) = (&targets.webhook, event_for(report, &targets.on)) {
            self.send(hook.expose().to_owned(), Some(body(event, report)));
        }
    }

    /// POST `body` (or nothing) to `url` on a task of its own, retried with backoff.
    fn send(&self, url: String, body: Option<serde_json::Value>) {
        let client = self.client.clone();
        let in_flight = self.in_flight.clone();
        in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            deliver(&client, &url, body.as_ref()).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// POST until accepted, at most [`ATTEMPTS`] times, pausing longer each time.
async fn deliver(client: &reqwest::Client, url: &str, body: Option<&serde_json::Value>) {
    let mut pause = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let request = match body {
            Some(b) => client.post(url).json(b),
            None => client.post(url),
        };
        match request.send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::warn!(
                attempt,
                "a notification was refused with HTTP {}",
                r.status().as_u16()
            ),
            Err(e) => tracing::warn!(attempt, "a notification failed: {}", e.without_url()),
        }
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(2);
    }
    tracing::warn!("a notification was dropped after {ATTEMPTS} attempts");
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn report(outcome: Outcome, transition: Transition) -> Report {
        let t = "2026-12-01T02:00:00Z".parse().unwrap();
        Report {
            run_id: "r".into(),
            policy: "p".into(),
            hub: "hub-a".into(),
            slot: t,
            started_at: t,
            finished_at: t,
            outcome,
            snapshot: None,
            devices: None,
            bytes: None,
            forget_removed: 0,
            error: None,
            transition: Some(transition),
            status: None,
            drill: None,
        }
    }

    #[test]
    fn one_pair_per_outage_and_successes_only_when_asked() {
        let failure = [NotifyOn::Failure];
        let both = [NotifyOn::Failure, NotifyOn::Success];
        let cases = [
            (
                Outcome::Failed,
                Transition::Failed,
                &failure[..],
                Some("failure"),
            ),
            (
                Outcome::Failed,
                Transition::StillFailing,
                &failure[..],
                None,
            ),
            (
                Outcome::Ok,
                Transition::Recovered,
                &failure[..],
                Some("recovery"),
            ),
            (Outcome::Ok, Transition::Ok, &failure[..], None),
            (Outcome::Ok, Transition::Ok, &both[..], Some("success")),
            (
                Outcome::Ok,
                Transition::Recovered,
                &both[..],
                Some("recovery"),
            ),
        ];
        for (outcome, transition, on, want) in cases {
            assert_eq!(
                event_for(&report(outcome, transition), on),
                want,
                "{outcome:?} {transition:?} {on:?}"
            );
        }
    }

    #[test]
    fn drills_have_events_of_their_own() {
        let mut r = report(Outcome::Failed, Transition::Failed);
        r.drill = Some(crate::service::drill_run::DrillFigures::default());
        assert_eq!(event_for(&r, &[NotifyOn::Failure]), Some("drill_failure"));
        r.outcome = Outcome::Ok;
        r.transition = Some(Transition::Recovered);
        assert_eq!(event_for(&r, &[NotifyOn::Failure]), Some("drill_recovery"));
        r.transition = Some(Transition::Ok);
        assert_eq!(event_for(&r, &[NotifyOn::Failure]), None);
        assert_eq!(event_for(&r, &[NotifyOn::Success]), Some("drill_success"));
        assert!(body("drill_failure", &r)["drill"].is_object());
    }

    #[test]
    fn the_url_never_shows() {
        let t = Targets {
            webhook: Some(HookUrl::new("https://hooks.example/T0K3N")),
            ping: None,
            on: vec![],
        };
        assert!(!format!("{t:?}").contains("T0K3N"));
    }
}
