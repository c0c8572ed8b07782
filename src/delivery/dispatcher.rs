//! Event → deliveries: match against the current webhooks, build each body once, queue it.
//!
//! The body is built here, once per (event, webhook), and never again: every attempt sends the
//! same bytes (CONTRACT section 3). `data` is serialised once per form and shared by every
//! webhook receiving that form.
//!
//! Per-job order (issue #11) starts here: a job's event drops the progress update the throttle
//! holds for the same job and webhook (the update is older news), recording gives each event its
//! sequence number, and each first attempt enters its job's line ([`Lines`]) before it is queued.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use log::{debug, error, warn};
use serde_json::Value;

use super::Delivery;
use super::durable::{Claim, Durable, DurableError, Recording, Stored};
use super::gate::EndpointGate;
use super::lines::{Entered, Lines};
use super::recovery::Completer;
use super::scheduler::{SchedulerHandle, Timed};
use super::throttle::{Offer, Throttle};
use crate::event::{self, Event, EventKind, canonical, legacy};
use crate::json;
use crate::monitor::{Counters, bump};
use crate::webhook::matching::Form;
use crate::webhook::registry::Registry;

/// The deliveries of one event, built and not yet recorded or queued.
#[derive(Debug)]
pub(crate) struct Prepared {
    deliveries: Vec<Delivery>,
    /// Per delivery: its webhook is disconnected (the delivery becomes a dead letter).
    held: Vec<bool>,
    /// Per delivery: its endpoint is backed up, so it goes straight into the due set for this
    /// long instead of into the queue ([`EndpointGate::overflowing`]).
    backed_up: Vec<Option<Duration>>,
    now_ms: u64,
}

impl Prepared {
    /// When each delivery is due if it goes straight into the due set, counted from now.
    /// Empty when none does (all are leased): no allocation per event on the common path.
    fn due_ms(&self) -> Vec<Option<u64>> {
        if self.backed_up.iter().all(Option::is_none) {
            return Vec::new();
        }
        let now_ms = crate::time::now_ms();
        self.backed_up
            .iter()
            .map(|wait| wait.map(|w| due_after(now_ms, w)))
            .collect()
    }
}

/// The due time, in ms, of a delivery waiting `wait` from `now_ms` (at least a ms later, as
/// every hand-back).
pub(crate) fn due_after(now_ms: u64, wait: Duration) -> u64 {
    now_ms + wait.as_millis() as u64 + 1
}

impl Prepared {
    /// How many deliveries.
    pub(crate) fn len(&self) -> usize {
        self.deliveries.len()
    }
}

/// What [`Dispatcher::dispatch`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dispatched {
    /// Deliveries queued.
    pub(crate) count: usize,
    /// Whether they are all recorded in Redis (true when there are none).
    pub(crate) recorded: bool,
}

enum Recorded {
    /// Claimed and recorded here now, with this sequence number.
    Now(u64),
    /// Claimed and recorded by an earlier try whose answer was lost: its sequence number, and
    /// where each delivery is now.
    Before(u64, Vec<Stored>),
    ClaimedElsewhere,
    InMemoryOnly,
}

/// Turns events into queued deliveries.
pub(crate) struct Dispatcher {
    /// The current webhooks.
    pub(crate) registry: Arc<Registry>,
    /// Progress throttle; `None` when turned off.
    pub(crate) throttle: Option<Arc<Throttle>>,
    /// The first-attempt queue (bounded: a full queue makes intake wait).
    pub(crate) first_tx: Sender<Delivery>,
    /// For throttle flushes.
    pub(crate) scheduler: SchedulerHandle,
    /// Per-job order of first attempts.
    pub(crate) lines: Arc<Lines>,
    /// The endpoint gate, asked which endpoints are backed up.
    pub(crate) gate: Arc<EndpointGate>,
    /// Process counters.
    pub(crate) counters: Arc<Counters>,
    /// Durable delivery state.
    pub(crate) durable: Durable,
    /// Writes what became of leased deliveries, retrying while Redis is away: a progress update
    /// dropped here is forgotten through it.
    pub(crate) completer: Completer,
    /// How long an event's claim lasts (0: no claim, a single instance).
    pub(crate) claim_ttl_ms: u64,
}

impl Dispatcher {
    /// Queues one delivery per matching webhook. `replayable` says the source will offer the
    /// event again if it is not acknowledged (a stream): then deliveries that cannot be recorded
    /// are not sent from memory either, since they would be sent twice.
    pub(crate) fn dispatch(&self, event: &Event, replayable: bool) -> Dispatched {
        match self.prepare(event) {
            None => Dispatched {
                count: 0,
                recorded: true,
            },
            Some(prepared) => {
                let recorded = self.record(event, &prepared);
                let mut spilled = Vec::new();
                let dispatched = self.commit(event, prepared, recorded, replayable, &mut spilled);
                self.put_back(spilled);
                self.spread();
                dispatched
            }
        }
    }

