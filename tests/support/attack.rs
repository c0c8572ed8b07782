//! Hostile and busy clients for the edge tests, each on threads of its own and bounded by count
//! and time: attackers that trickle bytes, regular keep-alive clients that count what they lose,
//! a liveness probe, and the process's footprint to compare before and after an attack.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use super::raw;
use super::receiver::Receiver;
use super::redis::RedisServer;
use super::service::Service;
use super::try_wait_until;

/// How long an attack goes on at most (each test stops it once its checks are done).
pub const ATTACK_LIMIT: Duration = Duration::from_secs(20);

/// One attack at a time in this test process: each measures latency, and two at once would
/// measure each other.
static ONE_ATTACK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn attack_alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_ATTACK_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An attack running on threads of its own until dropped.
pub struct Attack {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Connections the attack (re)opened.
    pub opened: Arc<AtomicUsize>,
}

impl Attack {
    /// `clients` connections, each sending `start` and then one byte of `drip` a second; a
    /// connection the server closes is opened again, as a real attacker's would be.
    pub fn drip(port: u16, clients: usize, start: &'static [u8], drip: u8) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let (s, o) = (stop.clone(), opened.clone());
        let thread = std::thread::spawn(move || {
            let open = || {
                let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
                let _ = stream.set_nonblocking(true);
                let mut stream = stream;
                stream.write_all(start).ok()?;
                o.fetch_add(1, Ordering::Relaxed);
                Some(stream)
            };
            let mut streams: Vec<Option<TcpStream>> = (0..clients).map(|_| open()).collect();
            let started = Instant::now();
            while !s.load(Ordering::Relaxed) && started.elapsed() < ATTACK_LIMIT {
                for slot in streams.iter_mut() {
                    let alive = slot.as_mut().is_some_and(|stream| {
                        // Anything the server says (a 408) or a close ends this connection.
                        let mut sink = [0u8; 1024];
                        let open = matches!(stream.read(&mut sink), Err(e) if e.kind() == ErrorKind::WouldBlock);
                        open && match stream.write(&[drip]) {
                            Ok(_) => true,
                            Err(e) => e.kind() == ErrorKind::WouldBlock,
                        }
                    });
                    if !alive {
                        *slot = open();
                    }
                }
                let second = Instant::now();
                while second.elapsed() < Duration::from_secs(1) && !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Attack {
            stop,
            threads: vec![thread],
            opened,
        }
    }
}

impl Attack {
    /// `clients` keep-alive connections, each sending `request` again as soon as it is answered
    /// (reconnecting when closed), as fast as the server answers.
    pub fn flood(port: u16, clients: usize, request: Vec<u8>) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let request = Arc::new(request);
        let threads = (0..clients)
            .map(|_| {
                let (stop, opened, request) = (stop.clone(), opened.clone(), request.clone());
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let mut stream: Option<TcpStream> = None;
                    let mut buf = Vec::new();
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < ATTACK_LIMIT {
                        let Some(conn) = stream.as_mut() else {
                            stream = TcpStream::connect(("127.0.0.1", port)).ok();
                            opened.fetch_add(1, Ordering::Relaxed);
                            buf.clear();
                            continue;
                        };
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                        let answered = conn.write_all(&request).is_ok()
                            && raw::try_read_response(conn, &mut buf, false).is_ok();
                        if !answered {
                            stream = None;
                        }
                    }
                })
            })
            .collect();
        Attack {
            stop,
            threads,
            opened,
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// `GET /health` on a new connection, as a liveness probe makes it: the status and how long it
/// took, connect included.
pub fn probe_health(service: &Service) -> (u16, Duration) {
    let started = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], service.port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, started.elapsed());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let status = String::from_utf8_lossy(&reply)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, started.elapsed())
}

/// Regular API clients: each keeps one connection alive and makes requests back to back with a
/// short pause (a `GET /health` and a small capture `POST` in turn), as a busy integration does,
/// until stopped. Every request must be answered on its connection.
pub struct Regulars {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<usize, String>>>,
}

