//! Per-job order: the first attempts of one job's events to one webhook are made one at a time,
//! in source order (issue #11).
//!
//! Each (webhook, job) pair with a first attempt pending has a *line*. Only its head goes on into
//! the delivery queue, the gate and an attempt; the deliveries behind it wait here, ordered by
//! their sequence number (given in Redis in source order, [`super::durable`]), until the head's
//! first attempt has ended, whatever its outcome. A retry is not held back: its later attempts
//! may land after later events, and `X-Event-Sequence` lets the receiver tell.
//!
//! Every delivery in a line is recorded in Redis, leased to this instance or (recorded straight
//! into the due set, its endpoint backed up: [`Lines::enter_away`]) waiting there. Memory is bounded:
//! past `max_waiting` deliveries held here, one behind its head is dropped from memory and kept
//! as its id only; when its turn comes its record is read back ([`Turn::Fetch`]). Past
//! `KEPT_PER_WAITING` times as many ids (a webhook on `job.*` hanging for hours), a delivery of
//! a webhook holding at least its share of them (an equal part among the webhooks holding ids) is
//! no longer held back: it goes on out of order, and that is logged. So a hanging webhook cannot
//! take the order of a healthy one's jobs, and at most twice the bound is ever kept. A line whose head waits in
//! the due set with nothing behind it costs a map entry, and is forgotten past as many lines
//! (a hanging webhook's backlog): its head is then in no line when it comes back. The head itself
//! may wait in Redis's due set (spilled from a full queue, overflowing the gate, handed back,
//! recorded there): what is behind it waits for it; if it has not come back within a grace period
//! after it was due (another instance took it, or it is lost with a crash), the line goes on
//! without it, or, with nothing behind it, is let go.
//!
//! What this does not order: deliveries without a sequence (recorded while Redis was away), and
//! a delivery another instance takes from the due set (each instance orders what it holds).

use std::cmp::Reverse;
use std::collections::hash_map::{Entry, OccupiedEntry};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Delivery;

/// How long after its due time a head waiting in the due set still holds its line up.
const AWAY_GRACE: Duration = Duration::from_secs(10);
/// Ids kept per delivery held: past `max_waiting * KEPT_PER_WAITING` ids, nothing more is held.
const KEPT_PER_WAITING: usize = 20;
/// How soon a head whose record could not be read back is tried again.
const FETCH_RETRY: Duration = Duration::from_secs(1);
/// Shards of the map of lines ([`Shards`]).
const SHARDS: usize = 64;

/// A line's key: (webhook id, job id).
type LineKey = (Arc<str>, Arc<str>);

/// What [`Lines::enter`] says to a first attempt.
#[derive(Debug)]
pub enum Entered {
    /// It is its line's head (or in no line): queue it.
    Go(Delivery),
    /// It waits here behind its line's head.
    Held,
    /// It waits behind its line's head, kept as its id only: there was no room here (its record
    /// waits in Redis).
    Kept,
}

/// What comes next in a line whose head is done.
#[derive(Debug)]
pub enum Turn {
    /// This delivery, held here: it goes on now.
    Go(Delivery),
    /// The delivery with this id, kept in Redis only: read its record back and
    /// [`Lines::enter`] it (or, if it is gone, [`Lines::leave`] its place; if Redis cannot be
    /// read, [`Lines::fetch_failed`]).
    Fetch(String, Place),
}

/// Where a delivery stands in its line: its line's key and its sequence.
#[derive(Debug, Clone)]
pub struct Place {
    key: LineKey,
    sequence: u64,
}

impl Place {
    /// The place of `delivery`, or `None` if it is in no line (no job, or no sequence).
    pub fn of(delivery: &Delivery) -> Option<Place> {
        Some(Place {
            key: (delivery.webhook_id.clone(), delivery.job.clone()?),
            sequence: delivery.sequence?,
        })
    }
}

/// Every line of this process.
#[derive(Debug)]
pub struct Lines {
    state: Mutex<State>,
    /// Most deliveries held here, all lines together.
    max_waiting: usize,
}

#[derive(Debug, Default)]
struct State {
    lines: Shards,
    /// Deliveries held here (not counting those kept as an id).
    waiting: usize,
    /// Deliveries kept as an id (or waiting in the due set), all lines and per webhook.
    kept: Kept,
    /// Heads to look at again at a time: (when, key, sequence). Entries whose head has moved on
    /// are skipped when they come up.
    timers: BinaryHeap<Reverse<(Instant, LineKey, u64)>>,
}