    /// Queues a batch of prepared events, recording them all in one Redis round trip (falling
    /// back to one at a time if that fails). Pub/sub intake uses it through its record stage.
    pub(crate) fn dispatch_batch(&self, batch: Vec<(Event, Prepared)>) {
        let due_ms: Vec<Vec<Option<u64>>> = batch.iter().map(|(_, p)| p.due_ms()).collect();
        let claims: Vec<Recording<'_>> = batch
            .iter()
            .zip(&due_ms)
            .map(|((event, p), due_ms)| Recording {
                claim_key: crate::keys::claim(&event.identity),
                claim_ttl_ms: self.claim_ttl_ms,
                deliveries: &p.deliveries,
                due_ms,
            })
            .collect();
        let outcome = self.durable.record_many(&claims);
        drop(claims);
        let mut spilled = Vec::new();
        match outcome {
            Ok(claimed) => {
                for ((event, prepared), claim) in batch.into_iter().zip(claimed) {
                    let recorded = self.recorded(&event, claim);
                    self.commit(&event, prepared, recorded, false, &mut spilled);
                }
            }
            Err(e) => {
                debug!("{e}; recording the batch one event at a time");
                for (event, prepared) in batch {
                    let recorded = self.record(&event, &prepared);
                    self.commit(&event, prepared, recorded, false, &mut spilled);
                }
            }
        }
        self.put_back(spilled);
    }

    /// Spreads the deliveries recorded for the due set into it, once the events' other
    /// deliveries are queued ([`Durable::spread`]). If Redis cannot be reached they are spread
    /// on a later call, or, after a restart, when this instance's leases are released.
    /// Returns false if Redis could not be reached.
    pub(crate) fn spread(&self) -> bool {
        match self.durable.spread() {
            Ok(_) => true,
            Err(e) => {
                crate::warn_limited!(
                    10_000,
                    "{e}; {} events' deliveries to backed-up endpoints wait to be spread into the due set",
                    self.durable.unspread()
                );
                false
            }
        }
    }

    /// Events whose deliveries for the due set wait to be spread ([`Dispatcher::spread`]).
    pub(crate) fn unspread(&self) -> u64 {
        self.durable.unspread()
    }

    /// Builds the deliveries of an event (matching and bodies), or `None` if nothing matches.
    pub(crate) fn prepare(&self, event: &Event) -> Option<Prepared> {
        let snapshot = self.registry.snapshot();
        let now_ms = crate::time::now_ms();
        let job: Option<Arc<str>> = event
            .kind
            .is_job()
            .then(|| event.job_id())
            .flatten()
            .map(Arc::from);
        let mut canonical_data: Option<Vec<u8>> = None;
        let mut legacy_data: Option<Vec<u8>> = None;
        let mut deliveries = Vec::new();
        let mut held = Vec::new();
        for m in snapshot.matches(event, now_ms) {
            let data = match m.form {
                Form::Canonical => {
                    canonical_data.get_or_insert_with(|| canonical::data(event).to_vec())
                }
                Form::Legacy => legacy_data.get_or_insert_with(|| legacy::data(event).to_vec()),
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
                job: job.clone(),
                sequence: None,
            };
            held.push(m.held);
            deliveries.push(delivery);
        }
        if deliveries.is_empty() {
            return None;
        }
        let backed_up = self.backed_up(event, &deliveries, &held);
        Some(Prepared {
            deliveries,
            held,
            backed_up,
            now_ms,
        })
    }

    /// Per delivery: how long it waits in the due set if its endpoint is backed up (it would
    /// only be offered to the gate and handed back to Redis), else `None`. A progress update
    /// the throttle may hold, and a delivery to a disconnected webhook, take their own ways.
    fn backed_up(
        &self,
        event: &Event,
        deliveries: &[Delivery],
        held: &[bool],
    ) -> Vec<Option<Duration>> {
        if event.kind == EventKind::JobProgress && self.throttle.is_some() {
            return vec![None; deliveries.len()];
        }
        // Asked only for those that would be queued: the gate spaces out what it answers for.
        let asked = deliveries.iter().zip(held).filter(|(_, held)| !**held);
        let mut answers = self
            .gate
            .overflowing(asked.map(|(d, _)| &d.webhook_id))
            .into_iter();
        held.iter()
            .map(|held| {
                if *held {
                    None
                } else {
                    answers.next().flatten()
                }
            })
            .collect()
    }

