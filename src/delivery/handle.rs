//! The delivery handle: the one thing the API and the app hold of delivery.
//!
//! It answers the figures `/health`, `/metrics` and the stats show, lists and redelivers dead
//! letters, recovers a webhook's dead letters since a time, makes test attempts, and takes the
//! last steps of a stop. Its callers never see the pool, the gate, the durable store or a
//! channel. A test attempt runs on a retry thread, as one of the pool's jobs ([`Job`]), never
//! on the caller's thread: the caller waits, a bounded time, for its outcome.
//!
//! # Threads and cloning
//!
//! A `DeliveryHandle` is a few `Arc`s: clone it freely, call it from any thread. Holding one
//! keeps no delivery thread alive: it holds the first-attempt queue's receiving end (for its
//! length) and the job queue's sending end, which the retry threads stop reading once their own
//! queue closes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{debug, warn};
use serde_json::Value;

use super::Delivery;
use super::attempt;
use super::durable::DurableError;
use super::pool::{self, Context, Job};
use super::scheduler::Backlog;
use crate::monitor::Queue;
use crate::monitor::history::Final;
use crate::outcome::OutcomeClass;
use crate::webhook::model::Webhook;

/// Most test attempts waiting for a thread at once; more are refused rather than queued.
const MAX_WAITING_TESTS: usize = 64;
/// How much longer than the HTTP timeout a caller waits for a test attempt: the time to find a
/// free thread and record the attempt.
const TEST_WAIT_MARGIN: Duration = Duration::from_secs(5);

/// What a test attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TestOutcome {
    /// A 2xx answer.
    pub(crate) delivered: bool,
    /// The HTTP status, when a response came.
    pub(crate) status: Option<u16>,
    /// How long the attempt took, or how long the caller waited for one that never ran.
    pub(crate) response_time_ms: f64,
    /// What went wrong.
    pub(crate) error: Option<String>,
}

/// Delivery as the API and the app see it. See the module docs.
#[derive(Clone)]
pub(crate) struct DeliveryHandle {
    ctx: Arc<Context>,
    /// The first-attempt queue, read only for its length.
    first_rx: Receiver<Delivery>,
    /// Retries held in memory while Redis is away.
    backlog: Arc<Backlog>,
    /// Jobs for the retry threads (test attempts).
    jobs: Sender<Job>,
    /// Longest a caller waits for a test attempt.
    test_wait: Duration,
}

impl std::fmt::Debug for DeliveryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryHandle")
            .field("queued", &self.first_rx.len())
            .field("test_wait", &self.test_wait)
            .finish_non_exhaustive()
    }
}

impl DeliveryHandle {
    /// The handle of the delivery threads sharing `ctx`, whose first attempts wait in
    /// `first_rx`; test attempts go to `jobs`, and an attempt lasts at most `http_timeout`.
    pub(crate) fn new(
        ctx: Arc<Context>,
        first_rx: Receiver<Delivery>,
        backlog: Arc<Backlog>,
        jobs: Sender<Job>,
        http_timeout: Duration,
    ) -> DeliveryHandle {
        DeliveryHandle {
            ctx,
            first_rx,
            backlog,
            jobs,
            test_wait: http_timeout + TEST_WAIT_MARGIN,
        }
    }

    /// Where deliveries wait now. Figures held in Redis read as 0 while it is away.
    pub(crate) fn queue(&self) -> Queue {
        let durable = self.ctx.durable.figures().unwrap_or_else(|e| {
            debug!("{e}; the queue figures leave out what waits in Redis");
            Default::default()
        });
        let now = crate::time::now_ms();
        let in_memory_due = self.backlog.next_retry_due_ms.load(Ordering::Relaxed);
        let oldest_pending_age_ms = [in_memory_due, durable.next_due_ms.unwrap_or(0)]
            .into_iter()
            .filter(|due| *due > 0 && *due < now)
            .map(|due| now - due)
            .max()
            .unwrap_or(0);
        Queue {
            depth: (self.first_rx.len() + self.ctx.gate.parked() + self.ctx.lines.waiting()) as u64,
            in_flight: self.ctx.gate.in_flight() as u64,
            retry_backlog: self.backlog.retries.load(Ordering::Relaxed) as u64 + durable.due,
            oldest_pending_age_ms,
            dead_letters: durable.dead_letters,
        }
    }

