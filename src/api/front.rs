//! The API's front door: the `api-accept` thread, which accepts connections, keeps at most
//! `WEBHOOK_API_MAX_CONNECTIONS` of them, and gives each its own small `api-conn` thread.
//!
//! Each open connection has a [`Slot`] saying what it is doing, since when, and whether it has
//! been answered yet. At the limit, a new connection takes the slot of the one that costs least
//! to drop, chosen in this order:
//! 1. one that has been reading a request head or body, or writing a response, for over a
//!    second (a slow client: slowloris, a trickled body, a reader that does not read);
//! 2. one open for a while ([`FRESH`]) that has had no response yet (a silent connection, or one
//!    still sending its first request), the oldest first;
//! 3. a kept-alive connection idle for a while since its last response, the longest idle first;
//! 4. one just opened, not answered yet, the oldest first;
//! 5. a kept-alive connection just answered, then one in the middle of a request.
//!
//! So a flood of idle or slow connections cannot keep `/health` or anyone else out, and the
//! attackers' connections go before those of clients the server has answered, which are likely
//! to send their next request any moment (evicting one then loses that request: 300 slowloris
//! connections cost 50 busy keep-alive clients a fifth of their requests while slots were taken
//! from the longest idle). A connection just opened or just answered probably has a request on
//! its way, so it goes last. A new connection is refused (503) only when every slot has a
//! request in a handler. An evicted connection's socket is shut down, which ends its thread's
//! blocked read or write at once.
//!
//! At the stop the acceptor closes the listener (new connections are refused, not left in the
//! backlog), then, until every connection has ended: shuts down the reading side of those
//! between requests (their thread still reads a request already received, answers it with
//! `Connection: close`, and ends; with nothing received it ends at once), evicts those reading
//! or writing for over a second, and waits for those with a request in a handler.

use std::io::{self, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::Mutex;

use super::server::Server;
use super::slot::{Phase, Slot};
use crate::shutdown::Outage;

/// Stack of a connection thread: it parses heads and copies bytes; handlers run elsewhere.
const CONN_STACK: usize = 256 * 1024;
/// A connection reading or writing for longer than this is slow, and evicted first.
const SLOW: Duration = Duration::from_secs(1);
/// A connection opened or answered less than this ago probably has a request on its way: a real
/// client sends at once.
const FRESH: Duration = Duration::from_millis(250);

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
        let now = self.epoch.elapsed().as_millis() as u64;
        let slot = Arc::new(Slot {
            socket,
            phase: AtomicU8::new(Phase::Idle as u8),
            since_ms: AtomicU64::new(now),
            opened_ms: now,
            answered: AtomicBool::new(false),
            epoch: self.epoch,
        });
        open.push(slot.clone());
        Ok(slot)
    }

    /// At the stop, until every connection has ended (see the module docs): ends the idle
    /// ones, evicts the slow ones, waits for the others.
    fn close_all(&self) {
        let slow = SLOW.as_millis() as u64;
        let fresh = FRESH.as_millis() as u64;
        loop {
            let mut open = self.open.lock();
            if open.is_empty() {
                return;
            }
            let now = self.epoch.elapsed().as_millis() as u64;
            let mut i = 0;
            while i < open.len() {
                let slot = &open[i];
                let (phase, in_phase) = slot.state(now);
                let answered = slot.answered.load(Ordering::Acquire);
                match phase {
                    // A client just connected is given a moment to send its request.
                    Phase::Idle if answered || slot.age(now) >= fresh => {
                        let _ = slot.socket.shutdown(NetShutdown::Read);
                    }
                    Phase::Head | Phase::Body | Phase::Writing
                        if in_phase >= slow && slot.evict(phase) =>
                    {
                        open.swap_remove(i);
                        continue;
                    }
                    _ => {}
                }
                i += 1;
            }
            drop(open);
            std::thread::sleep(Duration::from_millis(10));
        }
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
    let fresh = FRESH.as_millis() as u64;
    open.iter()
        .enumerate()
        .filter_map(|(i, slot)| {
            let (phase, in_phase) = slot.state(now_ms);
            let answered = slot.answered.load(Ordering::Acquire);
            let open_for = slot.age(now_ms);
            let (rank, age) = match phase {
                Phase::Handler | Phase::Evicted => return None,
                Phase::Head | Phase::Body | Phase::Writing if in_phase >= slow => (0, in_phase),
                _ if !answered && open_for >= fresh => (1, open_for),
                Phase::Idle if answered && in_phase >= fresh => (2, in_phase),
                _ if !answered => (3, open_for),
                Phase::Idle => (4, in_phase),
                Phase::Head | Phase::Body | Phase::Writing => (5, in_phase),
            };
            Some((rank, std::cmp::Reverse(age), i))
        })
        .min()
        .map(|(_, _, i)| i)
}

/// The most connections to keep: `configured`, unless the process may not open that many files
/// besides the `other_files` that Redis, deliveries and the log need. At the open-file limit
/// `accept` fails before the slots are full, and no idle connection is evicted: 400 idle
/// connections under a limit of 300 files kept `/health` out for the idle timeout.
pub(crate) fn connection_limit(configured: usize, other_files: u64) -> usize {
    let Some(files) = crate::config::open_file_limit() else {
        return configured;
    };
    let fit = usize::try_from(files.saturating_sub(other_files)).unwrap_or(usize::MAX);
    if configured <= fit {
        return configured;
    }
    let limit = fit.max(8);
    warn!(
        "WEBHOOK_API_MAX_CONNECTIONS is {configured}, but the process may open only {files} files \
         and needs about {other_files} for Redis and deliveries: the API keeps at most {limit} \
         connections (raise the open-file limit, e.g. systemd's LimitNOFILE, to keep more)"
    );
    limit
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
        .spawn(move || {
            accept_loop(&listener, &server, &slots);
            drop(listener);
            let open = slots.open.lock().len();
            info!(
                "API stopped listening; closing {open} connections once their requests are answered"
            );
            slots.close_all();
        })
}