    /// A job's event other than a progress update drops the update the throttle holds for the
    /// job and each of the event's webhooks: sent after this event, it would put the job back.
    /// Done for every event, claimed here or not (another instance may have claimed the update),
    /// on the thread that offers updates to the throttle, in source order.
    fn drop_held_progress(&self, event: &Event, deliveries: &[Delivery]) {
        let Some(throttle) = &self.throttle else {
            return;
        };
        if event.kind == EventKind::JobProgress || throttle.is_empty() {
            return;
        }
        for d in deliveries {
            let Some(job) = &d.job else {
                continue;
            };
            let Some(update) = throttle.cancel(&(d.webhook_id.clone(), job.clone())) else {
                continue;
            };
            bump(&self.counters.deliveries_throttled);
            debug!(
                "progress {} to webhook {} is dropped: a later event of its job came first",
                update.event_id, update.webhook_id
            );
            self.forget(update.event_id);
        }
    }

    /// Queues the deliveries of a prepared event once their recording is known.
    fn commit(
        &self,
        event: &Event,
        prepared: Prepared,
        recorded: Recorded,
        replayable: bool,
        spilled: &mut Vec<(Delivery, u64)>,
    ) -> Dispatched {
        let Prepared {
            mut deliveries,
            held,
            backed_up,
            now_ms,
        } = prepared;
        self.drop_held_progress(event, &deliveries);
        // The sequence, and, if an earlier try's answer was lost, where it left each delivery.
        let (sequence, found) = match recorded {
            Recorded::ClaimedElsewhere => {
                return Dispatched {
                    count: 0,
                    recorded: true,
                };
            }
            Recorded::InMemoryOnly if replayable => {
                return Dispatched {
                    count: 0,
                    recorded: false,
                };
            }
            Recorded::Now(sequence) => (Some(sequence), None),
            Recorded::Before(sequence, states) => (Some(sequence), Some(states)),
            Recorded::InMemoryOnly => (None, None),
        };
        let recorded = sequence.is_some();
        for delivery in &mut deliveries {
            delivery.sequence = sequence;
        }
        let count = deliveries.len();
        // Deliveries already waiting in the due set take their places in their lines after the
        // others are queued: they are not held up behind a backed-up endpoint's bookkeeping
        // (each delivery of an event is in a line of its own webhook, so the order among them
        // does not matter).
        let mut away = Vec::new();
        let placed = deliveries.into_iter().zip(held).zip(backed_up);
        for (i, ((delivery, held), backed_up)) in placed.enumerate() {
            bump(&self.counters.deliveries_created);
            let in_due_set = match found.as_ref().and_then(|f| f.get(i)) {
                None => backed_up.filter(|_| recorded),
                Some(Stored::Leased) => None,
                Some(Stored::Due) => Some(backed_up.unwrap_or_default()),
                // Taken from the due set (or finished) meanwhile: not this try's to queue.
                Some(Stored::Gone) => continue,
            };
            if let Some(wait) = in_due_set {
                away.push((delivery, wait));
                continue;
            }
            if held {
                bump(&self.counters.deliveries_dropped);
                let kept =
                    self.durable
                        .dead_letter(&delivery, now_ms, None, "webhook is disconnected");
                if let Err(e) = kept {
                    error!(
                        "{e}; event {} to disconnected webhook {} is lost",
                        delivery.event_id, delivery.webhook_id
                    );
                    bump(&self.counters.events_failed);
                }
                continue;
            }
            self.enqueue(delivery, event, spilled);
        }
        for (delivery, wait) in away {
            // Recorded in the due set already: its line waits for it to come back.
            bump(&self.counters.deliveries_deferred);
            self.lines.enter_away(&delivery, wait);
        }
        Dispatched { count, recorded }
    }

    /// Claims the event and records its deliveries before anything can lose them. Returns false
    /// if another instance claimed the event first. With Redis away (after a few quick tries) the
    /// deliveries go on from memory: at most the crash of this process could lose them then.
    fn record(&self, event: &Event, prepared: &Prepared) -> Recorded {
        let deliveries = &prepared.deliveries;
        let due_ms = prepared.due_ms();
        let recording = Recording {
            claim_key: crate::keys::claim(&event.identity),
            claim_ttl_ms: self.claim_ttl_ms,
            deliveries,
            due_ms: &due_ms,
        };
        let mut wait = Duration::from_millis(50);
        for attempt in 1..=4 {
            let claimed = self
                .durable
                .record_many(std::slice::from_ref(&recording))
                .and_then(|c| {
                    c.into_iter().next().ok_or_else(|| {
                        DurableError::unexpected("record deliveries", "no answer for the event")
                    })
                });
            match claimed {
                Ok(claim) => return self.recorded(event, claim),
                Err(e) if attempt == 4 => {
                    warn!(
                        "{e}; could not record {} deliveries of a {} event",
                        deliveries.len(),
                        event.kind.name()
                    );
                    bump(&self.counters.events_unrecorded);
                    return Recorded::InMemoryOnly;
                }
                Err(_) => {
                    std::thread::sleep(wait);
                    wait *= 2;
                }
            }
        }
        Recorded::InMemoryOnly
    }

