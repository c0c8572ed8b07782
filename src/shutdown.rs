//! Stopping and retrying, for every long-running thread: the stop flag ([`Shutdown`]), the wait
//! between failed tries ([`Backoff`]), the "warn once per outage" state ([`Outage`]), and
//! [`spawn_loop`], the one way a thread that repeats a step until the stop is started.
//!
//! A leaf: it knows no other module of the crate but `rand` (for jitter). It must not learn what
//! the loops do; their names, steps and messages belong to their owners.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{info, warn};

/// The process-wide stop flag. Blocking loops wake at least every half second to check it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// Whether the process is stopping.
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Asks every thread to stop.
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Sleeps for `duration`, returning early when the process stops.
    pub(crate) fn sleep(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while !self.is_set() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// The wait before the next try after a failure: by default exponential with jitter, 100 ms
/// doubling to 10 s; [`Backoff::fixed`] waits the same every time.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    failures: u32,
    /// `Some`: every wait is this long, without jitter.
    fixed: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Backoff::FIRST,
            failures: 0,
            fixed: None,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    /// The same wait after every failure (for loops whose period already spaces their tries).
    pub(crate) fn fixed(wait: Duration) -> Backoff {
        Backoff {
            fixed: Some(wait),
            ..Backoff::default()
        }
    }

    /// The wait before the next try (with ±25% jitter), growing each call.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if let Some(wait) = self.fixed {
            return wait;
        }
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        base.mul_f64(0.75 + 0.5 * crate::rand::unit())
    }

    /// Failures since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to the shortest wait, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = Backoff::FIRST;
        self.failures = 0;
    }
}

/// Whether a dependency (Redis, mostly) is failing, so that a loop warns once when an outage
/// starts and says once that it is over, instead of a line per try.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Outage {
    down: bool,
}

impl Outage {
    /// Records a failure; true for the first of an outage (warn then, and only then).
    pub(crate) fn failed(&mut self) -> bool {
        !std::mem::replace(&mut self.down, true)
    }

    /// Records a success; true when it ends an outage (say so then).
    pub(crate) fn recovered(&mut self) -> bool {
        std::mem::replace(&mut self.down, false)
    }
}

/// Starts the thread `name`, which runs `step` until `shutdown` is set. After a success it sleeps
/// for the duration `step` returned; after a failure, for `backoff`'s next delay. The first
/// failure of an outage is logged as `"{error}; retrying"`, and the success that ends it as
/// `restored`. Sleeps end early at the stop. A failed spawn is returned, never ignored.
pub(crate) fn spawn_loop<E, F>(
    name: &str,
    shutdown: Shutdown,
    mut backoff: Backoff,
    restored: &'static str,
    mut step: F,
) -> std::io::Result<JoinHandle<()>>
where
    E: fmt::Display,
    F: FnMut() -> Result<Duration, E> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut outage = Outage::default();
            while !shutdown.is_set() {
                let wait = match step() {
                    Ok(wait) => {
                        if outage.recovered() {
                            info!("{restored}");
                        }
                        backoff.reset();
                        wait
                    }
                    Err(e) => {
                        if outage.failed() {
                            warn!("{e}; retrying");
                        }
                        backoff.next_delay()
                    }
                };
                shutdown.sleep(wait);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_warns_once_and_recovers_once() {
        let mut outage = Outage::default();
        assert!(!outage.recovered(), "no outage yet");
        assert!(outage.failed(), "the first failure starts the outage");
        assert!(!outage.failed(), "later failures are the same outage");
        assert!(outage.recovered(), "the first success ends it");
        assert!(!outage.recovered());
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(waits[0] <= Duration::from_millis(125), "{waits:?}");
        assert!(waits[9] >= Duration::from_millis(7_500), "{waits:?}");
        assert_eq!(backoff.failures(), 10);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.next_delay() <= Duration::from_millis(125));
        let mut fixed = Backoff::fixed(Duration::from_secs(1));
        assert_eq!(fixed.next_delay(), Duration::from_secs(1));
        assert_eq!(fixed.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn a_loop_runs_until_the_stop_and_is_joined() {
        let shutdown = Shutdown::default();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut n = 0u32;
        let handle = spawn_loop(
            "test-loop",
            shutdown.clone(),
            Backoff::fixed(Duration::from_millis(1)),
            "back",
            move || {
                n += 1;
                let _ = tx.send(n);
                if n % 2 == 0 {
                    Err("even")
                } else {
                    Ok(Duration::from_millis(1))
                }
            },
        );
        let handle = match handle {
            Ok(handle) => handle,
            Err(e) => panic!("spawn: {e}"),
        };
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(2));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(3));
        shutdown.set();
        assert!(handle.join().is_ok());
    }
}
