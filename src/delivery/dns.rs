//! Host-name lookups for the SSRF guard ([`super::ssrf`]): each on a `delivery-dns` thread of its
//! own (a lookup cannot be interrupted), shared by every attempt asking for the same name, and
//! cached, with an expired answer used while a new lookup runs.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

/// How long a hostname's vetted addresses are reused before it is resolved again.
const DNS_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long past that an answer is still used while a new lookup runs.
const DNS_STALE_FOR: Duration = Duration::from_secs(600);
/// Most hostnames kept in the cache.
const DNS_CACHE_MAX: usize = 4096;

/// When a hostname was resolved, and to what.
type CachedLookup = (Instant, Vec<SocketAddr>);

/// Host names resolved at once, at most: one `delivery-dns` thread each.
pub(crate) const MAX_LOOKUPS: usize = 32;

/// What a lookup answers.
type Answer = io::Result<Vec<SocketAddr>>;

/// Host-name lookups in progress, which every clone of the resolver shares.
///
/// A lookup (getaddrinfo) has no time limit of its own and cannot be interrupted, so each runs on
/// a `delivery-dns` thread of its own while the delivery thread waits at most its budget. One
/// thread per host name, not per request: a name already being resolved gets the same answer.
/// And not a fixed few threads with a queue: a name whose servers hang would then make every
/// other name wait behind it. At most [`MAX_LOOKUPS`] run at once; past that a lookup fails at
/// once (the attempt is retried). The threads end when their lookup does; the stop joins them
/// within its deadline, like every other thread.
#[derive(Clone, Default)]
pub(crate) struct Lookups(Arc<LookupsInner>);

#[derive(Default)]
struct LookupsInner {
    /// Host names' vetted answers (with port 0), and when each was looked up.
    cache: Mutex<HashMap<String, CachedLookup>>,
    /// Names being resolved, and who waits for each.
    running: Mutex<HashMap<String, Vec<Sender<Answer>>>>,
    /// The threads of lookups not yet joined (the stop joins them, within its deadline).
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Lookups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lookups({} in progress)", self.0.running.lock().len())
    }
}

impl Lookups {
    /// `host`'s addresses (with port 0): the cached answer while it is fresh; past that, for up
    /// to [`DNS_STALE_FOR`], the cached answer while a new lookup refreshes it in the background
    /// (a host whose answer expires never waits for DNS, nor fails when lookups are scarce);
    /// else a new lookup, waited for up to `timeout`.
    pub(crate) fn addrs(
        &self,
        host: &str,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let cached = self.0.cache.lock().get(host).cloned();
        if let Some((at, addrs)) = cached {
            if at.elapsed() < DNS_CACHE_TTL {
                return Ok(addrs);
            }
            if at.elapsed() < DNS_STALE_FOR {
                // Its answer goes to the cache; this attempt does not wait for it.
                let _ = self.resolve(host, None);
                return Ok(addrs);
            }
        }
        let deadline = Instant::now() + timeout;
        match self.resolve(host, Some(deadline))? {
            Ok(addrs) if !addrs.is_empty() => Ok(addrs),
            Ok(_) => Err(ureq::Error::HostNotFound),
            Err(e) => Err(ureq::Error::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("dns lookup of {host} failed: {e}"),
            ))),
        }
    }

    /// Caches `host`'s answer.
    fn remember(&self, host: &str, addrs: &[SocketAddr]) {
        if addrs.is_empty() {
            return;
        }
        let mut cache = self.0.cache.lock();
        if cache.len() >= DNS_CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < DNS_STALE_FOR);
            if cache.len() >= DNS_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(host.to_string(), (Instant::now(), addrs.to_vec()));
    }

    /// The lookup threads not yet joined, for the stop to join; those that ended are joined
    /// as new ones start.
    pub(crate) fn take_threads(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *self.0.threads.lock())
    }

    /// Keeps a lookup thread's handle, joining those that have ended.
    fn keep(&self, thread: JoinHandle<()>) {
        let mut threads = self.0.threads.lock();
        let (ended, running): (Vec<_>, Vec<_>) =
            threads.drain(..).partition(JoinHandle::is_finished);
        *threads = running;
        threads.push(thread);
        drop(threads);
        for thread in ended {
            if thread.join().is_err() {
                log::error!("a delivery-dns thread panicked");
            }
        }
    }

    /// Resolves `host`, waiting until `deadline` at most (`None` deadline: starts the lookup
    /// and returns at once, for a refresh whose answer goes to the cache only).
    fn resolve(&self, host: &str, deadline: Option<Instant>) -> Result<Answer, ureq::Error> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        {
            let mut running = self.0.running.lock();
            if let Some(waiting) = running.get_mut(host) {
                waiting.push(reply);
                drop(running);
                return wait(answer, deadline);
            }
            if running.len() >= MAX_LOOKUPS {
                // Counted as a DNS failure of this attempt (not as the endpoint failing).
                return Err(ureq::Error::Io(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "dns lookup of {host} not started: {MAX_LOOKUPS} lookups are in progress"
                    ),
                )));
            }
            running.insert(host.to_string(), vec![reply]);
        }
        let mut pending = Pending {
            lookups: self.clone(),
            host: host.to_string(),
            answered: false,
        };
        let spawned = std::thread::Builder::new()
            .name("delivery-dns".into())
            .spawn(move || {
                // Port 0: the answer is the host's; each caller puts its own port in.
                let result = (pending.host.as_str(), 0)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>());
                pending.answer(&result);
            });
        match spawned {
            Ok(thread) => self.keep(thread),
            Err(e) => {
                // The guard moved into the closure was dropped with it: the waiters were told.
                return Err(ureq::Error::Io(io::Error::other(format!(
                    "dns lookup of {host} not started: {e}"
                ))));
            }
        }
        wait(answer, deadline)
    }
}