fn accept_loop(listener: &TcpListener, server: &Arc<Server>, slots: &Arc<Slots>) {
    let mut full = Outage::default();
    let mut failing_accept = Outage::default();
    while !server.shutdown.is_set() {
        match listener.accept() {
            Ok((client, peer)) => {
                failing_accept.recovered();
                open(client, peer, server, slots, &mut full);
            }
            Err(e) => {
                // Out of file descriptors or memory: wait for connections to close.
                if failing_accept.failed() {
                    warn!("API cannot accept connections: {e}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // Connections already in the backlog would be reset when the listener closes, their
    // requests perhaps sent: serve them like the others (a bounded number).
    if listener.set_nonblocking(true).is_ok() {
        for _ in 0..slots.max {
            let Ok((client, peer)) = listener.accept() else {
                break;
            };
            open(client, peer, server, slots, &mut full);
        }
    }
}

/// Gives `client` a slot and its connection thread, or answers 503 when every slot is busy.
fn open(
    client: TcpStream,
    peer: SocketAddr,
    server: &Arc<Server>,
    slots: &Arc<Slots>,
    full: &mut Outage,
) {
    let slot = match slots.admit(client) {
        Ok(slot) => slot,
        Err(client) => {
            if full.failed() {
                warn!(
                    "API has {} connections all waiting on handlers; refusing more with 503",
                    slots.max
                );
            }
            refuse(&client);
            return;
        }
    };
    full.recovered();
    let (server, thread_slots, thread_slot) = (server.clone(), slots.clone(), slot.clone());
    let spawned = std::thread::Builder::new()
        .name("api-conn".into())
        .stack_size(CONN_STACK)
        .spawn(move || {
            super::conn::serve(peer, &thread_slot, &server);
            thread_slots.release(&thread_slot);
        });
    if let Err(e) = spawned {
        // Without a thread the slot would stay taken and the client unanswered.
        warn!("cannot start an API connection thread for {peer}: {e}");
        refuse(slot.socket());
        slots.release(&slot);
    }
}

/// Answers 503 to a connection that cannot be served and closes it.
fn refuse(mut client: &TcpStream) {
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
    use crate::api::slot::Evicted;

    /// A connection for the victim tests: its phase, ms in that phase, ms open, and whether it
    /// has been answered.
    type Open = (Phase, u64, u64, bool);

    fn slots(connections: &[Open]) -> (Vec<Arc<Slot>>, u64, Vec<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let epoch = Instant::now()
            .checked_sub(Duration::from_secs(1000))
            .unwrap_or_else(Instant::now);
        let now = epoch.elapsed().as_millis() as u64;
        let mut keep = Vec::new();
        let open = connections
            .iter()
            .map(|(phase, in_phase, open_for, answered)| {
                let socket = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
                keep.push(socket.try_clone().unwrap_or_else(|e| panic!("{e}")));
                Arc::new(Slot {
                    socket,
                    phase: AtomicU8::new(*phase as u8),
                    since_ms: AtomicU64::new(now.saturating_sub(*in_phase)),
                    opened_ms: now.saturating_sub(*open_for),
                    answered: AtomicBool::new(*answered),
                    epoch,
                })
            })
            .collect();
        (open, now, keep)
    }

    #[test]
    fn slow_then_stale_then_the_longest_idle_go_and_never_a_busy_one() {
        use Phase::*;
        type Case = (&'static [Open], Option<usize>);
        let cases: &[Case] = &[
            // Slow first, the slowest of them.
            (
                &[
                    (Idle, 9000, 9000, true),
                    (Head, 1500, 1500, false),
                    (Body, 800, 900, false),
                ],
                Some(1),
            ),
            (
                &[
                    (Idle, 9000, 9000, false),
                    (Writing, 2000, 5000, true),
                    (Head, 3000, 3000, false),
                ],
                Some(2),
            ),
            // Then one never answered in all its time open, the oldest, before an answered one.
            (
                &[
                    (Idle, 5000, 9000, true),
                    (Head, 500, 600, false),
                    (Idle, 300, 300, false),
                ],
                Some(1),
            ),
            // Then the answered client idle the longest, before a connection just opened.
            (
                &[
                    (Idle, 10, 10, false),
                    (Idle, 300, 9000, true),
                    (Idle, 400, 9000, true),
                ],
                Some(2),
            ),
            // A connection just opened goes before a client just answered or mid-request.
            (
                &[
                    (Idle, 50, 9000, true),
                    (Head, 5, 9000, true),
                    (Head, 20, 20, false),
                ],
                Some(2),
            ),
            (&[(Head, 5, 9000, true), (Idle, 50, 9000, true)], Some(1)),
            (
                &[(Handler, 100_000, 100_000, false), (Head, 10, 10, true)],
                Some(1),
            ),
            (
                &[(Handler, 5, 5, false), (Evicted, 50_000, 50_000, false)],
                None,
            ),
        ];
        for (connections, expected) in cases {
            let (open, now, _keep) = slots(connections);
            assert_eq!(choose_victim(&open, now), *expected, "{connections:?}");
        }
    }

    #[test]
    fn an_evicted_connection_cannot_enter_another_phase() {
        let (open, _, _keep) = slots(&[(Phase::Idle, 0, 0, false)]);
        assert!(!open[0].evict(Phase::Head), "the phase had moved on");
        assert!(open[0].evict(Phase::Idle));
        assert_eq!(open[0].enter(Phase::Head), Err(Evicted));
    }
}