    /// What an event's claim means here (counting one claimed elsewhere).
    fn recorded(&self, event: &Event, claim: Claim) -> Recorded {
        match claim {
            Claim::Now(sequence) => Recorded::Now(sequence),
            Claim::Before(sequence, states) => Recorded::Before(sequence, states),
            Claim::Elsewhere => {
                debug!(
                    "event {} of {} was claimed by another instance",
                    event.kind.name(),
                    event.source
                );
                bump(&self.counters.events_claimed_elsewhere);
                Recorded::ClaimedElsewhere
            }
        }
    }

    fn enqueue(&self, delivery: Delivery, event: &Event, spilled: &mut Vec<(Delivery, u64)>) {
        if event.kind == EventKind::JobProgress
            && let Some(throttle) = &self.throttle
            && let Some(job) = delivery.job.clone()
        {
            let key = (delivery.webhook_id.clone(), job);
            match throttle.offer(key.clone(), delivery, Instant::now()) {
                Offer::SendNow(delivery, flush_at) => {
                    if self
                        .scheduler
                        .schedule(flush_at, Timed::Flush(key))
                        .is_err()
                    {
                        error!("the scheduler has stopped; progress throttling cannot flush");
                    }
                    self.send(delivery, spilled);
                }
                Offer::Held(Some(superseded)) => {
                    bump(&self.counters.deliveries_throttled);
                    self.forget(superseded.event_id);
                }
                Offer::Held(None) => {}
            }
            return;
        }
        self.send(delivery, spilled);
    }

    /// Forgets a leased delivery that is dropped (a progress update superseded, or overtaken by
    /// a later event of its job), through the completer, which tries again while Redis refuses:
    /// left leased, it would go out after the next restart, after its job's end.
    fn forget(&self, id: String) {
        if let Err(e) = self.completer.done(&self.durable, id.clone()) {
            warn!("{e}; dropped progress {id} stays recorded and may be sent after a restart");
        }
    }

    /// Queues a first attempt, if its job's line lets it go now (else the line keeps it). A full
    /// queue never blocks intake: the delivery waits in the durable due set instead: it is added
    /// to `spilled`, which [`Dispatcher::put_back`] writes in one round trip, and the poller
    /// queues it when there is room.
    fn send(&self, delivery: Delivery, spilled: &mut Vec<(Delivery, u64)>) {
        let delivery = match self.lines.enter(delivery) {
            Entered::Go(delivery) => delivery,
            Entered::Held => return,
            Entered::Kept => {
                bump(&self.counters.deliveries_spilled);
                return;
            }
        };
        match self.first_tx.try_send(delivery) {
            Ok(()) => {}
            Err(TrySendError::Full(d)) => {
                bump(&self.counters.deliveries_spilled);
                // The head of its line waits in Redis: what is behind it waits for it.
                self.lines.away(&d, Duration::ZERO);
                spilled.push((d, crate::time::now_ms()));
            }
            Err(TrySendError::Disconnected(d)) => {
                error!(
                    "delivery queue is closed; event {} to webhook {} is dropped",
                    d.event_id, d.webhook_id
                );
                bump(&self.counters.events_failed);
            }
        }
    }

    /// Puts the deliveries the full queue turned away back as due at their time, in one round
    /// trip. With Redis away they wait for room in the queue instead: never dropped.
    fn put_back(&self, spilled: Vec<(Delivery, u64)>) {
        if spilled.is_empty() {
            return;
        }
        let due: Vec<(&Delivery, u64)> = spilled.iter().map(|(d, at)| (d, *at)).collect();
        if let Err(e) = self.durable.settle_many(&[], &due) {
            debug!("{e}; waiting for room for {} deliveries", spilled.len());
            for (d, _) in spilled {
                // Not in Redis after all: the head of its line is here again (else its line
                // would let the next event go past it once the grace period ends).
                let d = match self.lines.enter(d) {
                    Entered::Go(d) => d,
                    Entered::Held | Entered::Kept => continue,
                };
                if self.first_tx.send(d).is_err() {
                    error!("delivery queue is closed; a delivery is dropped");
                    bump(&self.counters.events_failed);
                }
            }
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