/// Waits for a lookup's answer until `deadline` (`None`: does not wait).
fn wait(
    answer: crossbeam_channel::Receiver<Answer>,
    deadline: Option<Instant>,
) -> Result<Answer, ureq::Error> {
    let Some(deadline) = deadline else {
        return Err(ureq::Error::Timeout(ureq::Timeout::Resolve));
    };
    answer
        .recv_deadline(deadline)
        .map_err(|_| ureq::Error::Timeout(ureq::Timeout::Resolve))
}

/// A lookup in progress: answers its waiters once, and, if its thread ends without an answer
/// (a panic, or a thread that could not start), tells them so and frees its place.
struct Pending {
    lookups: Lookups,
    host: String,
    /// Whether its waiters have had their answer (a later lookup of the same name may be
    /// under way by then: the guard must not touch it).
    answered: bool,
}

impl Pending {
    fn answer(&mut self, result: &Answer) {
        if std::mem::replace(&mut self.answered, true) {
            return;
        }
        if let Ok(addrs) = result {
            self.lookups.remember(&self.host, addrs);
        }
        let waiting = self
            .lookups
            .0
            .running
            .lock()
            .remove(&self.host)
            .unwrap_or_default();
        for reply in waiting {
            let copy = match result {
                Ok(addrs) => Ok(addrs.clone()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            // The caller may have stopped waiting: then nobody reads it.
            let _ = reply.send(copy);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.answer(&Err(io::Error::other("the lookup ended without an answer")));
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn a_name_being_resolved_shares_its_lookup() {
        let lookups = Lookups::default();
        // A lookup of this name is in progress (as if its thread were still waiting for DNS).
        lookups
            .0
            .running
            .lock()
            .insert("hook.invalid".into(), Vec::new());
        let asking = lookups.clone();
        let waiter = std::thread::spawn(move || {
            asking.resolve(
                "hook.invalid",
                Some(Instant::now() + Duration::from_secs(10)),
            )
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let reply = loop {
            if let Some(reply) = lookups
                .0
                .running
                .lock()
                .get_mut("hook.invalid")
                .and_then(Vec::pop)
            {
                break reply;
            }
            assert!(Instant::now() < deadline, "the second asker never joined");
            std::thread::sleep(Duration::from_millis(5));
        };
        let addr = SocketAddr::new(ip("203.0.113.7"), 80);
        assert!(reply.send(Ok(vec![addr])).is_ok());
        match waiter.join() {
            Ok(Ok(Ok(addrs))) => assert_eq!(addrs, vec![addr]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn past_the_cap_a_lookup_fails_at_once() {
        let lookups = Lookups::default();
        for i in 0..MAX_LOOKUPS {
            lookups
                .0
                .running
                .lock()
                .insert(format!("slow-{i}.invalid"), Vec::new());
        }
        let started = Instant::now();
        let result = lookups.resolve(
            "other.invalid",
            Some(Instant::now() + Duration::from_secs(10)),
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        match result {
            Err(ureq::Error::Io(e)) => {
                assert!(e.to_string().contains("lookups are in progress"), "{e}");
                // A DNS failure of this attempt, not a connection failure of its endpoint.
                assert_eq!(e.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lookup_runs_and_is_forgotten_when_it_ends() {
        let lookups = Lookups::default();
        let answer = lookups.resolve("localhost", Some(Instant::now() + Duration::from_secs(10)));
        assert!(
            matches!(answer, Ok(Ok(ref addrs)) if !addrs.is_empty()),
            "{answer:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lookups.0.running.lock().is_empty() {
            assert!(Instant::now() < deadline, "the lookup stayed in progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Its thread is kept for the stop to join.
        let threads = lookups.take_threads();
        assert_eq!(threads.len(), 1);
        for thread in threads {
            assert!(thread.join().is_ok());
        }
    }

    /// With every lookup slot held by hosts whose DNS hangs, a host whose answer has just expired
    /// is still delivered to: its last answer is used while a new lookup waits for a slot.
    #[test]
    fn an_expired_answer_is_used_while_lookups_are_scarce() {
        let lookups = Lookups::default();
        for i in 0..MAX_LOOKUPS {
            lookups
                .0
                .running
                .lock()
                .insert(format!("hung-{i}.invalid"), Vec::new());
        }
        let addr = SocketAddr::new(ip("203.0.113.9"), 0);
        let expired = Instant::now()
            .checked_sub(DNS_CACHE_TTL + Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        lookups
            .0
            .cache
            .lock()
            .insert("hook.example".into(), (expired, vec![addr]));
        match lookups.addrs("hook.example", Duration::from_secs(5)) {
            Ok(addrs) => assert_eq!(addrs, vec![addr]),
            Err(e) => panic!("{e}"),
        }
    }

    /// Once a lookup has answered, its guard leaves a later lookup of the same name alone.
    #[test]
    fn an_answered_lookup_leaves_the_next_one_of_its_name_alone() {
        let lookups = Lookups::default();
        let mut first = Pending {
            lookups: lookups.clone(),
            host: "again.invalid".into(),
            answered: false,
        };
        lookups
            .0
            .running
            .lock()
            .insert("again.invalid".into(), Vec::new());
        first.answer(&Ok(vec![SocketAddr::new(ip("203.0.113.8"), 0)]));
        // A new lookup of the name starts before the first thread has ended.
        let (reply, answer) = crossbeam_channel::bounded(1);
        lookups
            .0
            .running
            .lock()
            .insert("again.invalid".into(), vec![reply]);
        drop(first);
        assert!(lookups.0.running.lock().contains_key("again.invalid"));
        assert!(
            answer.try_recv().is_err(),
            "the later lookup's waiter was answered"
        );
    }

    /// A lookup whose thread ends without an answer tells its waiters and frees its place.
    #[test]
    fn a_lookup_that_ends_without_an_answer_frees_its_place() {
        let lookups = Lookups::default();
        let (reply, answer) = crossbeam_channel::bounded(1);
        lookups
            .0
            .running
            .lock()
            .insert("gone.invalid".into(), vec![reply]);
        drop(Pending {
            lookups: lookups.clone(),
            host: "gone.invalid".into(),
            answered: false,
        });
        assert!(lookups.0.running.lock().is_empty());
        assert!(matches!(answer.try_recv(), Ok(Err(_))));
    }
}
