//! The API's front door: the `api-accept` thread, which accepts connections, keeps at most
//! `WEBHOOK_API_MAX_CONNECTIONS` of them, and gives each its own small `api-conn` thread.
//!
//! Each open connection has a [`Slot`] saying what it is doing and since when. At the limit, a
//! new connection takes the slot of one that costs nothing to drop, chosen in this order:
//! 1. one that has been reading a request head or body, or writing a response, for over a
//!    second (a slow client: slowloris, a trickled body, a reader that does not read);
//! 2. the connection idle the longest (a kept-alive connection between requests, or one that
//!    never sent a byte);
//! 3. the one reading or writing the longest.
//!
//! So a flood of idle or slow connections cannot keep `/health` or anyone else out; a new
//! connection is refused (503) only when every slot has a request in a handler. An evicted
//! connection's socket is shut down, which ends its thread's blocked read or write at once.

use std::io::{self, Write};
use std::net::{Shutdown as NetShutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, warn};
use parking_lot::Mutex;

use super::server::Server;

/// Stack of a connection thread: it parses heads and copies bytes; handlers run elsewhere.
const CONN_STACK: usize = 256 * 1024;
/// A connection reading or writing for longer than this is slow, and evicted first.
const SLOW: Duration = Duration::from_secs(1);

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Waiting for the first byte of a request.
    Idle = 0,
    /// Reading a request head.
    Head = 1,
    /// Reading a request body.
    Body = 2,
    /// Its request is with a handler: never evicted.
    Handler = 3,
    /// Writing a response, or draining a refused body before closing.
    Writing = 4,
    /// Evicted: its thread stops at its next step.
    Evicted = 5,
}

impl Phase {
    fn from_u8(n: u8) -> Phase {
        match n {
            0 => Phase::Idle,
            1 => Phase::Head,
            2 => Phase::Body,
            3 => Phase::Handler,
            4 => Phase::Writing,
            _ => Phase::Evicted,
        }
    }
}

/// One open connection, as the acceptor sees it.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The connection's socket: its thread reads and writes through `&TcpStream`, the acceptor
    /// shuts it down on eviction (one descriptor per connection).
    socket: TcpStream,
    phase: AtomicU8,
    /// When the phase began, in ms since `epoch`.
    since_ms: AtomicU64,
    epoch: Instant,
}

/// The connection was evicted; its thread must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted;