impl Regulars {
    pub fn start(port: u16, clients: usize) -> Regulars {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|n| {
                let stop = stop.clone();
                std::thread::spawn(move || Regulars::run(port, n, &stop))
            })
            .collect();
        // Every client has been answered once before anything else happens.
        std::thread::sleep(Duration::from_millis(500));
        Regulars { stop, threads }
    }

    /// One client: the number of answers, or the first request that got none.
    fn run(port: u16, n: usize, stop: &AtomicBool) -> Result<usize, String> {
        let mut stream = raw::connect(port);
        let mut buf = Vec::new();
        let started = Instant::now();
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < ATTACK_LIMIT {
            let request = if answered % 2 == 0 {
                "GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_string()
            } else {
                format!(
                    "POST /webhook-monitor/regular_{n} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{{\"n\":1}}"
                )
            };
            let answer = stream
                .write_all(request.as_bytes())
                .map_err(|e| format!("{e} sending"))
                .and_then(|()| raw::try_read_response(&mut stream, &mut buf, false));
            match answer {
                Ok(r) if r.status == 200 && r.header("connection").is_none() => answered += 1,
                Ok(r) => return Err(format!("request {answered}: {}", r.head)),
                Err(e) => return Err(format!("request {answered}: {e}")),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(answered)
    }

    /// Stops the clients; the answers they had, or the failures.
    pub fn stop(self) -> Result<usize, Vec<String>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut answered = 0;
        let mut failures = Vec::new();
        for (n, thread) in self.threads.into_iter().enumerate() {
            match thread.join() {
                Ok(Ok(a)) => answered += a,
                Ok(Err(e)) => failures.push(format!("client {n}: {e}")),
                Err(_) => failures.push(format!("client {n} panicked")),
            }
        }
        if failures.is_empty() {
            Ok(answered)
        } else {
            Err(failures)
        }
    }
}

/// What the service holds when no client is attacking it: threads, and sockets on its API
/// port. Both must come back after an attack (a connection thread or socket that outlives its
/// connection is a leak).
pub struct Baseline {
    threads: u64,
    sockets: usize,
}

impl Baseline {
    pub fn take(service: &Service) -> Baseline {
        Baseline {
            threads: service.threads().unwrap_or(0),
            sockets: service.api_sockets().unwrap_or(0),
        }
    }

    /// Waits up to 10 s for the service to hold no more than it did; panics if it still does.
    pub fn restored(&self, service: &Service, what: &str) {
        let back = try_wait_until(Duration::from_secs(10), || {
            let threads = service.threads()?;
            let sockets = service.api_sockets()?;
            (threads <= self.threads && sockets <= self.sockets).then_some(())
        });
        assert!(
            back.is_some(),
            "{what}: {:?} threads and {:?} API sockets remain, {} and {} before",
            service.threads(),
            service.api_sockets(),
            self.threads,
            self.sockets
        );
    }
}

/// While an attack goes on: `/health` answers new connections with 200 within 200 ms, and a
/// webhook can be created (on a new connection too) and is delivered to.
pub fn serves_others_meanwhile(service: &Service, redis: &RedisServer, what: &str) {
    let mut slowest = Duration::ZERO;
    for n in 0..5 {
        let (status, took) = probe_health(service);
        assert_eq!(status, 200, "{what}: probe {n} got {status}");
        assert!(
            took < Duration::from_millis(200),
            "{what}: probe {n} took {took:?} (load: {})",
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
        );
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{what}: /health answered new connections within {slowest:?}");
    let receiver = Receiver::ok();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let created = agent
        .post(&format!("http://127.0.0.1:{}/webhooks", service.port))
        .header("Content-Type", "application/json")
        .send(json!({"url": receiver.url("/hook"), "events": ["complete_job"]}).to_string())
        .map(|r| r.status().as_u16());
    assert!(
        matches!(created, Ok(201)),
        "{what}: creating a webhook: {created:?}"
    );
    // Events until one is delivered: the new webhook reaches intake within a registry reload.
    let delivered = try_wait_until(Duration::from_secs(10), || {
        let job = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            .to_string();
        redis.publish(
            "complete_job",
            &json!({"job_id": job, "timestamp": 1}).to_string(),
        );
        std::thread::sleep(Duration::from_millis(100));
        (!receiver.requests().is_empty()).then_some(())
    });
    assert!(delivered.is_some(), "{what}: no delivery during the attack");
}