/// Deliveries behind their heads that are here as an id only (kept, or waiting in the due set):
/// in all, and per webhook, so that the bound on them is shared fairly. A webhook that hangs for
/// hours fills its lines; past the bound, its own later deliveries go on out of order, not those
/// of a webhook holding less than its share.
#[derive(Debug, Default)]
struct Kept {
    total: usize,
    by_webhook: HashMap<Arc<str>, usize>,
}

impl Kept {
    fn add(&mut self, webhook: &Arc<str>) {
        self.total += 1;
        *self.by_webhook.entry(webhook.clone()).or_default() += 1;
    }

    fn remove(&mut self, webhook: &Arc<str>) {
        self.total = self.total.saturating_sub(1);
        if let Entry::Occupied(mut own) = self.by_webhook.entry(webhook.clone()) {
            *own.get_mut() -= 1;
            if *own.get() == 0 {
                own.remove();
            }
        }
    }

    /// Whether `webhook` may keep no more: `max` are kept in all and it holds at least its
    /// share of them (an equal part among the webhooks holding some). So at most twice `max`
    /// are ever kept.
    fn full_for(&self, webhook: &Arc<str>, max: usize) -> bool {
        if self.total < max {
            return false;
        }
        let own = self.by_webhook.get(webhook).copied().unwrap_or(0);
        let holders = self.by_webhook.len() + usize::from(own == 0);
        own >= max / holders.max(1)
    }
}

/// The lines, in shards that grow each by itself. One table of tens of thousands of lines (a
/// few hanging webhooks on `job.*`) was rehashed whole each time it doubled, under the lock
/// every first attempt takes: the healthy webhooks' deliveries waited up to 16 ms each time.
/// A shard holds a sixty-fourth of the lines, so growing moves no more than that at once; and
/// each takes the memory its own lines need (a table sized up front for the bound would have
/// all its pages touched by lines coming and going).
#[derive(Debug)]
struct Shards {
    maps: Vec<HashMap<LineKey, Line>>,
    hasher: std::hash::RandomState,
}

