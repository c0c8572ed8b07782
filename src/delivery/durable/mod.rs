//! Durable delivery state in Redis: nothing matched is lost to a crash, a restart, an outage or
//! a scale-out (CONTRACT section 3; the original kept everything in memory, reference B12).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `webhooks:deliveries` | hash | delivery id (its `event_id`) → record (webhook, event, body, attempts) |
//! | `webhooks:due` | sorted set | ids waiting for a thread, scored by the time they are due (ms) |
//! | `webhooks:leased:<instance>` | set | ids an instance holds in memory (queued, parked or in flight) |
//! | `webhooks:deferring:<instance>` | hash | per event (`<claim key>:<sequence>`), its deliveries recorded for the due set and not yet spread there |
//! | `webhooks:instances` | set | instance ids; `webhooks:instance:<id>` is each one's heartbeat |
//! | `webhooks:claim:<identity>` | string | the first instance to see a pub/sub event claims it |
//! | `webhooks:sequence` | string | the last event sequence number given out (`X-Event-Sequence`) |
//! | `webhooks:dead_letters` | hash | delivery id → the record with its last error |
//! | `webhooks:dead_letters:by_time` | sorted set | dead-letter ids by failure time |
//!
//! Every id is in exactly one place: leased by one instance, due, or dead, or, until it is
//! spread (a few ms; after a crash, until its leases are released), deferring. A delivery is recorded and leased (with the event's claim, in one script) before
//! it is queued. One whose endpoint is backed up goes to the due set instead: in that script,
//! the event's such deliveries are written as one value of the instance's deferring hash, and a
//! second script spreads them into the due set once the event's other deliveries are queued
//! (an instance that stopped before has them spread when its leases are released). An outcome
//! moves a delivery
//! (done: removed; retry: due at its time; given up: dead). The poller leases what is due; a
//! living instance's heartbeat keeps its leases; the leases of an instance whose heartbeat
//! stopped are moved back to due by whichever instance notices.

mod codec;
mod dead_letters;
mod instances;

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::Commands;

use super::Delivery;
use crate::keys::{DEAD_LETTERS_BY_TIME, DELIVERIES, DUE, SEQUENCE, deferring, leased};
use crate::redis_conn::RedisPool;
use codec::{RECORD, SPREAD, TAKE_DUE};
pub(crate) use codec::{decode, encode};

/// A failed durable-state operation.
#[derive(Debug)]
pub struct DurableError {
    op: &'static str,
    source: redis::RedisError,
}

impl fmt::Display for DurableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not {} in Redis: {}", self.op, self.source)
    }
}

impl std::error::Error for DurableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl DurableError {
    /// Redis answered `op` in a form this version does not know.
    pub(crate) fn unexpected(op: &'static str, why: &'static str) -> DurableError {
        DurableError {
            op,
            source: redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, why)),
        }
    }
}

fn err(op: &'static str) -> impl FnOnce(redis::RedisError) -> DurableError {
    move |source| DurableError { op, source }
}

/// The durable store of one instance.
#[derive(Debug, Clone)]
pub struct Durable {
    redis: Arc<RedisPool>,
    instance: Arc<str>,
    leased: Arc<str>,
    deferring: Arc<str>,
    /// Events whose deliveries for the due set this process has recorded and not yet spread.
    unspread: Arc<AtomicU64>,
    /// Deliveries this process has put back as due (see [`Durable::requeued`]).
    requeued: Arc<AtomicU64>,
}

/// One event to record ([`Durable::record_many`]).
#[derive(Debug)]
pub struct Recording<'a> {
    /// The event's claim key ([`crate::keys::claim`]).
    pub claim_key: String,
    /// How long the claim lasts (0: no claim).
    pub claim_ttl_ms: u64,
    /// Its deliveries.
    pub deliveries: &'a [Delivery],
    /// Per delivery, when it is due (ms since the epoch) if it goes straight into the due set;
    /// `None`, or no entry, for one leased here and queued now.
    pub due_ms: &'a [Option<u64>],
}

/// What became of an event's claim when its deliveries were recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Claimed and recorded now, with this sequence number: each delivery is where its
    /// [`Recording::due_ms`] put it.
    Now(u64),
    /// Claimed and recorded by an earlier try of this instance whose answer was lost: nothing
    /// was written again; its sequence number, and where each delivery is now.
    Before(u64, Vec<Stored>),
    /// Another instance claimed it: nothing was recorded here.
    Elsewhere,
}

/// Where a delivery recorded by an earlier try is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Leased here: this instance queues it.
    Leased,
    /// In the due set: it comes back from there.
    Due,
    /// Neither (taken by a poller, or finished, meanwhile): nothing to do here.
    Gone,
}

impl Stored {
    fn from_code(code: u64) -> Stored {
        match code {
            0 => Stored::Leased,
            1 => Stored::Due,
            _ => Stored::Gone,
        }
    }
}

