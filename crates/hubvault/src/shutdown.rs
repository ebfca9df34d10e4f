//! The signal that asks a running use case to stop — Ctrl-C, SIGTERM, later a run's timeout —
//! and what a use case reports when it stopped for it.
//!
//! Whoever starts work owns its cancellation: the binary only fires the signal; each use case
//! that started a hub job and put blobs in staging cancels that job and deletes those blobs
//! itself, in one place (`Staging::abandon` in the staging module), and says what it did.
//!
//! Must not: stop anything by itself (it is only a signal).

use tokio::sync::watch;

/// Fires the signal (held by whoever listens for Ctrl-C and SIGTERM).
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// The signal a use case watches. Cheap to clone; [`Shutdown::never`] for callers that have none.
#[derive(Debug, Clone)]
pub struct Shutdown(Option<watch::Receiver<bool>>);

/// A new signal: the trigger and the watching end.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(Some(rx)))
}

impl Trigger {
    /// Ask every holder of the signal to stop.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::never()
    }
}

impl Shutdown {
    /// A signal that never fires.
    pub fn never() -> Shutdown {
        Shutdown(None)
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Completes once a stop is asked for (never, for [`Shutdown::never`]).
    pub async fn requested(&self) {
        let Some(mut rx) = self.0.clone() else {
            return std::future::pending().await;
        };
        // A dropped trigger never fires: wait forever then.
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A use case stopped because it was asked to: what it cleaned up on the way out, and how to go
/// on. What was already applied stays (a rerun plans against it).
#[derive(Debug, thiserror::Error)]
#[error("interrupted{done}; {}", crate::diagnostic::fix_text(self))]
pub struct Interrupted {
    /// What was cleaned up, each part starting with "; " (empty when there was nothing).
    pub done: String,
    /// The next step: run the same command again, and why that is safe.
    pub next: &'static str,
}

impl crate::diagnostic::Diagnostic for Interrupted {
    fn code(&self) -> &'static str {
        "interrupted"
    }

    fn fix(&self) -> Option<String> {
        Some(self.next.to_owned())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fired_signal_is_seen_by_every_holder() {
        let (trigger, shutdown) = channel();
        let other = shutdown.clone();
        assert!(!shutdown.is_requested());
        let waiting = tokio::spawn(async move { other.requested().await });
        trigger.fire();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(shutdown.is_requested());
        let never = Shutdown::never();
        let r = tokio::time::timeout(std::time::Duration::from_millis(20), never.requested()).await;
        assert!(r.is_err(), "never fires");
    }
}
