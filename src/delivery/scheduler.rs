//! The timer thread: retries until they are due, and the trailing edge of the progress throttle.
//!
//! One thread owns a heap ordered by due time. It never blocks on a full delivery queue: an item
//! that cannot be handed over is put back a little later, so a saturated retry pool delays only
//! retries, never throttle flushes of first attempts or the timer itself.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::Delivery;
use super::lines::{Entered, Lines};
use super::throttle::{Throttle, ThrottleKey};
use crate::shutdown::Shutdown;

/// Something to do at a given time.
#[derive(Debug)]
pub(crate) enum Timed {
    /// Make the next attempt of this delivery.
    Retry(Delivery),
    /// End a throttle period for this key.
    Flush(ThrottleKey),
}

/// How long a hand-over that found the queue full waits before trying again.
const REQUEUE_DELAY: Duration = Duration::from_millis(50);
/// Longest sleep, so shutdown is noticed.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// Figures the API reports.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// Retries waiting.
    pub(crate) retries: AtomicUsize,
    /// Due time of the earliest retry, ms since the epoch (0: none).
    pub(crate) next_retry_due_ms: AtomicU64,
}

/// Where timed items go in.
#[derive(Debug, Clone)]
pub(crate) struct SchedulerHandle {
    tx: Sender<(Instant, Timed)>,
    /// Shared with the scheduler thread.
    pub(crate) backlog: Arc<Backlog>,
}

impl SchedulerHandle {
    /// Schedules `item` for `at`. Fails only when the scheduler has stopped.
    pub(crate) fn schedule(&self, at: Instant, item: Timed) -> Result<(), Timed> {
        self.tx.send((at, item)).map_err(|e| e.into_inner().1)
    }
}

