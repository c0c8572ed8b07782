//! The SSRF guard: which resolved addresses a delivery may connect to.
//!
//! The check runs inside the HTTP client's resolver ([`GuardedResolver`]), on the addresses the
//! connection will actually use, so a hostname that resolves (or re-resolves, DNS rebinding) to a
//! private address is refused at connect time. Addresses inside `WEBHOOK_ALLOWED_NETWORKS` pass.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use ureq::config::Config as UreqConfig;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use crate::net::{Cidr, canonical};

/// Why `ip` is not a public unicast address, or `None` if it is one.
pub(crate) fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local or cloud metadata (169.254.0.0/16)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    Some(match s[0] {
        0 if s[1..6].iter().all(|x| *x == 0) => "IPv4-compatible (::/96)",
        0x64 if s[1] == 0xff9b => "NAT64 (64:ff9b::/96)",
        0x100 if s[1..4].iter().all(|x| *x == 0) => "discard (100::/64)",
        0x2001 if s[1] < 0x200 => "IETF protocol assignments (2001::/23)",
        0x2001 if s[1] == 0xdb8 => "documentation (2001:db8::/32)",
        0x2002 => "6to4 (2002::/16)",
        x if x & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        x if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        x if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        x if x & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        _ => return None,
    })
}

/// A target refused by the guard; carried inside the HTTP client's I/O error.
#[derive(Debug, Clone)]
pub(crate) struct Blocked {
    /// The address refused.
    pub(crate) addr: IpAddr,
    /// Why.
    pub(crate) reason: &'static str,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "target address {} is {} and not in WEBHOOK_ALLOWED_NETWORKS",
            self.addr, self.reason
        )
    }
}

impl std::error::Error for Blocked {}

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

/// A resolver that refuses non-public addresses unless allowed, and caches lookups briefly so the
/// hot path rarely waits for a lookup.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    allowed: Arc<Vec<Cidr>>,
    /// The service's own API port: its capture URLs on loopback (test receivers, monitor
    /// sessions, which the monitor UI registers as webhooks) are always allowed.
    own_port: Option<u16>,
    /// Where host names are resolved, and their answers cached.
    lookups: Lookups,
}

impl GuardedResolver {
    /// A resolver that lets `allowed` networks through.
    pub(crate) fn new(
        allowed: Vec<Cidr>,
        own_port: Option<u16>,
        lookups: Lookups,
    ) -> GuardedResolver {
        GuardedResolver {
            allowed: Arc::new(allowed),
            own_port,
            lookups,
        }
    }

    /// Whether a connection to `ip` is allowed.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        match forbidden_reason(ip) {
            Some(reason) if !self.allowed.iter().any(|n| n.contains(ip)) => {
                Err(Blocked { addr: ip, reason })
            }
            _ => Ok(()),
        }
    }

    fn lookup(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let with_port = |addrs: &[SocketAddr]| -> Vec<SocketAddr> {
            addrs
                .iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect()
        };
        let cached = self.lookups.0.cache.lock().get(host).cloned();
        if let Some((at, addrs)) = &cached {
            if at.elapsed() < DNS_CACHE_TTL {
                return Ok(with_port(addrs));
            }
            if at.elapsed() < DNS_STALE_FOR {
                // Past its time: refresh it in the background and use it meanwhile, so a host
                // whose answer expires never waits for DNS (nor fails when lookups are scarce).
                // (Its answer goes to the cache; this attempt does not wait for it.)
                let _ = self.lookups.resolve(host, None);
                return Ok(with_port(addrs));
            }
        }
        let deadline = Instant::now() + timeout;
        let addrs = match self.lookups.resolve(host, Some(deadline))? {
            Ok(addrs) if !addrs.is_empty() => addrs,
            Ok(_) => return Err(ureq::Error::HostNotFound),
            Err(e) => {
                return Err(ureq::Error::Io(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("dns lookup of {host} failed: {e}"),
                )));
            }
        };
        Ok(with_port(&addrs))
    }

    /// Resolves `uri` to the addresses a connection may use, refusing non-public ones.
    pub(crate) fn vetted(
        &self,
        uri: &Uri,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let authority = uri
            .authority()
            .ok_or_else(|| ureq::Error::BadUri(format!("{uri} has no host")))?;
        let port = authority
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let host = authority.host();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => self.lookup(host, port, timeout)?,
        };
        let own_capture_url = self.own_port == Some(port)
            && (uri.path().starts_with("/test-receivers/")
                || uri.path().starts_with("/webhook-monitor/"));
        let mut allowed = Vec::with_capacity(addrs.len());
        let mut first_blocked = None;
        for addr in addrs {
            if own_capture_url && addr.ip().is_loopback() {
                allowed.push(addr);
                continue;
            }
            match self.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(b) => {
                    first_blocked.get_or_insert(b);
                }
            }
        }
        match (allowed.is_empty(), first_blocked) {
            (true, Some(blocked)) => Err(ureq::Error::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                blocked,
            ))),
            (true, None) => Err(ureq::Error::HostNotFound),
            (false, _) => Ok(allowed),
        }
    }
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &UreqConfig,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let budget = match timeout.after {
            ureq::unversioned::transport::time::Duration::Exact(d) => d,
            _ => Duration::from_secs(10),
        };
        let addrs = self.vetted(uri, budget)?;
        let mut out = self.empty();
        for addr in addrs.into_iter().take(16) {
            out.push(addr);
        }
        Ok(out)
    }
}