    /// Dead letters as stored (without their bodies), newest first, optionally of one webhook.
    pub(crate) fn dead_letters(
        &self,
        webhook_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>, DurableError> {
        self.ctx.durable.dead_letters(webhook_id, limit)
    }

    /// Sends dead letter `id` again (same `event_id`, same body, attempts from 1); returns the
    /// letter, or `None` if there is none.
    pub(crate) fn redeliver(&self, id: &str) -> Result<Option<Value>, DurableError> {
        self.ctx.durable.redeliver(id, crate::time::now_ms())
    }

    /// Sends again every dead letter of `webhook_id` that failed at or after `since_ms`; returns
    /// how many.
    pub(crate) fn recover(&self, webhook_id: &str, since_ms: u64) -> Result<u64, DurableError> {
        self.ctx
            .durable
            .recover(webhook_id, since_ms, crate::time::now_ms())
    }

    /// Makes one test attempt of each delivery to `webhook`, side by side on the retry threads,
    /// and waits for their outcomes (in the same order), each at most the HTTP timeout and a
    /// margin. Attempts are recorded in the history as tests; they are not retried.
    pub(crate) fn test(
        &self,
        webhook: Arc<Webhook>,
        deliveries: Vec<Delivery>,
    ) -> Vec<TestOutcome> {
        let started = Instant::now();
        let deadline = started + self.test_wait;
        let waiting: Vec<Result<Receiver<TestOutcome>, TestOutcome>> = deliveries
            .into_iter()
            .map(|delivery| self.send_test(webhook.clone(), delivery, deadline))
            .collect();
        waiting
            .into_iter()
            .map(|waiting| match waiting {
                Err(refused) => refused,
                Ok(reply) => match reply.recv_deadline(deadline) {
                    Ok(outcome) => outcome,
                    Err(RecvTimeoutError::Timeout) => not_made(
                        started,
                        format!(
                            "the test attempt was not made within {} ms",
                            self.test_wait.as_millis()
                        ),
                    ),
                    // The job ended without an answer: it panicked (logged), or the service
                    // is stopping and dropped it.
                    Err(RecvTimeoutError::Disconnected) => not_made(
                        started,
                        "the test attempt was not made: the service is stopping, or failed".into(),
                    ),
                },
            })
            .collect()
    }

    fn send_test(
        &self,
        webhook: Arc<Webhook>,
        delivery: Delivery,
        deadline: Instant,
    ) -> Result<Receiver<TestOutcome>, TestOutcome> {
        let (reply, outcome) = crossbeam_channel::bounded(1);
        let job: Job = Box::new(move |ctx: &Context| {
            // The caller stopped waiting: an attempt now would reach the endpoint unreported.
            if Instant::now() >= deadline {
                return;
            }
            let _ = reply.send(test_attempt(ctx, &webhook, delivery));
        });
        if self.jobs.len() >= MAX_WAITING_TESTS {
            return Err(not_made(
                Instant::now(),
                "too many test attempts are waiting; try again".into(),
            ));
        }
        match self.jobs.try_send(job) {
            Ok(()) => Ok(outcome),
            Err(TrySendError::Full(_)) => Err(not_made(
                Instant::now(),
                "too many test attempts are waiting; try again".into(),
            )),
            Err(TrySendError::Disconnected(_)) => {
                Err(not_made(Instant::now(), "the service is stopping".into()))
            }
        }
    }

    /// Attempts in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.ctx.gate.in_flight()
    }

    /// Deliveries this process has put back in `webhooks:due` so far: retries, hand-backs and
    /// spills (the difference over a stop is what the stop handed back).
    pub(crate) fn requeued(&self) -> u64 {
        self.ctx.durable.requeued()
    }

    /// The last step of a stop, once the delivery threads have ended or the time is up: waits
    /// until `deadline` for the settlements in hand to be written (a success not written would
    /// be made again), then puts every delivery still leased by this instance back in
    /// `webhooks:due` and removes its heartbeat. Returns how many leases went back.
    pub(crate) fn hand_back_all(&self, deadline: Instant) -> Result<u64, DurableError> {
        if !self
            .ctx
            .completer
            .flush(deadline.saturating_duration_since(Instant::now()))
        {
            warn!("some settled deliveries could not be written in time; they may be made again");
        }
        let durable = &self.ctx.durable;
        let released = durable.release_all(durable.instance(), crate::time::now_ms())?;
        if let Err(e) = durable.leave() {
            debug!("could not remove this instance's heartbeat: {e}");
        }
        Ok(released)
    }
}

fn not_made(started: Instant, why: String) -> TestOutcome {
    TestOutcome {
        delivered: false,
        status: None,
        response_time_ms: started.elapsed().as_secs_f64() * 1000.0,
        error: Some(why),
    }
}

/// Makes a test attempt on the calling (delivery) thread and records it.
fn test_attempt(ctx: &Context, webhook: &Webhook, delivery: Delivery) -> TestOutcome {
    let outcome = attempt::send(&ctx.clients.agent(&webhook.url), webhook, &delivery);
    let delivered = outcome.class == OutcomeClass::Success;
    let state = if delivered {
        Final::Delivered
    } else {
        Final::Failed
    };
    ctx.recorder.record(pool::record(
        webhook, &delivery, &outcome, state, None, true,
    ));
    TestOutcome {
        delivered,
        status: outcome.status,
        response_time_ms: (outcome.duration.as_secs_f64() * 1_000_000.0).round() / 1000.0,
        error: outcome.error,
    }
}