impl Default for Shards {
    fn default() -> Shards {
        Shards {
            maps: (0..SHARDS).map(|_| HashMap::new()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl Shards {
    fn shard(&self, key: &LineKey) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    fn entry(&mut self, key: LineKey) -> Entry<'_, LineKey, Line> {
        let shard = self.shard(&key);
        self.maps[shard].entry(key)
    }

    fn get_mut(&mut self, key: &LineKey) -> Option<&mut Line> {
        let shard = self.shard(key);
        self.maps[shard].get_mut(key)
    }

    fn remove(&mut self, key: &LineKey) -> Option<Line> {
        let shard = self.shard(key);
        self.maps[shard].remove(key)
    }

    fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }
}

#[derive(Debug)]
struct Line {
    /// The sequence of the delivery allowed on, and where it is.
    head: u64,
    head_is: Head,
    /// The deliveries behind it, by sequence.
    behind: BTreeMap<u64, Behind>,
}

#[derive(Debug, PartialEq)]
enum Head {
    /// In this process: queued, parked, or in an attempt.
    Here,
    /// In the due set, holding the line up until then.
    Due(Instant),
    /// Kept as its id only; `None` while a fetch is under way, else when to try again.
    Kept(String, Option<Instant>),
}

#[derive(Debug)]
enum Behind {
    Here(Delivery),
    /// Kept as its id only.
    Kept(String),
    /// Recorded straight into the due set (its endpoint was backed up); it comes back by itself,
    /// and holds the line up until then, or until this grace ends, once it is the head.
    Due(Instant),
}

impl Lines {
    /// Lines holding at most `max_waiting` deliveries in memory.
    pub fn new(max_waiting: usize) -> Lines {
        Lines {
            state: Mutex::new(State::default()),
            max_waiting: max_waiting.max(1),
        }
    }

    /// A first attempt arrives: from intake, a throttle flush, back from the due set, or read
    /// back after a [`Turn::Fetch`].
    pub fn enter(&self, delivery: Delivery) -> Entered {
        let Some(Place { key, sequence }) = Place::of(&delivery) else {
            return Entered::Go(delivery);
        };
        let mut state = self.state.lock();
        let State {
            lines,
            waiting,
            kept,
            ..
        } = &mut *state;
        // One lookup on this path (every job's delivery comes through it).
        let (key, line) = match lines.entry(key) {
            Entry::Vacant(vacant) => {
                vacant.insert(Line {
                    head: sequence,
                    head_is: Head::Here,
                    behind: BTreeMap::new(),
                });
                return Entered::Go(delivery);
            }
            Entry::Occupied(occupied) => (occupied.key().clone(), occupied.into_mut()),
        };
        if line.head == sequence {
            // The head is back (from the due set, or read back).
            line.head_is = Head::Here;
            return Entered::Go(delivery);
        }
        match line.behind.get(&sequence) {
            // Already here (offered twice): keep the one we have.
            Some(Behind::Here(_)) => return Entered::Held,
            // Back while kept as an id (taken back from Redis after all), or back from the due
            // set before its turn: held again below.
            Some(Behind::Kept(_) | Behind::Due(_)) => {
                line.behind.remove(&sequence);
                kept.remove(&key.0);
            }
            None => {}
        }
        if *waiting >= self.max_waiting {
            if kept.full_for(&key.0, self.max_lines()) {
                crate::warn_limited!(
                    1000,
                    "too many deliveries wait behind earlier events of their jobs; event {} of job {} to webhook {} goes on out of order",
                    sequence,
                    key.1,
                    key.0
                );
                return Entered::Go(delivery);
            }
            // Recorded and leased in Redis already: keep only its id.
            line.behind
                .insert(sequence, Behind::Kept(delivery.event_id.clone()));
            kept.add(&key.0);
            return Entered::Kept;
        }
        line.behind.insert(sequence, Behind::Here(delivery));
        *waiting += 1;
        Entered::Held
    }

    /// The first attempt of the delivery at `place` has ended (or it was dropped before one):
    /// what comes next in its line, if anything is to be done about it now.
    pub fn leave(&self, place: Place) -> Option<Turn> {
        let Place { key, sequence } = place;
        let mut state = self.state.lock();
        let State {
            lines,
            waiting,
            kept,
            timers,
        } = &mut *state;
        // One lookup on this path (every job's first attempt ends through it).
        let Entry::Occupied(mut line) = lines.entry(key) else {
            return None;
        };
        if line.get().head != sequence {
            // Not the head (its line moved on without it, see `expire`): only forget its place.
            match line.get_mut().behind.remove(&sequence) {
                Some(Behind::Here(_)) => *waiting -= 1,
                Some(Behind::Kept(_) | Behind::Due(_)) => kept.remove(&line.key().0),
                None => {}
            }
            return None;
        }
        advance(line, waiting, kept, timers)
    }

    /// `delivery`, its line's head, goes to wait in the due set until `due` from now.
    pub(crate) fn away(&self, delivery: &Delivery, due: Duration) {
        let Some(Place { key, sequence }) = Place::of(delivery) else {
            return;
        };
        let mut state = self.state.lock();
        let crowded = state.lines.len() > self.max_lines();
        let Some(line) = state.lines.get_mut(&key).filter(|l| l.head == sequence) else {
            return;
        };
        if line.behind.is_empty() && crowded {
            state.lines.remove(&key);
            return;
        }
        // Its timer lets the line go on without it (or go, if nothing waits) once its grace
        // has passed: it may never come back here (another instance may take it).
        let until = Instant::now() + due + AWAY_GRACE;
        line.head_is = Head::Due(until);
        state.timers.push(Reverse((until, key, sequence)));
    }

    /// A first attempt recorded straight into the due set, due in `due` (its endpoint is backed
    /// up): it takes its place in its line without being here. As the head, or once it becomes
    /// the head, it holds the line up as a head handed back to the due set does ([`Lines::away`]);
    /// when it comes back it is [`Lines::enter`]ed as any other.
    pub(crate) fn enter_away(&self, delivery: &Delivery, due: Duration) {
        let Some(Place { key, sequence }) = Place::of(delivery) else {
            return;
        };
        let until = Instant::now() + due + AWAY_GRACE;
        let mut state = self.state.lock();
        let crowded = state.lines.len() > self.max_lines();
        let State {
            lines,
            kept,
            timers,
            ..
        } = &mut *state;
        match lines.entry(key) {
            Entry::Vacant(vacant) => {
                // Past the bound on lines it is in none (as a head handed back is forgotten).
                if !crowded {
                    timers.push(Reverse((until, vacant.key().clone(), sequence)));
                    vacant.insert(Line {
                        head: sequence,
                        head_is: Head::Due(until),
                        behind: BTreeMap::new(),
                    });
                }
            }
            Entry::Occupied(mut occupied) => {
                let webhook = occupied.key().0.clone();
                let line = occupied.get_mut();
                // Already the head: it came back from the due set (and was taken up) before
                // this was called; it is here, not away.
                if line.head != sequence
                    && !kept.full_for(&webhook, self.max_lines())
                    && !line.behind.contains_key(&sequence)
                {
                    line.behind.insert(sequence, Behind::Due(until));
                    kept.add(&webhook);
                }
                // Past the bound on ids it holds nothing up: it goes on out of order when back.
            }
        }
    }

    /// Lines (and ids kept) past which nothing more is held back.
    fn max_lines(&self) -> usize {
        self.max_waiting.saturating_mul(KEPT_PER_WAITING)
    }

    /// The record of the head at `place` could not be read back: try again in a while.
    pub(crate) fn fetch_failed(&self, place: Place) {
        let Place { key, sequence } = place;
        let mut state = self.state.lock();
        if let Some(line) = state.lines.get_mut(&key)
            && line.head == sequence
            && let Head::Kept(_, retry) = &mut line.head_is
        {
            let at = Instant::now() + FETCH_RETRY;
            *retry = Some(at);
            state.timers.push(Reverse((at, key, sequence)));
        }
    }

    /// Lets go of heads that have waited in the due set past their grace period, and asks again
    /// for heads whose record could not be read back; returns what comes next in those lines.
    pub(crate) fn expire(&self, now: Instant) -> Vec<Turn> {
        let mut state = self.state.lock();
        let State {
            lines,
            waiting,
            kept,
            timers,
        } = &mut *state;
        let mut turns = Vec::new();
        while timers.peek().is_some_and(|Reverse((at, ..))| *at <= now) {
            let Some(Reverse((at, key, sequence))) = timers.pop() else {
                break;
            };
            let Entry::Occupied(mut line) = lines.entry(key) else {
                continue;
            };
            if line.get().head != sequence {
                continue;
            }
            let fetch = match &mut line.get_mut().head_is {
                Head::Due(until) if *until == at => None,
                Head::Kept(id, retry) if *retry == Some(at) => {
                    *retry = None;
                    Some(id.clone())
                }
                _ => continue,
            };
            match fetch {
                Some(id) => turns.push(Turn::Fetch(
                    id,
                    Place {
                        key: line.key().clone(),
                        sequence,
                    },
                )),
                None => {
                    log::debug!(
                        "event {sequence} of job {} to webhook {} did not come back from Redis; its line goes on without it",
                        line.key().1,
                        line.key().0
                    );
                    turns.extend(advance(line, waiting, kept, timers));
                }
            }
        }
        turns
    }

    /// Deliveries held here.
    pub(crate) fn waiting(&self) -> usize {
        self.state.lock().waiting
    }
}

/// The head of `line` is done: the next one becomes the head (or the line goes).
fn advance(
    mut line: OccupiedEntry<'_, LineKey, Line>,
    waiting: &mut usize,
    kept: &mut Kept,
    timers: &mut BinaryHeap<Reverse<(Instant, LineKey, u64)>>,
) -> Option<Turn> {
    let Some((sequence, next)) = line.get_mut().behind.pop_first() else {
        line.remove();
        return None;
    };
    let key = line.key().clone();
    let line = line.into_mut();
    line.head = sequence;
    match next {
        Behind::Here(delivery) => {
            line.head_is = Head::Here;
            *waiting -= 1;
            Some(Turn::Go(delivery))
        }
        Behind::Kept(id) => {
            kept.remove(&key.0);
            line.head_is = Head::Kept(id.clone(), None);
            Some(Turn::Fetch(id, Place { key, sequence }))
        }
        Behind::Due(until) => {
            kept.remove(&key.0);
            line.head_is = Head::Due(until);
            timers.push(Reverse((until, key, sequence)));
            None
        }
    }
}

#[cfg(test)]
mod tests;
