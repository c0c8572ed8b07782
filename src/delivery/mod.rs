//! Delivery: from matched event to HTTP attempts, retries and their outcomes.
//!
//! - [`dispatcher`] turns an event and its matching webhooks into [`Delivery`]s (exact body bytes)
//!   and queues them, through the progress [`throttle`] and the per-job [`lines`];
//! - [`pool`] runs one fixed pool of named threads that make attempts on the seats the [`gate`]
//!   gives them, so endpoints that hang or answer slowly cannot starve the others;
//! - [`scheduler`] holds deliveries until their retry is due, apart from first attempts;
//! - [`handle`] is the one thing the API and the app hold of all this: figures, dead letters,
//!   test attempts (run on the retry threads), the end of a stop;
//! - [`attempt`], [`signer`], [`retry`], [`http`] and [`ssrf`] are one attempt, its signatures, the
//!   decision that follows, the HTTP client and its address guard.

pub(crate) mod attempt;
pub mod dispatcher;
pub(crate) mod dns;
pub mod durable;
pub mod gate;
pub(crate) mod handle;
pub(crate) mod http;
pub mod lines;
pub(crate) mod pool;
pub(crate) mod recovery;
pub(crate) mod retry;
pub(crate) mod scheduler;
pub mod signer;
pub(crate) mod ssrf;
pub(crate) mod throttle;

use std::sync::Arc;

use crate::event::EventKind;

/// One event on its way to one webhook.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The webhook.
    pub webhook_id: Arc<str>,
    /// Stable for every attempt of this delivery.
    pub event_id: String,
    /// The name the webhook receives the event under.
    pub event_type: Arc<str>,
    /// The canonical kind (for metrics).
    pub kind: EventKind,
    /// The exact body, sent byte-identical on every attempt.
    pub body: Arc<[u8]>,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the delivery was created (ms since the epoch).
    pub created_ms: u64,
    /// The job the event is about (`None` for events of workers, machines and workflows): the
    /// first attempts of one job's events to one webhook are made in source order ([`lines`]).
    pub job: Option<Arc<str>>,
    /// The event's place in source order, assigned in Redis when the event was claimed and
    /// recorded; the same on every attempt and redelivery, sent as `X-Event-Sequence`. `None`
    /// when the event could not be recorded (Redis away).
    pub sequence: Option<u64>,
}