impl Slot {
    /// The connection's socket.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Enters `phase`, unless the connection has been evicted.
    pub(crate) fn enter(&self, phase: Phase) -> Result<(), Evicted> {
        let mut current = self.phase.load(Ordering::Acquire);
        loop {
            if current == Phase::Evicted as u8 {
                return Err(Evicted);
            }
            match self.phase.compare_exchange_weak(
                current,
                phase as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        self.since_ms.store(now, Ordering::Release);
        Ok(())
    }

    /// Whether the acceptor evicted the connection.
    pub(crate) fn is_evicted(&self) -> bool {
        self.phase.load(Ordering::Acquire) == Phase::Evicted as u8
    }

    /// The phase and how long it has lasted, in ms.
    fn state(&self, now_ms: u64) -> (Phase, u64) {
        let phase = Phase::from_u8(self.phase.load(Ordering::Acquire));
        let since = self.since_ms.load(Ordering::Acquire);
        (phase, now_ms.saturating_sub(since))
    }

    /// Evicts the connection if it is still in `phase`: a connection that has just handed its
    /// request to a handler keeps its slot.
    fn evict(&self, phase: Phase) -> bool {
        let evicted = self
            .phase
            .compare_exchange(
                phase as u8,
                Phase::Evicted as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if evicted {
            let _ = self.socket.shutdown(NetShutdown::Both);
        }
        evicted
    }
}

/// The open connections.
#[derive(Debug)]
struct Slots {
    max: usize,
    open: Mutex<Vec<Arc<Slot>>>,
    epoch: Instant,
}

impl Slots {
    /// A slot for `socket`, evicting an idle or slow connection at the limit; the socket back
    /// when every slot has a request in a handler.
    fn admit(&self, socket: TcpStream) -> Result<Arc<Slot>, TcpStream> {
        let mut open = self.open.lock();
        // A victim may move on (to a handler) between the choice and the eviction: choose again,
        // a bounded number of times.
        let mut tries = 0;
        while open.len() >= self.max {
            let now = self.epoch.elapsed().as_millis() as u64;
            let victim = choose_victim(&open, now).filter(|_| tries < 16);
            let Some(victim) = victim else {
                return Err(socket);
            };
            tries += 1;
            let (phase, age) = open[victim].state(now);
            if open[victim].evict(phase) {
                debug!("API connection evicted ({phase:?} for {age} ms) to admit a new one");
                open.swap_remove(victim);
            }
        }
        let slot = Arc::new(Slot {
            socket,
            phase: AtomicU8::new(Phase::Idle as u8),
            since_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            epoch: self.epoch,
        });
        open.push(slot.clone());
        Ok(slot)
    }

    /// Forgets a closed connection's slot (an evicted one is already gone).
    fn release(&self, slot: &Arc<Slot>) {
        let mut open = self.open.lock();
        if let Some(i) = open.iter().position(|s| Arc::ptr_eq(s, slot)) {
            open.swap_remove(i);
        }
    }
}

/// The index of the connection to evict (see the module docs for the order).
fn choose_victim(open: &[Arc<Slot>], now_ms: u64) -> Option<usize> {
    let slow = SLOW.as_millis() as u64;
    open.iter()
        .enumerate()
        .filter_map(|(i, slot)| {
            let (phase, age) = slot.state(now_ms);
            let rank = match phase {
                Phase::Handler | Phase::Evicted => return None,
                Phase::Head | Phase::Body | Phase::Writing if age >= slow => 0,
                Phase::Idle => 1,
                Phase::Head | Phase::Body | Phase::Writing => 2,
            };
            Some((rank, std::cmp::Reverse(age), i))
        })
        .min()
        .map(|(_, _, i)| i)
}

/// Starts the `api-accept` thread.
pub(crate) fn spawn(
    listener: TcpListener,
    server: Arc<Server>,
    max_connections: usize,
) -> io::Result<JoinHandle<()>> {
    let slots = Arc::new(Slots {
        max: max_connections,
        open: Mutex::new(Vec::with_capacity(max_connections)),
        epoch: Instant::now(),
    });
    std::thread::Builder::new()
        .name("api-accept".into())
        .spawn(move || accept_loop(&listener, &server, &slots))
}

fn accept_loop(listener: &TcpListener, server: &Arc<Server>, slots: &Arc<Slots>) {
    let mut warned_full = false;
    let mut warned_accept = false;
    while !server.shutdown.is_set() {
        let (client, peer) = match listener.accept() {
            Ok(accepted) => {
                warned_accept = false;
                accepted
            }
            Err(e) => {
                // Out of file descriptors or memory: wait for connections to close.
                if !warned_accept {
                    warn!("API cannot accept connections: {e}");
                    warned_accept = true;
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if server.shutdown.is_set() {
            break;
        }
        let slot = match slots.admit(client) {
            Ok(slot) => slot,
            Err(client) => {
                if !warned_full {
                    warn!(
                        "API has {} connections all waiting on handlers; refusing more with 503",
                        slots.max
                    );
                    warned_full = true;
                }
                refuse(client);
                continue;
            }
        };
        warned_full = false;
        let (server, slots) = (server.clone(), slots.clone());
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || {
                super::conn::serve(peer, &slot, &server);
                slots.release(&slot);
            });
        if let Err(e) = spawned {
            warn!("cannot start an API connection thread: {e}");
        }
    }
}

/// Answers 503 to a connection over the limit and closes it.
fn refuse(mut client: TcpStream) {
    let body =
        br#"{"success":false,"error":"Service unavailable","message":"too many connections"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = client.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = client.write_all(head.as_bytes());
    let _ = client.write_all(body);
    let _ = client.shutdown(NetShutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(phases: &[(Phase, u64)]) -> (Vec<Arc<Slot>>, u64, Vec<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let epoch = Instant::now()
            .checked_sub(Duration::from_secs(100))
            .unwrap_or_else(Instant::now);
        let now = epoch.elapsed().as_millis() as u64;
        let mut keep = Vec::new();
        let open = phases
            .iter()
            .map(|(phase, age)| {
                let socket = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
                keep.push(socket.try_clone().unwrap_or_else(|e| panic!("{e}")));
                Arc::new(Slot {
                    socket,
                    phase: AtomicU8::new(*phase as u8),
                    since_ms: AtomicU64::new(now.saturating_sub(*age)),
                    epoch,
                })
            })
            .collect();
        (open, now, keep)
    }

    #[test]
    fn slow_connections_go_first_then_the_longest_idle_and_never_a_busy_one() {
        use Phase::*;
        type Case = (&'static [(Phase, u64)], Option<usize>);
        let cases: &[Case] = &[
            (&[(Idle, 9000), (Head, 1500), (Body, 800)], Some(1)),
            (&[(Idle, 9000), (Writing, 2000), (Head, 3000)], Some(2)),
            (&[(Idle, 100), (Head, 500), (Idle, 200)], Some(2)),
            (&[(Handler, 100_000), (Head, 10)], Some(1)),
            (&[(Handler, 5), (Evicted, 50_000)], None),
        ];
        for (phases, expected) in cases {
            let (open, now, _keep) = slots(phases);
            assert_eq!(choose_victim(&open, now), *expected, "{phases:?}");
        }
    }

    #[test]
    fn an_evicted_connection_cannot_enter_another_phase() {
        let (open, _, _keep) = slots(&[(Phase::Idle, 0)]);
        assert!(!open[0].evict(Phase::Head), "the phase had moved on");
        assert!(open[0].evict(Phase::Idle));
        assert_eq!(open[0].enter(Phase::Head), Err(Evicted));
    }
}
