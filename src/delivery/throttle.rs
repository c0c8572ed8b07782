//! Progress throttling with a trailing edge (CONTRACT section 1).
//!
//! At most one `job.progress` per (webhook, job) per period: the first of a burst goes at once,
//! later ones replace each other, and the last one is sent when the period ends, so the final
//! progress value is never lost (the original dropped it, reference B12).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Delivery;

/// Identifies one throttled stream: (webhook id, job id).
pub type ThrottleKey = (String, String);

/// What to do with an offered delivery.
#[derive(Debug)]
pub enum Offer {
    /// Send it now, and ask for a flush of this key at the given time.
    SendNow(Delivery, Instant),
    /// Held until the flush; the delivery it replaced, if any, is returned (superseded).
    Held(Option<Delivery>),
}

/// The throttle state. Every key in the map has a flush scheduled, which sends the held delivery
/// or removes the key, so the map only holds keys active within the last period.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    slots: Mutex<HashMap<ThrottleKey, Option<Delivery>>>,
}

impl Throttle {
    /// A throttle with this period.
    pub fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Offers a progress delivery for `key` at `now`.
    pub fn offer(&self, key: ThrottleKey, delivery: Delivery, now: Instant) -> Offer {
        let mut slots = self.slots.lock();
        match slots.get_mut(&key) {
            Some(held) => Offer::Held(held.replace(delivery)),
            None => {
                slots.insert(key, None);
                Offer::SendNow(delivery, now + self.period)
            }
        }
    }

    /// At the end of a period: the held delivery to send now (the key stays, and must be flushed
    /// again one period later), or `None` (the key is gone).
    pub fn flush(&self, key: &ThrottleKey, now: Instant) -> Option<(Delivery, Instant)> {
        let mut slots = self.slots.lock();
        match slots.get_mut(key) {
            Some(held) => match held.take() {
                Some(delivery) => Some((delivery, now + self.period)),
                None => {
                    slots.remove(key);
                    None
                }
            },
            None => None,
        }
    }

    /// Keys currently throttled.
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Whether nothing is throttled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use std::sync::Arc;

    fn delivery(n: u8) -> Delivery {
        Delivery {
            webhook_id: Arc::from("wh"),
            event_id: format!("e{n}"),
            event_type: Arc::from("job.progress"),
            kind: EventKind::JobProgress,
            body: Arc::from(vec![n]),
            attempts: 0,
            created_ms: 0,
        }
    }

    #[test]
    fn first_goes_last_is_kept() {
        let t = Throttle::new(Duration::from_secs(1));
        let key = ("wh".to_string(), "job".to_string());
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
        let flushed = t.flush(&key, flush_at).map(|(d, _)| d.event_id);
        assert_eq!(flushed.as_deref(), Some("e3"));
        // Nothing held at the next flush: the key is released.
        assert!(t.flush(&key, flush_at + Duration::from_secs(1)).is_none());
        assert!(t.is_empty());
    }
}
