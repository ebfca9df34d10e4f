//! The serve loop: sleep until the [`Plan`] says something is due, start each due run as its own
//! task (bounded concurrency, per-policy jitter), take a new plan when policies are re-read, and
//! on shutdown stop taking runs and wait for the running ones (which stop themselves cleanly).
//!
//! The clock is injected: [`Clock::System`] in production; [`Clock::Tokio`] follows tokio's
//! clock, so a test with paused time runs a simulated day in milliseconds, without sleeps.
//!
//! Must not: decide what is due (that is [`slots`](super::slots)), or know what a run does (the
//! caller's `start` does it).

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::slots::{Due, Plan};
use crate::shutdown::Shutdown;

/// Where `now` comes from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's wall clock.
    System,
    /// `start` plus the time elapsed on tokio's clock since `at` (paused in tests).
    Tokio {
        start: DateTime<Utc>,
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock reading `start` now, advancing with tokio's clock.
    pub fn tokio(start: DateTime<Utc>) -> Clock {
        Clock::Tokio {
            start,
            at: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { start, at } => {
                let elapsed = TimeDelta::from_std(at.elapsed()).unwrap_or(TimeDelta::MAX);
                start.checked_add_signed(elapsed).unwrap_or(*start)
            }
        }
    }

    /// Sleep until `t` on this clock (at most `cap` at a time, so a changed wall clock or a
    /// far-off wake is re-checked).
    async fn sleep_until(&self, t: DateTime<Utc>, cap: Duration) {
        let wait = t
            .signed_duration_since(self.now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait.min(cap)).await;
    }
}

/// How the loop runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Runs at once, across all policies and hubs.
    pub concurrency: usize,
    /// Longest single sleep (the wall clock is re-read at least this often).
    pub max_sleep: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 4,
            max_sleep: Duration::from_secs(60),
        }
    }
}

/// What the loop tells its owner.
pub trait Observer: Send + Sync {
    /// A due run was not started because the previous run of the same policy and hub is still
    /// going (the slot coalesces into the next one).
    fn still_running(&self, due: &Due) {
        let _ = due;
    }
    /// The plan changed (started, re-read, or a run was taken): next runs per policy.
    fn planned(&self, plan: &Plan) {
        let _ = plan;
    }
    /// How long after its slot `due` starts (the policy's jitter); none by default.
    fn jitter(&self, due: &Due) -> Duration {
        let _ = due;
        Duration::ZERO
    }
}

impl Observer for () {}

/// Serve `plan` until `shutdown`: each due run goes to `start(due)` after `observer.jitter(due)`, at most
/// `settings.concurrency` at once. A new plan arriving on `reload` replaces the current one.
/// Returns once shutdown was asked for and every started run has ended.
pub async fn serve<F, Fut>(
    mut plan: Plan,
    clock: Clock,
    settings: Settings,
    mut reload: mpsc::Receiver<Plan>,
    shutdown: Shutdown,
    observer: &dyn Observer,
    start: F,
) where
    F: Fn(Due) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let start = Arc::new(start);
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let running: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    let mut tasks: JoinSet<()> = JoinSet::new();
    observer.planned(&plan);
    loop {
        while tasks.try_join_next().is_some() {}
        let wake = plan.next_wake();
        tokio::select! {
            () = shutdown.requested() => break,
            new = reload.recv() => {
                match new {
                    Some(p) => plan = p,
                    None => reload = mpsc::channel(1).1,
                }
                observer.planned(&plan);
                continue;
            }
            () = sleep_for(clock, wake, settings.max_sleep) => {}
        }
        let due = plan.take_due(clock.now());
        if due.is_empty() {
            continue;
        }
        observer.planned(&plan);
        for d in due {
            let key = (d.policy.clone(), d.hub.clone());
            if !lock(&running).insert(key.clone()) {
                observer.still_running(&d);
                continue;
            }
            let delay = observer.jitter(&d);
            let (start, permits, running, stop) = (
                start.clone(),
                permits.clone(),
                running.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                tokio::select! {
                    () = stop.requested() => {}
                    () = tokio::time::sleep(delay) => {
                        if let Ok(_permit) = permits.acquire_owned().await
                            && !stop.is_requested()
                        {
                            start(d).await;
                        }
                    }
                }
                lock(&running).remove(&key);
            });
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn sleep_for(clock: Clock, wake: Option<DateTime<Utc>>, cap: Duration) {
    match wake {
        Some(t) => clock.sleep_until(t, cap).await,
        None => tokio::time::sleep(cap).await,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A jitter in `[0, max]`, fixed per (policy, hub, slot) so every replica delays a run alike.
pub fn jitter_for(due: &Due, max: Duration) -> Duration {
    use std::hash::{Hash as _, Hasher as _};
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&due.policy, &due.hub, due.slot.timestamp()).hash(&mut h);
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(
        h.finish()
            .checked_rem(millis.saturating_add(1))
            .unwrap_or(0),
    )
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
