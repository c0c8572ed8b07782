//! Progress throttling with a trailing edge (CONTRACT section 1).
//!
//! At most one `job.progress` per (webhook, job) per period: the first of a burst goes at once,
//! later ones replace each other, and the last one is sent when the period ends, so the final
//! progress value is never lost (the original dropped it, reference B12) — unless a later event
//! of the same job reaches the webhook first: then the held update is dropped ([`Throttle::cancel`]),
//! since the later event is newer news, and an update sent after it would put the job back (a
//! `job.progress` after `job.completed`, issue #11).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Delivery;

/// Identifies one throttled stream: (webhook id, job id).
pub(crate) type ThrottleKey = (Arc<str>, Arc<str>);

/// What to do with an offered delivery.
#[derive(Debug)]
pub(crate) enum Offer {
    /// Send it now, and ask for a flush of this key at the given time.
    SendNow(Delivery, Instant),
    /// Held until the flush; the delivery it replaced, if any, is returned (superseded).
    Held(Option<Delivery>),
}

/// The throttle state. Every key in the map has a flush scheduled, which sends the held delivery
/// or removes the key, so the map only holds keys active within the last period.
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    slots: Mutex<HashMap<ThrottleKey, Option<Delivery>>>,
}

impl Throttle {
    /// A throttle with this period.
    pub(crate) fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Offers a progress delivery for `key` at `now`.
    pub(crate) fn offer(&self, key: ThrottleKey, delivery: Delivery, now: Instant) -> Offer {
        let mut slots = self.slots.lock();
        match slots.get_mut(&key) {
            Some(held) => Offer::Held(held.replace(delivery)),
            None => {
                slots.insert(key, None);
                Offer::SendNow(delivery, now + self.period)
            }
        }
    }

    /// At the end of a period: hands the held delivery to `send` (the key stays, and must be
    /// flushed again at the time returned), or returns `None` (the key is gone). `send` runs under
    /// the throttle's lock, so a later event of the job, which [`Throttle::cancel`]s first, is
    /// queued after the flushed update, never before it.
    pub(crate) fn flush<R>(
        &self,
        key: &ThrottleKey,
        now: Instant,
        send: impl FnOnce(Delivery) -> R,
    ) -> Option<(R, Instant)> {
        let mut slots = self.slots.lock();
        match slots.get_mut(key) {
            Some(held) => match held.take() {
                Some(delivery) => Some((send(delivery), now + self.period)),
                None => {
                    slots.remove(key);
                    None
                }
            },
            None => None,
        }
    }

    /// A later event of the job reached the webhook: drops the update held for `key`, if any,
    /// and returns it (to be forgotten). The key stays until its flush, so the next update still
    /// waits for the period to end.
    pub(crate) fn cancel(&self, key: &ThrottleKey) -> Option<Delivery> {
        self.slots.lock().get_mut(key).and_then(Option::take)
    }

    /// Keys currently throttled.
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Whether nothing is throttled.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn delivery(n: u8) -> Delivery {
        Delivery {
            webhook_id: Arc::from("wh"),
            event_id: format!("e{n}"),
            event_type: Arc::from("job.progress"),
            kind: EventKind::JobProgress,
            body: Arc::from(vec![n]),
            attempts: 0,
            created_ms: 0,
            job: Some(Arc::from("job")),
            sequence: Some(u64::from(n)),
        }
    }

    #[test]
    fn first_goes_last_is_kept() {
        let t = Throttle::new(Duration::from_secs(1));
        let key: ThrottleKey = (Arc::from("wh"), Arc::from("job"));
        let now = Instant::now();
        let Offer::SendNow(first, flush_at) = t.offer(key.clone(), delivery(1), now) else {
            panic!("first offer was held");
        };
        assert_eq!(first.event_id, "e1");
        assert_eq!(flush_at, now + Duration::from_secs(1));
        assert!(matches!(
            t.offer(key.clone(), delivery(2), now),
            Offer::Held(None)
        ));
        let Offer::Held(Some(superseded)) = t.offer(key.clone(), delivery(3), now) else {
            panic!("third offer was not held");
        };
        assert_eq!(superseded.event_id, "e2");
        let flushed = t.flush(&key, flush_at, |d| d.event_id).map(|(id, _)| id);
        assert_eq!(flushed.as_deref(), Some("e3"));
        // Nothing held at the next flush: the key is released.
        let later = flush_at + Duration::from_secs(1);
        assert!(t.flush(&key, later, |d| d.event_id).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn a_later_event_drops_the_held_update_and_the_period_still_holds() {
        let t = Throttle::new(Duration::from_secs(1));
        let key: ThrottleKey = (Arc::from("wh"), Arc::from("job"));
        let now = Instant::now();
        let Offer::SendNow(_, flush_at) = t.offer(key.clone(), delivery(1), now) else {
            panic!("first offer was held");
        };
        assert!(matches!(
            t.offer(key.clone(), delivery(2), now),
            Offer::Held(None)
        ));
        // The job completes: the held update is dropped, nothing is flushed.
        assert_eq!(t.cancel(&key).map(|d| d.event_id).as_deref(), Some("e2"));
        assert!(t.cancel(&key).is_none());
        // An update within the same period is still held, not sent at once.
        assert!(matches!(
            t.offer(key.clone(), delivery(3), now),
            Offer::Held(None)
        ));
        assert_eq!(
            t.flush(&key, flush_at, |d| d.event_id)
                .map(|(id, _)| id)
                .as_deref(),
            Some("e3")
        );
    }
}
