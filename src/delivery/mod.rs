//! Delivery: from matched event to HTTP attempts, retries and their outcomes.
//!
//! - [`dispatcher`] turns an event and its matching webhooks into [`Delivery`]s (exact body bytes)
//!   and queues them, through the progress [`throttle`];
//! - [`pool`] runs fixed pools of named threads that make attempts, with a per-endpoint limit on
//!   the threads one webhook can hold, so a hanging endpoint cannot starve the others;
//! - [`scheduler`] holds deliveries until their retry is due, apart from first attempts;
//! - [`handle`] is the one thing the API and the app hold of all this: figures, dead letters,
//!   test attempts (run on the retry threads), the end of a stop;
//! - [`attempt`], [`signer`], [`retry`], [`http`] and [`ssrf`] are one attempt, its signatures, the
//!   decision that follows, the HTTP client and its address guard.

pub mod attempt;
pub mod dispatcher;
pub mod durable;
pub mod handle;
pub mod http;
pub mod pool;
pub mod recovery;
pub mod retry;
pub mod scheduler;
pub mod signer;
pub mod ssrf;
pub mod throttle;

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
}