struct Entry<T> {
    due: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The scheduler's channel; the receiver goes to [`spawn`].
pub(crate) fn channel() -> (SchedulerHandle, Receiver<(Instant, Timed)>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (
        SchedulerHandle {
            tx,
            backlog: Arc::new(Backlog::default()),
        },
        rx,
    )
}

/// Starts the `delivery-scheduler` thread.
pub(crate) fn spawn(
    rx: Receiver<(Instant, Timed)>,
    backlog: Arc<Backlog>,
    retry_tx: Sender<Delivery>,
    first_tx: Sender<Delivery>,
    throttle: Arc<Throttle>,
    lines: Arc<Lines>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("delivery-scheduler".into())
        .spawn(move || {
            let mut timers = Timers::default();
            while !shutdown.is_set() {
                let now = Instant::now();
                if timers
                    .fire(now, &retry_tx, &first_tx, &throttle, &lines)
                    .is_err()
                {
                    return;
                }
                publish(
                    &backlog,
                    timers.retries.len(),
                    timers.retries.peek().map(|Reverse(e)| e.due),
                );
                let wait = timers
                    .next_due()
                    .map(|due| due.saturating_duration_since(Instant::now()))
                    .unwrap_or(MAX_SLEEP)
                    .min(MAX_SLEEP);
                match rx.recv_timeout(wait) {
                    Ok((due, item)) => {
                        timers.add(due, item);
                        for (due, item) in rx.try_iter().take(10_000) {
                            timers.add(due, item);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        })
}

/// What the scheduler thread holds. Retries and throttle work live in separate heaps so the
/// earliest retry (reported as the backlog's age) is always at the top of its own heap.
#[derive(Default)]
struct Timers {
    seq: u64,
    retries: BinaryHeap<Reverse<Entry<Delivery>>>,
    throttle: BinaryHeap<Reverse<Entry<ThrottleWork>>>,
}

enum ThrottleWork {
    /// End a throttle period.
    Flush(ThrottleKey),
    /// A flushed delivery that found the first-attempt queue full.
    Send(Delivery),
}

/// The receiving side has gone: the process is stopping.
struct Stopped;

impl Timers {
    fn add(&mut self, due: Instant, item: Timed) {
        self.seq += 1;
        let seq = self.seq;
        match item {
            Timed::Retry(d) => self.retries.push(Reverse(Entry { due, seq, item: d })),
            Timed::Flush(k) => self.throttle.push(Reverse(Entry {
                due,
                seq,
                item: ThrottleWork::Flush(k),
            })),
        }
    }

    fn add_throttle(&mut self, due: Instant, work: ThrottleWork) {
        self.seq += 1;
        let seq = self.seq;
        self.throttle.push(Reverse(Entry {
            due,
            seq,
            item: work,
        }));
    }

    fn next_due(&self) -> Option<Instant> {
        let r = self.retries.peek().map(|Reverse(e)| e.due);
        let t = self.throttle.peek().map(|Reverse(e)| e.due);
        match (r, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hands over everything due at `now`.
    fn fire(
        &mut self,
        now: Instant,
        retry_tx: &Sender<Delivery>,
        first_tx: &Sender<Delivery>,
        throttle: &Throttle,
        lines: &Lines,
    ) -> Result<(), Stopped> {
        while self.throttle.peek().is_some_and(|Reverse(e)| e.due <= now) {
            let Some(Reverse(entry)) = self.throttle.pop() else {
                break;
            };
            let delivery = match entry.item {
                ThrottleWork::Send(d) => d,
                // The held update enters its job's line under the throttle's lock: a later event
                // of the job, which drops held updates first, lines up behind it.
                ThrottleWork::Flush(key) => {
                    match throttle.flush(&key, now, |d| lines.enter(d)) {
                        Some((go, next_flush)) => {
                            self.add_throttle(next_flush, ThrottleWork::Flush(key));
                            match go {
                                Entered::Go(d) => d,
                                // It waits in its line, which queues it in turn.
                                Entered::Held | Entered::Kept => continue,
                            }
                        }
                        None => continue,
                    }
                }
            };
            match first_tx.try_send(delivery) {
                Ok(()) => {}
                Err(TrySendError::Full(d)) => {
                    self.add_throttle(now + REQUEUE_DELAY, ThrottleWork::Send(d));
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return Err(Stopped),
            }
        }
        while self.retries.peek().is_some_and(|Reverse(e)| e.due <= now) {
            let Some(Reverse(entry)) = self.retries.pop() else {
                break;
            };
            // A first attempt (handed back while Redis was away) is its line's head, or waits
            // in its line for its turn, as one back from the due set does.
            let item = if entry.item.attempts == 0 {
                match lines.enter(entry.item) {
                    Entered::Go(d) => d,
                    Entered::Held | Entered::Kept => continue,
                }
            } else {
                entry.item
            };
            match retry_tx.try_send(item) {
                Ok(()) => {}
                Err(TrySendError::Full(d)) => {
                    // The retry pool is busy: keep the order, try again shortly.
                    self.seq += 1;
                    self.retries.push(Reverse(Entry {
                        due: now + REQUEUE_DELAY,
                        seq: entry.seq,
                        item: d,
                    }));
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return Err(Stopped),
            }
        }
        Ok(())
    }
}

fn publish(backlog: &Backlog, retries: usize, next_retry: Option<Instant>) {
    backlog.retries.store(retries, Relaxed);
    let due_ms = next_retry
        .map(|due| {
            let now = Instant::now();
            let now_ms = crate::time::now_ms();
            if due >= now {
                now_ms + (due - now).as_millis() as u64
            } else {
                now_ms.saturating_sub((now - due).as_millis() as u64)
            }
        })
        .unwrap_or(0);
    backlog.next_retry_due_ms.store(due_ms, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn first_attempt(job: &str, sequence: u64) -> Delivery {
        Delivery {
            webhook_id: Arc::from("wh"),
            event_id: format!("e{sequence}"),
            event_type: Arc::from("job.completed"),
            kind: EventKind::JobCompleted,
            body: Arc::from(Vec::new()),
            attempts: 0,
            created_ms: 0,
            job: Some(Arc::from(job)),
            sequence: Some(sequence),
        }
    }

    /// A first attempt kept here while Redis was away comes back through its job's line: it
    /// does not go past an earlier event of its job that is still being delivered.
    #[test]
    fn a_first_attempt_kept_while_redis_was_away_waits_its_turn_in_its_line() {
        let lines = Lines::new(10);
        let throttle = Throttle::new(Duration::ZERO);
        let (retry_tx, retry_rx) = crossbeam_channel::bounded(10);
        let (first_tx, _first_rx) = crossbeam_channel::bounded(10);
        let Entered::Go(head) = lines.enter(first_attempt("a", 1)) else {
            panic!("the first event of a job is not its line's head");
        };
        let mut timers = Timers::default();
        let now = Instant::now();
        timers.add(now, Timed::Retry(first_attempt("a", 2)));
        timers.add(now, Timed::Retry(first_attempt("b", 3)));
        assert!(
            timers
                .fire(now, &retry_tx, &first_tx, &throttle, &lines)
                .is_ok()
        );
        // Job b's goes; job a's waits for e1.
        let sent: Vec<String> = retry_rx.try_iter().map(|d| d.event_id).collect();
        assert_eq!(sent, ["e3"]);
        assert_eq!(lines.waiting(), 1);
        let next = super::super::lines::Place::of(&head).and_then(|p| lines.leave(p));
        assert!(
            matches!(next, Some(super::super::lines::Turn::Go(ref d)) if d.event_id == "e2"),
            "{next:?}"
        );
    }
}
