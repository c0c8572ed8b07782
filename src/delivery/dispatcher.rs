//! Event → deliveries: match against the current webhooks, build each body once, queue it.
//!
//! The body is built here, once per (event, webhook), and never again: every attempt sends the
//! same bytes (CONTRACT section 3). `data` is serialised once per form and shared by every
//! webhook receiving that form.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use log::error;
use serde_json::Value;

use super::Delivery;
use super::scheduler::{SchedulerHandle, Timed};
use super::throttle::{Offer, Throttle};
use crate::event::{self, Event, EventKind, canonical, json, legacy};
use crate::monitor::{Counters, bump};
use crate::webhook::matching::Form;
use crate::webhook::registry::Registry;

/// Turns events into queued deliveries.
pub struct Dispatcher {
    /// The current webhooks.
    pub registry: Arc<Registry>,
    /// Progress throttle; `None` when turned off.
    pub throttle: Option<Arc<Throttle>>,
    /// The first-attempt queue (bounded: a full queue makes intake wait).
    pub first_tx: Sender<Delivery>,
    /// For throttle flushes.
    pub scheduler: SchedulerHandle,
    /// Process counters.
    pub counters: Arc<Counters>,
}

impl Dispatcher {
    /// Queues one delivery per matching webhook; returns how many.
    pub fn dispatch(&self, event: &Event) -> usize {
        let snapshot = self.registry.snapshot();
        let now_ms = crate::time::now_ms();
        let mut canonical_data: Option<Vec<u8>> = None;
        let mut legacy_data: Option<Vec<u8>> = None;
        let mut count = 0;
        for m in snapshot.matches(event, now_ms) {
            let data = match m.form {
                Form::Canonical => canonical_data
                    .get_or_insert_with(|| json::object_to_vec(&canonical::data(event))),
                Form::Legacy => {
                    legacy_data.get_or_insert_with(|| json::object_to_vec(&legacy::data(event)))
                }
            };
            let event_id = event::event_id(&m.webhook.id, event);
            let body = envelope(
                m.event_type,
                &event_id,
                &event.timestamp,
                &m.webhook.id,
                data,
            );
            let delivery = Delivery {
                webhook_id: Arc::from(m.webhook.id.as_str()),
                event_id,
                event_type: m.event_type.clone(),
                kind: event.kind,
                body: Arc::from(body),
                attempts: 0,
                created_ms: now_ms,
            };
            bump(&self.counters.deliveries_created);
            self.enqueue(delivery, event);
            count += 1;
        }
        count
    }

    fn enqueue(&self, delivery: Delivery, event: &Event) {
        if event.kind == EventKind::JobProgress
            && let Some(throttle) = &self.throttle
            && let Some(job_id) = event.job_id()
        {
            let key = (delivery.webhook_id.to_string(), job_id);
            match throttle.offer(key.clone(), delivery, Instant::now()) {
                Offer::SendNow(delivery, flush_at) => {
                    if self
                        .scheduler
                        .schedule(flush_at, Timed::Flush(key))
                        .is_err()
                    {
                        error!("the scheduler has stopped; progress throttling cannot flush");
                    }
                    self.send(delivery);
                }
                Offer::Held(Some(_superseded)) => bump(&self.counters.deliveries_throttled),
                Offer::Held(None) => {}
            }
            return;
        }
        self.send(delivery);
    }

    fn send(&self, delivery: Delivery) {
        if let Err(e) = self.first_tx.send(delivery) {
            let d = e.into_inner();
            error!(
                "delivery queue is closed; event {} to webhook {} is dropped",
                d.event_id, d.webhook_id
            );
            bump(&self.counters.events_failed);
        }
    }
}

/// `{"event_type":…,"event_id":…,"timestamp":…,"webhook_id":…,"data":…}`, in that order.
pub fn envelope(
    event_type: &str,
    event_id: &str,
    timestamp: &Value,
    webhook_id: &str,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 160);
    out.extend_from_slice(b"{\"event_type\":");
    json::write_str(&mut out, event_type);
    out.extend_from_slice(b",\"event_id\":");
    json::write_str(&mut out, event_id);
    out.extend_from_slice(b",\"timestamp\":");
    json::write_value(&mut out, timestamp);
    out.extend_from_slice(b",\"webhook_id\":");
    json::write_str(&mut out, webhook_id);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_matches_the_contract_vector_bytes() {
        let data = br#"{"job_id":"job-1","worker_id":"worker-1","result":{"ok":true},"completed_at":1700000000000}"#;
        let body = envelope(
            "complete_job",
            "wh_1700000000000_abc123def",
            &Value::from(1_700_000_000_000u64),
            "wh_1690000000000_zzz999yyy",
            data,
        );
        let expected = r#"{"event_type":"complete_job","event_id":"wh_1700000000000_abc123def","timestamp":1700000000000,"webhook_id":"wh_1690000000000_zzz999yyy","data":{"job_id":"job-1","worker_id":"worker-1","result":{"ok":true},"completed_at":1700000000000}}"#;
        assert_eq!(String::from_utf8_lossy(&body), expected);
    }
}