/// What the due set and the dead letters hold, read in one round trip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DueFigures {
    /// Deliveries in `webhooks:due`.
    pub(crate) due: u64,
    /// When the earliest of them is due (ms since the epoch).
    pub(crate) next_due_ms: Option<u64>,
    /// Dead letters kept.
    pub(crate) dead_letters: u64,
}

impl Durable {
    /// The store of `instance`.
    pub fn new(redis: Arc<RedisPool>, instance: &str) -> Durable {
        Durable {
            leased: Arc::from(leased(instance)),
            deferring: Arc::from(deferring(instance)),
            unspread: Arc::new(AtomicU64::new(0)),
            instance: Arc::from(instance),
            redis,
            requeued: Arc::new(AtomicU64::new(0)),
        }
    }

    /// This instance's id.
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// Records and leases `deliveries`, claiming the event first when `claim_ttl_ms` > 0.
    /// Returns the event's sequence number, or `None` (recording nothing) if another instance
    /// had already claimed it.
    pub fn record(
        &self,
        claim_key: &str,
        claim_ttl_ms: u64,
        deliveries: &[Delivery],
    ) -> Result<Option<u64>, DurableError> {
        let claimed = self.record_many(&[Recording {
            claim_key: claim_key.to_string(),
            claim_ttl_ms,
            deliveries,
            due_ms: &[],
        }])?;
        Ok(match claimed.into_iter().next() {
            Some(Claim::Now(sequence) | Claim::Before(sequence, _)) => Some(sequence),
            Some(Claim::Elsewhere) | None => None,
        })
    }

