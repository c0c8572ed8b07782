//! Fair shares of pub/sub events between instances on one Redis.
//!
//! Every instance receives every pub/sub message, and the first to claim an event (`SET NX`)
//! delivers it. Left to the race, the instance Redis writes to first wins most claims: in a
//! measured burst on three instances one claimed 75% of the events and another 1%. So each
//! event has an owner among the live instances (rendezvous hashing of the instance ids with the
//! event's job id, or its identity when it has none: every event of a job goes to one instance,
//! in order). The owner claims at once; the others wait [`GRACE`] before they try, and find it
//! claimed. If the owner is gone, slow or not yet known to everyone, another instance claims the
//! event after the grace, so the share only decides who goes first: the claim still decides who
//! delivers, exactly once.
//!
//! The live instances are the heartbeats in Redis, re-read every second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};
use parking_lot::Mutex;

use crate::delivery::durable::Durable;
use crate::event::Event;

/// How long an instance leaves an event it does not own to its owner. Long enough for an owner
/// on a loaded machine to get to its events (at 500 ms, instances on a 2-core machine at load 10
/// took up to a third of each other's share); it is also how late an event is when its owner
/// has died and its heartbeat has not expired yet.
pub(crate) const GRACE: Duration = Duration::from_secs(2);
/// How often the live instances are re-read.
const REFRESH: Duration = Duration::from_secs(1);

/// Which events this instance claims first. Read by the subscriber, refreshed by the record
/// stage.
#[derive(Debug, Default)]
pub(crate) struct Share {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// This instance (empty: not started, every event is ours).
    me: Arc<str>,
    /// Whether events are claimed at all.
    claims: bool,
    /// The other live instances (this one is always live).
    others: Arc<[String]>,
    refreshed: Option<Instant>,
}

impl Share {
    /// Names this instance; with `claims` off every event is its own.
    pub(crate) fn start(&self, me: &str, claims: bool) {
        let mut state = self.state.lock();
        state.me = Arc::from(me);
        state.claims = claims;
    }

    /// Re-reads the live instances when a second has passed (keeps the last list if Redis is
    /// away: a stale list only changes who claims first).
    pub(crate) fn refresh(&self, durable: &Durable) {
        {
            let mut state = self.state.lock();
            if state.refreshed.is_some_and(|at| at.elapsed() < REFRESH) {
                return;
            }
            state.refreshed = Some(Instant::now());
        }
        match durable.other_instances() {
            Ok(others) => {
                let live: Vec<String> = others
                    .into_iter()
                    .filter_map(|(id, alive)| alive.then_some(id))
                    .collect();
                let mut state = self.state.lock();
                if *state.others != *live {
                    info!(
                        "pub/sub events are shared with {} other live instances: {live:?}",
                        live.len()
                    );
                    state.others = Arc::from(live);
                }
            }
            Err(e) => debug!("{e}; keeping the last list of live instances"),
        }
    }

    /// Whether this instance claims `event` first.
    pub(crate) fn owns(&self, event: &Event) -> bool {
        let (me, others) = {
            let state = self.state.lock();
            if !state.claims || state.others.is_empty() {
                return true;
            }
            (state.me.clone(), state.others.clone())
        };
        let job = event.job_id();
        let key: &[u8] = match &job {
            Some(job) => job.as_bytes(),
            None => &event.identity,
        };
        let mine = score(&me, key);
        others.iter().all(|other| {
            let theirs = score(other, key);
            // Ties (practically never) go to the smaller id, the same way on every instance.
            mine > theirs || (mine == theirs && *me < **other)
        })
    }
}

/// A stable 64-bit hash of (instance, key): FNV-1a, the same in every build and version, so
/// instances of different releases agree on owners.
fn score(instance: &str, key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in instance.bytes().chain([0xff]).chain(key.iter().copied()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys: finish with a 64-bit mixer.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(me: &str, others: &[&str]) -> Share {
        let share = Share::default();
        share.start(me, true);
        share.state.lock().others = others.iter().map(|s| s.to_string()).collect();
        share
    }

    fn event(job: &str) -> Event {
        crate::event::parse::parse(
            "complete_job",
            format!(r#"{{"job_id":"{job}","timestamp":1}}"#).as_bytes(),
            1,
        )
        .map(|p| p.events.into_iter().next())
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("a complete_job event"))
    }

    #[test]
    fn exactly_one_instance_owns_each_event_and_shares_are_even() {
        let ids = ["host-a-1", "host-b-2", "host-c-3"];
        let shares: Vec<Share> = ids
            .iter()
            .map(|me| {
                let others: Vec<&str> = ids.iter().copied().filter(|i| i != me).collect();
                share(me, &others)
            })
            .collect();
        let mut owned = [0usize; 3];
        for i in 0..3000 {
            let e = event(&format!("job-{i}"));
            let owners: Vec<usize> = (0..3).filter(|k| shares[*k].owns(&e)).collect();
            assert_eq!(owners.len(), 1, "job-{i}: {owners:?}");
            owned[owners[0]] += 1;
        }
        for n in owned {
            assert!((900..=1100).contains(&n), "{owned:?}");
        }
    }

    #[test]
    fn alone_an_instance_owns_everything() {
        assert!(share("a", &[]).owns(&event("job-1")));
        let without_claims = share("a", &["b", "c"]);
        without_claims.start("a", false);
        assert!(without_claims.owns(&event("job-1")));
    }
}
