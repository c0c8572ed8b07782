//! The HTTP client of the process: ureq `Agent`s with keep-alive, no redirects, a time limit per
//! attempt, no proxy from the environment, and the SSRF guard as their resolver; one agent per
//! origin ([`Clients`]), so that finding a kept-alive connection costs the same with one
//! endpoint or ten thousand.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ureq::Agent;
use ureq::config::AutoHeaderValue;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, NextTimeout, Transport,
};

use super::dns::Lookups;
use super::ssrf::GuardedResolver;
use crate::net::Cidr;

/// The `User-Agent` of every delivery (the original's).
pub(crate) const USER_AGENT: &str = "EMP-Job-Queue-Webhook/1.0";

/// An origin's agent unused this long may be let go (its pooled connections would have aged out
/// by then: `max_idle_age`).
const ORIGIN_IDLE: Duration = Duration::from_secs(30);

/// The delivery client: one ureq [`Agent`] per origin (scheme, host and port), made on first use
/// and sharing one resolver and its DNS cache.
///
/// Why not one agent for all: ureq's pool keeps every idle connection of an agent in one list,
/// and each time a connection goes back it counts the connections of every host against that
/// list under the pool's lock; with a few dozen endpoints busy at once that took about 200 µs
/// per request, and every delivery thread waited for it in turn. An agent per origin keeps each
/// list as short as one endpoint's connections.
///
/// Idle connections are bounded per origin (`per_origin`) and in all (`total`): past
/// `total / per_origin` origins, the agent used least recently is let go (its idle connections
/// close; attempts in flight keep theirs), so the file descriptors the client holds do not grow
/// with the number of webhooks.
#[derive(Debug)]
pub(crate) struct Clients {
    timeout: Duration,
    per_origin: usize,
    max_origins: usize,
    resolver: GuardedResolver,
    agents: Mutex<HashMap<Box<str>, (Agent, Instant)>>,
}

impl Clients {
    /// The delivery client, keeping up to `per_origin` idle keep-alive connections per origin
    /// (an endpoint's in-flight limit, so a busy endpoint never reconnects) and `total` in all.
    /// `own_port` is the API port, whose capture URLs on loopback are always allowed; `lookups`
    /// resolves host names.
    pub(crate) fn new(
        timeout: Duration,
        (per_origin, total): (usize, usize),
        (allowed, own_port): (Vec<Cidr>, Option<u16>),
        lookups: Lookups,
    ) -> Clients {
        let per_origin = per_origin.max(1);
        Clients {
            timeout,
            per_origin,
            max_origins: (total / per_origin).max(1),
            resolver: GuardedResolver::new(allowed, own_port, lookups),
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// The agent for `url`'s origin (a URL ureq will refuse gets an agent of its own too, and
    /// its error comes from the request).
    pub(crate) fn agent(&self, url: &str) -> Agent {
        let key = origin(url);
        let now = Instant::now();
        let mut agents = self.agents.lock();
        if let Some((agent, used)) = agents.get_mut(key) {
            *used = now;
            return agent.clone();
        }
        if agents.len() >= self.max_origins {
            agents.retain(|_, (_, used)| now.duration_since(*used) < ORIGIN_IDLE);
        }
        if agents.len() >= self.max_origins {
            let oldest = agents
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(origin, _)| origin.clone());
            if let Some(origin) = oldest {
                agents.remove(&origin);
            }
        }
        let agent = agent(self.timeout, self.per_origin, self.resolver.clone());
        agents.insert(key.into(), (agent.clone(), now));
        agent
    }

    /// Origins with an agent.
    #[cfg(test)]
    fn origins(&self) -> usize {
        self.agents.lock().len()
    }
}

/// `scheme://authority` of a URL: what follows up to the first `/`, `?` or `#` after `://`
/// (the whole string if it has no `://`).
fn origin(url: &str) -> &str {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url;
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    &url[..end]
}

/// One origin's agent.
fn agent(timeout: Duration, connections: usize, resolver: GuardedResolver) -> Agent {
    // A per-read and per-write limit a little under the attempt's: ureq sets a socket timeout
    // before each read and write, and with only the shrinking global budget that value changes
    // every time (a system call each); a fixed per-I/O limit below it is set once per
    // connection. The attempt as a whole is still bounded by `timeout`.
    let per_io = timeout.saturating_sub((timeout / 100).min(Duration::from_millis(50)));
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(timeout))
        .timeout_per_read(Some(per_io))
        .timeout_per_write(Some(per_io))
        .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
        .user_agent(AutoHeaderValue::Provided(std::sync::Arc::new(
            USER_AGENT.to_string(),
        )))
        .accept_encoding(AutoHeaderValue::None)
        .max_idle_connections(connections.max(1))
        .max_idle_connections_per_host(connections.max(1))
        .max_idle_age(ORIGIN_IDLE)
        .build();
    Agent::with_parts(config, DefaultConnector::new().chain(Coalesce), resolver)
}

