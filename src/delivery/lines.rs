//! Per-job order: the first attempts of one job's events to one webhook are made one at a time,
//! in source order (issue #11).
//!
//! Each (webhook, job) pair with a first attempt pending has a *line*. Only its head goes on into
//! the delivery queue, the gate and an attempt; the deliveries behind it wait here, ordered by
//! their sequence number (given in Redis in source order, [`super::durable`]), until the head's
//! first attempt has ended, whatever its outcome. A retry is not held back: its later attempts
//! may land after later events, and `X-Event-Sequence` lets the receiver tell.
//!
//! Every delivery in a line is recorded in Redis and leased to this instance. Memory is bounded:
//! past `max_waiting` deliveries held here, one behind its head is dropped from memory and kept
//! as its id only; when its turn comes its record is read back ([`Turn::Fetch`]). Past
//! `KEPT_PER_WAITING` times as many ids (a webhook on `job.*` hanging for hours), a delivery is
//! no longer held back: it goes on out of order, and that is logged. A line whose head waits in
//! the due set with nothing behind it costs a map entry, and is forgotten past as many lines
//! (a hanging webhook's backlog): its head is then in no line when it comes back. The head itself
//! may wait in Redis's due set (spilled from a full queue, overflowing the gate, handed back):
//! what is behind it waits for it; if it has not come back within a grace period after it was
//! due (another instance took it, or it is lost with a crash), the line goes on without it.
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
    lines: HashMap<LineKey, Line>,
    /// Deliveries held here (not counting those kept as an id).
    waiting: usize,
    /// Deliveries kept as an id.
    kept: usize,
    /// Heads to look at again at a time: (when, key, sequence). Entries whose head has moved on
    /// are skipped when they come up.
    timers: BinaryHeap<Reverse<(Instant, LineKey, u64)>>,
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
            timers,
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
            Some(Behind::Kept(_) | Behind::Due(_)) => *kept -= 1,
            None => {}
        }
        if line.behind.is_empty()
            && let Head::Due(until) = line.head_is
        {
            // The first to wait for a head in the due set: from now on it holds something up.
            timers.push(Reverse((until, key.clone(), line.head)));
        }
        if *waiting >= self.max_waiting {
            if *kept >= self.max_lines() {
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
            *kept += 1;
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
                Some(Behind::Kept(_) | Behind::Due(_)) => *kept -= 1,
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
        if line.behind.is_empty() {
            if crowded {
                state.lines.remove(&key);
                return;
            }
            // Nothing waits for it: a timer is set when something does.
            line.head_is = Head::Due(Instant::now() + due + AWAY_GRACE);
            return;
        }
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
        let State { lines, kept, .. } = &mut *state;
        match lines.entry(key) {
            Entry::Vacant(vacant) => {
                // Nothing waits for it: a timer is set when something does. Past the bound on
                // lines it is in none (as a head handed back is forgotten).
                if !crowded {
                    vacant.insert(Line {
                        head: sequence,
                        head_is: Head::Due(until),
                        behind: BTreeMap::new(),
                    });
                }
            }
            Entry::Occupied(mut occupied) => {
                let line = occupied.get_mut();
                if line.head == sequence {
                    line.head_is = Head::Due(until);
                } else if *kept < self.max_lines() && !line.behind.contains_key(&sequence) {
                    line.behind.insert(sequence, Behind::Due(until));
                    *kept += 1;
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
    kept: &mut usize,
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
            *kept -= 1;
            line.head_is = Head::Kept(id.clone(), None);
            Some(Turn::Fetch(id, Place { key, sequence }))
        }
        Behind::Due(until) => {
            *kept -= 1;
            line.head_is = Head::Due(until);
            if !line.behind.is_empty() {
                timers.push(Reverse((until, key, sequence)));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn d(job: &str, sequence: u64) -> Delivery {
        Delivery {
            webhook_id: Arc::from("wh"),
            event_id: format!("e{sequence}"),
            event_type: Arc::from("job.progress"),
            kind: EventKind::JobProgress,
            body: Arc::from(Vec::new()),
            attempts: 0,
            created_ms: 0,
            job: Some(Arc::from(job)),
            sequence: Some(sequence),
        }
    }

    /// Ends the first attempt of `job`'s event `sequence`; what comes next, as text.
    fn leave(lines: &Lines, job: &str, sequence: u64) -> Option<String> {
        let place = Place::of(&d(job, sequence))?;
        lines.leave(place).map(turn)
    }

    fn turn(turn: Turn) -> String {
        match turn {
            Turn::Go(d) => d.event_id,
            Turn::Fetch(id, _) => format!("fetch {id}"),
        }
    }

    fn id(entered: Entered) -> String {
        match entered {
            Entered::Go(d) => d.event_id,
            other => panic!("expected Go, got {other:?}"),
        }
    }

    #[test]
    fn one_job_goes_one_at_a_time_in_order_and_jobs_do_not_wait_for_each_other() {
        let lines = Lines::new(100);
        assert_eq!(id(lines.enter(d("a", 1))), "e1");
        // Behind the head, out of order: they go in sequence order.
        assert!(matches!(lines.enter(d("a", 5)), Entered::Held));
        assert!(matches!(lines.enter(d("a", 3)), Entered::Held));
        // Another job is not held up.
        assert_eq!(id(lines.enter(d("b", 2))), "e2");
        assert_eq!(lines.waiting(), 2);
        assert_eq!(leave(&lines, "a", 1).as_deref(), Some("e3"));
        assert_eq!(leave(&lines, "a", 3).as_deref(), Some("e5"));
        assert!(leave(&lines, "a", 5).is_none());
        assert_eq!(lines.waiting(), 0);
        // The line is gone: the job's next event goes at once.
        assert_eq!(id(lines.enter(d("a", 9))), "e9");
    }

    #[test]
    fn deliveries_without_a_job_or_a_sequence_are_not_held() {
        let lines = Lines::new(100);
        let mut no_job = d("a", 1);
        no_job.job = None;
        assert!(matches!(lines.enter(no_job.clone()), Entered::Go(_)));
        assert!(matches!(lines.enter(no_job), Entered::Go(_)));
        let mut unrecorded = d("a", 1);
        unrecorded.sequence = None;
        assert!(matches!(lines.enter(unrecorded.clone()), Entered::Go(_)));
        assert!(matches!(lines.enter(unrecorded), Entered::Go(_)));
    }

    #[test]
    fn a_head_in_the_due_set_holds_its_line_until_it_is_back_or_its_grace_ends() {
        let lines = Lines::new(100);
        assert_eq!(id(lines.enter(d("a", 1))), "e1");
        lines.away(&d("a", 1), Duration::from_millis(10));
        assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
        // Back from Redis: it goes on, still the head.
        assert_eq!(id(lines.enter(d("a", 1))), "e1");
        assert!(
            lines
                .expire(Instant::now() + Duration::from_secs(60))
                .is_empty()
        );
        // Away again, and never back: after the grace period the next one goes on.
        lines.away(&d("a", 1), Duration::ZERO);
        assert!(lines.expire(Instant::now()).is_empty());
        let later = Instant::now() + AWAY_GRACE + Duration::from_millis(1);
        let go: Vec<String> = lines.expire(later).into_iter().map(turn).collect();
        assert_eq!(go, ["e2"]);
        // The late head is no longer the head: its end does not move the line.
        assert!(leave(&lines, "a", 1).is_none());
        assert!(leave(&lines, "a", 2).is_none());
        assert_eq!(lines.waiting(), 0);
    }

    #[test]
    fn past_the_memory_bound_deliveries_are_kept_as_ids_and_read_back_in_turn() {
        let lines = Lines::new(1);
        assert_eq!(id(lines.enter(d("a", 1))), "e1");
        assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
        assert!(matches!(lines.enter(d("a", 3)), Entered::Kept));
        assert!(matches!(lines.enter(d("a", 4)), Entered::Kept));
        assert_eq!(lines.waiting(), 1);
        assert_eq!(leave(&lines, "a", 1).as_deref(), Some("e2"));
        // e3's turn: it is read back; nothing else goes until it is here.
        let Some(Turn::Fetch(fetch, place)) = Place::of(&d("a", 2)).and_then(|p| lines.leave(p))
        else {
            panic!("e3 is not fetched");
        };
        assert_eq!(fetch, "e3");
        // Redis cannot be read: asked again a second later, not before.
        lines.fetch_failed(place);
        assert!(lines.expire(Instant::now()).is_empty());
        let again: Vec<String> = lines
            .expire(Instant::now() + FETCH_RETRY)
            .into_iter()
            .map(turn)
            .collect();
        assert_eq!(again, ["fetch e3"]);
        // Read back: it goes on, then e4 is read back in turn.
        assert_eq!(id(lines.enter(d("a", 3))), "e3");
        assert_eq!(leave(&lines, "a", 3).as_deref(), Some("fetch e4"));
        assert_eq!(id(lines.enter(d("a", 4))), "e4");
        assert!(leave(&lines, "a", 4).is_none());
        assert_eq!(lines.waiting(), 0);
    }

    #[test]
    fn past_the_bound_on_ids_deliveries_go_on_out_of_order() {
        let lines = Lines::new(1);
        assert_eq!(id(lines.enter(d("a", 1))), "e1");
        assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
        for n in 0..KEPT_PER_WAITING as u64 {
            assert!(matches!(lines.enter(d("a", 3 + n)), Entered::Kept));
        }
        let last = 3 + KEPT_PER_WAITING as u64;
        assert_eq!(id(lines.enter(d("a", last))), format!("e{last}"));
    }

    #[test]
    fn past_the_bound_a_head_in_the_due_set_with_nothing_behind_is_forgotten() {
        let lines = Lines::new(1);
        for job in 0..=KEPT_PER_WAITING {
            assert!(matches!(
                lines.enter(d(&job.to_string(), 1)),
                Entered::Go(_)
            ));
        }
        // More lines than the bound: one whose head goes to the due set is let go...
        lines.away(&d("0", 1), Duration::ZERO);
        assert!(matches!(lines.enter(d("0", 2)), Entered::Go(_)));
        // ...but not one with something behind it.
        assert!(matches!(lines.enter(d("1", 2)), Entered::Held));
        lines.away(&d("1", 1), Duration::ZERO);
        assert!(matches!(lines.enter(d("1", 3)), Entered::Kept));
        assert_eq!(leave(&lines, "1", 1).as_deref(), Some("e2"));
    }

    #[test]
    fn a_delivery_recorded_straight_into_the_due_set_keeps_its_place_in_its_line() {
        let lines = Lines::new(100);
        // The first of its job, due later: it is the head, away.
        lines.enter_away(&d("a", 1), Duration::from_millis(10));
        assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
        // Another one due later, behind it: it holds nothing in memory.
        lines.enter_away(&d("a", 3), Duration::from_millis(10));
        assert!(matches!(lines.enter(d("a", 4)), Entered::Held));
        assert_eq!(lines.waiting(), 2);
        // The head comes back and goes; then e2.
        assert_eq!(id(lines.enter(d("a", 1))), "e1");
        assert_eq!(leave(&lines, "a", 1).as_deref(), Some("e2"));
        // e3's turn: it is still in the due set, so nothing goes until it is back...
        assert!(leave(&lines, "a", 2).is_none());
        assert!(lines.expire(Instant::now()).is_empty());
        // ...and back, it goes on, then e4.
        assert_eq!(id(lines.enter(d("a", 3))), "e3");
        assert_eq!(leave(&lines, "a", 3).as_deref(), Some("e4"));
        assert!(leave(&lines, "a", 4).is_none());
        assert_eq!(lines.waiting(), 0);

        // Back before its turn: it waits in memory like any other.
        assert_eq!(id(lines.enter(d("b", 1))), "e1");
        lines.enter_away(&d("b", 2), Duration::from_millis(10));
        assert!(matches!(lines.enter(d("b", 2)), Entered::Held));
        assert_eq!(leave(&lines, "b", 1).as_deref(), Some("e2"));
        assert!(leave(&lines, "b", 2).is_none());

        // Never back (another instance took it, or a crash lost it): once it is the head, the
        // line goes on after its grace.
        assert_eq!(id(lines.enter(d("c", 1))), "e1");
        lines.enter_away(&d("c", 2), Duration::ZERO);
        assert!(matches!(lines.enter(d("c", 3)), Entered::Held));
        assert!(leave(&lines, "c", 1).is_none());
        let later = Instant::now() + AWAY_GRACE + Duration::from_millis(1);
        let go: Vec<String> = lines.expire(later).into_iter().map(turn).collect();
        assert_eq!(go, ["e3"]);
        assert!(leave(&lines, "c", 3).is_none());
        assert_eq!(lines.waiting(), 0);
    }

    #[test]
    fn a_delivery_without_a_job_recorded_into_the_due_set_makes_no_line() {
        let lines = Lines::new(100);
        let mut no_job = d("a", 1);
        no_job.job = None;
        lines.enter_away(&no_job, Duration::from_secs(1));
        assert!(matches!(lines.enter(d("a", 2)), Entered::Go(_)));
    }
}