/// The guard's refusal inside a ureq error, if that is what the error is.
pub(crate) fn blocked_in(error: &ureq::Error) -> Option<&Blocked> {
    match error {
        ureq::Error::Io(e) => e.get_ref()?.downcast_ref::<Blocked>(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookups() -> Lookups {
        Lookups::default()
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::127.0.0.1",
        ] {
            assert!(
                forbidden_reason(ip(blocked)).is_some(),
                "{blocked} was allowed"
            );
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "2606:4700::1111",
            "100.128.0.1",
        ] {
            assert_eq!(forbidden_reason(ip(public)), None, "{public} was refused");
        }
    }

    #[test]
    fn allowed_networks_let_addresses_through() {
        let guard = GuardedResolver::new(
            vec![match "127.0.0.0/8".parse::<Cidr>() {
                Ok(cidr) => cidr,
                Err(e) => panic!("127.0.0.0/8: {e}"),
            }],
            None,
            lookups(),
        );
        assert!(guard.check(ip("127.0.0.1")).is_ok());
        assert!(guard.check(ip("::ffff:127.0.0.2")).is_ok());
        assert!(guard.check(ip("10.0.0.1")).is_err());
        assert!(guard.check(ip("169.254.169.254")).is_err());
    }

    /// The guard refuses the metadata address itself, before any connection is made: this test
    /// sends no packet anywhere.
    #[test]
    fn metadata_url_is_refused_by_the_resolver() {
        let guard = GuardedResolver::new(vec![], Some(3335), lookups());
        for url in [
            "http://127.0.0.1:3335/webhooks",
            "http://127.0.0.1:3336/test-receivers/abc/webhook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://127.0.0.1:1/",
            "http://[::1]:1/",
        ] {
            let uri: Uri = match url.parse() {
                Ok(u) => u,
                Err(e) => panic!("{url}: {e}"),
            };
            match guard.vetted(&uri, Duration::from_secs(1)) {
                Err(e) => assert!(blocked_in(&e).is_some(), "{url}: {e}"),
                Ok(addrs) => panic!("{url} resolved to {addrs:?}"),
            }
        }
    }

    #[test]
    fn the_services_own_capture_urls_are_allowed() {
        let guard = GuardedResolver::new(vec![], Some(3335), lookups());
        for url in [
            "http://127.0.0.1:3335/test-receivers/abc/webhook",
            "http://[::1]:3335/webhook-monitor/session_1",
        ] {
            let uri: Uri = match url.parse() {
                Ok(u) => u,
                Err(e) => panic!("{url}: {e}"),
            };
            assert!(guard.vetted(&uri, Duration::from_secs(1)).is_ok(), "{url}");
        }
    }

    /// A host name is resolved on a `delivery-dns` thread, with the port of the URL.
    #[test]
    fn host_names_resolve_on_the_lookup_threads() {
        let guard = GuardedResolver::new(vec![], Some(3335), lookups());
        let uri: Uri = match "http://localhost:3335/test-receivers/abc/webhook".parse() {
            Ok(u) => u,
            Err(e) => panic!("{e}"),
        };
        match guard.vetted(&uri, Duration::from_secs(5)) {
            Ok(addrs) => assert!(
                addrs
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 3335),
                "{addrs:?}"
            ),
            Err(e) => panic!("localhost: {e}"),
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
        let guard = GuardedResolver::new(vec![], None, lookups);
        match guard.lookup("hook.example", 8443, Duration::from_secs(5)) {
            Ok(addrs) => assert_eq!(addrs, vec![SocketAddr::new(addr.ip(), 8443)]),
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