/// Most bytes held back before they are sent anyway (a long body goes out in pieces of this).
const COALESCE_LIMIT: usize = 64 * 1024;

/// Sends a request's head and body in one write, and spares a just-probed connection a second
/// probe.
///
/// ureq hands its transport the head and then the body as two writes; on a connection with
/// `TCP_NODELAY` that is two segments, so the receiver wakes twice and both ends make a system
/// call more per delivery. [`Coalesced`] holds what ureq writes until ureq turns to reading the
/// response (or 64 KiB are held), then sends it at once. Over TLS it wraps
/// the TLS transport, so the request is also one TLS record.
#[derive(Debug)]
pub(crate) struct Coalesce;

impl<In: Transport> Connector<In> for Coalesce {
    type Out = Coalesced<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Coalesced<In>>, ureq::Error> {
        Ok(chained.map(|inner| Coalesced {
            inner,
            held: Vec::new(),
            probed_open: None,
        }))
    }
}

/// A transport whose writes are held until its reads (see [`Coalesce`]).
#[derive(Debug)]
pub(crate) struct Coalesced<T> {
    inner: T,
    held: Vec<u8>,
    /// When the connection was last found open, if nothing was sent or read since.
    probed_open: Option<Instant>,
}

/// A connection found open this recently, with no I/O since, is not probed again: ureq probes
/// when a connection goes back to its pool and again when it is taken out, each probe three
/// system calls, and under load the two are microseconds apart.
const PROBE_AGAIN_AFTER: Duration = Duration::from_millis(2);

impl<T: Transport> Coalesced<T> {
    fn send_held(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let mut sent = 0;
        while sent < self.held.len() {
            let output = self.inner.buffers().output();
            let n = output.len().min(self.held.len() - sent);
            if n == 0 {
                return Err(ureq::Error::Io(std::io::Error::other(
                    "the transport has no output buffer",
                )));
            }
            output[..n].copy_from_slice(&self.held[sent..sent + n]);
            self.inner.transmit_output(n, timeout)?;
            sent += n;
        }
        self.held.clear();
        Ok(())
    }
}

impl<T: Transport> Transport for Coalesced<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.probed_open = None;
        let output = self.inner.buffers().output();
        let amount = amount.min(output.len());
        self.held.extend_from_slice(&output[..amount]);
        if self.held.len() >= COALESCE_LIMIT {
            self.send_held(timeout)?;
        }
        Ok(())
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.probed_open = None;
        self.send_held(timeout)?;
        self.inner.maybe_await_input(timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.probed_open = None;
        self.send_held(timeout)?;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        if self.held.is_empty()
            && self
                .probed_open
                .is_some_and(|at| at.elapsed() < PROBE_AGAIN_AFTER)
        {
            return true;
        }
        let open = self.inner.is_open();
        self.probed_open = open.then(Instant::now);
        open
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_scheme_and_authority() {
        assert_eq!(
            origin("https://a.example:8443/x/y?q#f"),
            "https://a.example:8443"
        );
        assert_eq!(origin("http://a.example?q=1"), "http://a.example");
        assert_eq!(origin("http://user@a.example#f"), "http://user@a.example");
        assert_eq!(origin("http://a.example"), "http://a.example");
        assert_eq!(origin("not a url"), "not a url");
    }

    #[test]
    fn one_agent_per_origin_and_the_least_recently_used_goes_past_the_budget() {
        // Four idle connections per origin and sixteen in all: four origins kept.
        let clients = Clients::new(
            Duration::from_secs(1),
            (4, 16),
            (Vec::new(), None),
            Lookups::default(),
        );
        clients.agent("http://127.0.0.1:1/a");
        clients.agent("http://127.0.0.1:1/b?x");
        assert_eq!(clients.origins(), 1);
        for port in 2..=4 {
            std::thread::sleep(Duration::from_millis(2));
            clients.agent(&format!("http://127.0.0.1:{port}/"));
        }
        std::thread::sleep(Duration::from_millis(2));
        // Port 1 is used again: port 2 is now the one used least recently.
        clients.agent("http://127.0.0.1:1/c");
        std::thread::sleep(Duration::from_millis(2));
        clients.agent("http://127.0.0.1:5/");
        let agents = clients.agents.lock();
        assert_eq!(agents.len(), 4);
        assert!(!agents.contains_key("http://127.0.0.1:2"));
        for port in [1, 3, 4, 5] {
            assert!(agents.contains_key(format!("http://127.0.0.1:{port}").as_str()));
        }
    }
}