    /// [`Durable::record`] for several events in one round trip and one script: each event's
    /// claim is taken (or found taken), its sequence number given and its deliveries recorded
    /// atomically, each leased here or recorded for the due set as its `due_ms` says (those are
    /// in the due set once [`Durable::spread`] has run). Returns what became of each event's
    /// claim.
    pub fn record_many(&self, events: &[Recording<'_>]) -> Result<Vec<Claim>, DurableError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let script = redis::Script::new(RECORD);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(DELIVERIES)
            .key(&*self.leased)
            .key(SEQUENCE)
            .key(DUE)
            .key(&*self.deferring)
            .arg(&*self.instance);
        let mut deferring = 0;
        for event in events {
            invocation
                .key(&event.claim_key)
                .arg(event.claim_ttl_ms)
                .arg(event.deliveries.len());
            // The deliveries for the due set, one line each, in one value.
            let mut for_due = Vec::new();
            for (i, d) in event.deliveries.iter().enumerate() {
                let mut record = encode(d);
                // The script closes it, with the sequence.
                record.pop();
                match event.due_ms.get(i).copied().flatten() {
                    None => invocation.arg(&d.event_id).arg(record).arg(0),
                    Some(due) => {
                        // Writing to a Vec cannot fail.
                        let _ = write!(for_due, "{}\t{due}\t", d.event_id);
                        for_due.extend_from_slice(&record);
                        for_due.push(b'\n');
                        invocation.arg(&d.event_id).arg("").arg(due)
                    }
                };
            }
            deferring += u64::from(!for_due.is_empty());
            invocation.arg(for_due);
        }
        let answers: Vec<Vec<u64>> = self
            .redis
            .with(|conn| invocation.invoke(conn))
            .map_err(err("record deliveries"))?;
        let unexpected = |why: &'static str| DurableError::unexpected("record deliveries", why);
        if answers.len() != events.len() {
            return Err(unexpected(
                "the record script answered for a different number of events",
            ));
        }
        let mut claims = Vec::with_capacity(events.len());
        let mut due = 0;
        for (event, answer) in events.iter().zip(answers) {
            let claim = match answer.as_slice() {
                [0] => Claim::Elsewhere,
                [sequence] => {
                    due += event.due_ms.iter().flatten().count();
                    Claim::Now(*sequence)
                }
                [sequence, states @ ..] if states.len() == event.deliveries.len() => {
                    let states: Vec<Stored> =
                        states.iter().map(|s| Stored::from_code(*s)).collect();
                    due += states.iter().filter(|s| **s == Stored::Due).count();
                    Claim::Before(*sequence, states)
                }
                _ => return Err(unexpected("the record script answered in an unknown form")),
            };
            claims.push(claim);
        }
        self.requeued.fetch_add(due as u64, Ordering::Relaxed);
        // Counted even for events claimed elsewhere: spreading finds nothing for them.
        self.unspread.fetch_add(deferring, Ordering::Relaxed);
        Ok(claims)
    }

    /// Spreads the deliveries this instance recorded for the due set ([`Durable::record_many`])
    /// into it; returns how many. Nothing to do (no round trip) when none were recorded since.
    pub(crate) fn spread(&self) -> Result<u64, DurableError> {
        let events = self.unspread.swap(0, Ordering::Relaxed);
        if events == 0 {
            return Ok(0);
        }
        let spread = self.redis.with(|conn| {
            redis::Script::new(SPREAD)
                .key(&*self.deferring)
                .key(DELIVERIES)
                .key(DUE)
                .invoke(conn)
        });
        if spread.is_err() {
            // Tried again next time (and spread by `release_all` after a restart).
            self.unspread.fetch_add(events, Ordering::Relaxed);
        }
        spread.map_err(err("spread deliveries into the due set"))
    }

    /// Events whose deliveries for the due set wait to be spread ([`Durable::spread`]).
    pub(crate) fn unspread(&self) -> u64 {
        self.unspread.load(Ordering::Relaxed)
    }

    /// A delivery succeeded: forget it.
    pub(crate) fn complete(&self, id: &str) -> Result<(), DurableError> {
        self.settle_many(&[id.to_string()], &[])
    }

    /// Settles many leased deliveries in one atomic round trip: `done` are forgotten, `due` are
    /// put back as due at their time with their attempt counts saved.
    pub(crate) fn settle_many(
        &self,
        done: &[String],
        due: &[(&Delivery, u64)],
    ) -> Result<(), DurableError> {
        if done.is_empty() && due.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !done.is_empty() {
            pipe.hdel(DELIVERIES, done)
                .ignore()
                .srem(&*self.leased, done)
                .ignore();
        }
        if !due.is_empty() {
            pipe.cmd("HSET").arg(DELIVERIES);
            for (delivery, _) in due {
                pipe.arg(&delivery.event_id).arg(encode(delivery));
            }
            pipe.ignore();
            pipe.cmd("SREM").arg(&*self.leased);
            for (delivery, _) in due {
                pipe.arg(&delivery.event_id);
            }
            pipe.ignore();
            pipe.cmd("ZADD").arg(DUE);
            for (delivery, at) in due {
                pipe.arg(*at).arg(&delivery.event_id);
            }
            pipe.ignore();
        }
        self.redis
            .with(|conn| pipe.query::<()>(conn))
            .map_err(err("settle deliveries"))?;
        self.requeued.fetch_add(due.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Deliveries this process has put in `webhooks:due` (retries, hand-backs, spills, and
    /// deliveries recorded for the due set, counted when recorded, before they are spread there),
    /// counted when written. Every path that puts a
    /// delivery there goes through [`Durable::settle_many`] or [`Durable::record_many`];
    /// [`Durable::release_all`] reports its own count.
    pub(crate) fn requeued(&self) -> u64 {
        self.requeued.load(Ordering::Relaxed)
    }

    /// Puts a leased delivery back as due at `due_ms` (a retry, or a hand-back), saving its
    /// attempt count.
    pub(crate) fn defer(&self, delivery: &Delivery, due_ms: u64) -> Result<(), DurableError> {
        self.settle_many(&[], &[(delivery, due_ms)])
    }

    /// The record of delivery `id` (one this instance holds), or `None` if there is none.
    pub(crate) fn load(&self, id: &str) -> Result<Option<Delivery>, DurableError> {
        let record: Option<String> = self
            .redis
            .with(|conn| conn.hget(DELIVERIES, id))
            .map_err(err("read a delivery"))?;
        Ok(record.as_deref().and_then(decode))
    }

    /// Leases up to `limit` deliveries due by `now_ms`.
    pub(crate) fn take_due(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, DurableError> {
        let records: Vec<String> = self
            .redis
            .with(|conn| {
                redis::Script::new(TAKE_DUE)
                    .key(DUE)
                    .key(DELIVERIES)
                    .key(&*self.leased)
                    .arg(now_ms)
                    .arg(limit)
                    .invoke(conn)
            })
            .map_err(err("take due deliveries"))?;
        let mut taken = Vec::with_capacity(records.len() / 2);
        for pair in records.chunks_exact(2) {
            let (id, record) = (&pair[0], &pair[1]);
            match decode(record) {
                Some(delivery) => taken.push(delivery),
                // Left where it is (leased here, so offered again after a restart), and said
                // every time: never dropped on the quiet.
                None => log::error!(
                    "delivery {id}: its record in {DELIVERIES} cannot be read; it is not delivered ({} bytes: {:.120})",
                    record.len(),
                    record
                ),
            }
        }
        Ok(taken)
    }

    /// When the earliest due delivery is due, if any.
    pub(crate) fn next_due(&self) -> Result<Option<u64>, DurableError> {
        let first: Vec<(String, f64)> = self
            .redis
            .with(|conn| conn.zrange_withscores(DUE, 0, 0))
            .map_err(err("read the due set"))?;
        Ok(first.first().map(|(_, score)| *score as u64))
    }

    /// The size and head of the due set and the number of dead letters, in one round trip.
    pub(crate) fn figures(&self) -> Result<DueFigures, DurableError> {
        let (due, first, dead_letters): (u64, Vec<(String, f64)>, u64) = self
            .redis
            .with(|conn| {
                redis::pipe()
                    .zcard(DUE)
                    .zrange_withscores(DUE, 0, 0)
                    .zcard(DEAD_LETTERS_BY_TIME)
                    .query(conn)
            })
            .map_err(err("read the due set"))?;
        Ok(DueFigures {
            due,
            next_due_ms: first.first().map(|(_, score)| *score as u64),
            dead_letters,
        })
    }
}
