//! API benchmark: requests per second over kept-alive connections and over a new connection per
//! request, and the service's memory with 1,000 idle connections.
//!
//! Starts its own redis-server and the release binary. Clients are plain sockets writing
//! requests by hand (so the figures are the server's, not a client library's), one thread each,
//! one request at a time per connection. Two requests: `GET /health` (what a liveness probe asks;
//! two Redis round trips) and `POST /webhook-monitor/<session>` with a small JSON body (a capture:
//! no Redis). Each figure is the median of three runs.
//!
//! Run: `cargo bench --bench api`.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::redis::RedisServer;
use support::service::Service;

/// How long one run of a rate lasts.
const RUN: Duration = Duration::from_secs(2);
/// Runs per figure (the median is printed).
const RUNS: usize = 3;

fn request(path: &str, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    if path.starts_with("/webhook-monitor/") {
        let body = r#"{"event_type":"job.completed","data":{"job_id":"bench"}}"#;
        format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{connection}\r\n{body}",
            body.len()
        )
        .into_bytes()
    } else {
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{connection}\r\n").into_bytes()
    }
}

/// Reads one response off a kept-alive connection; `false` if it is not a 200.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let mut chunk = [0u8; 16384];
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let ok = head.starts_with("http/1.1 200");
            buf.drain(..end + 4 + length);
            return ok;
        }
        let mut chunk = [0u8; 16384];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Requests per second (all clients together), and the failures.
fn rate(port: u16, path: &str, clients: usize, keep_alive: bool) -> (f64, usize) {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let path = path.replace("{c}", &c.to_string());
            std::thread::spawn(move || {
                let request = request(&path, keep_alive);
                let started = Instant::now();
                let (mut done, mut failed) = (0usize, 0usize);
                let mut kept: Option<TcpStream> = None;
                let mut buf = Vec::new();
                while started.elapsed() < RUN {
                    if keep_alive {
                        let stream = kept.get_or_insert_with(|| {
                            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                            s.set_nodelay(true).unwrap();
                            s
                        });
                        if stream.write_all(&request).is_ok() && read_response(stream, &mut buf) {
                            done += 1;
                        } else {
                            failed += 1;
                            kept = None;
                            buf.clear();
                        }
                    } else {
                        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                            failed += 1;
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let mut reply = Vec::new();
                        let ok = stream.write_all(&request).is_ok()
                            && stream.read_to_end(&mut reply).is_ok()
                            && reply.starts_with(b"HTTP/1.1 200");
                        if ok {
                            done += 1;
                        } else {
                            failed += 1;
                        }
                    }
                }
                (done, failed, started.elapsed())
            })
        })
        .collect();
    let mut total = 0.0;
    let mut failures = 0;
    for t in threads {
        let (done, failed, took) = t.join().unwrap();
        total += done as f64 / took.as_secs_f64();
        failures += failed;
    }
    (total, failures)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// The service's RSS after `n` idle connections have been open for a second.
fn rss_with_idle(service: &Service, n: usize) -> (u64, u64, u64) {
    let idle: Vec<TcpStream> = (0..n)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", service.port)).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let rss = service.rss_bytes().unwrap_or(0);
    let threads = service.threads().unwrap_or(0);
    let opened = idle.len() as u64;
    drop(idle);
    std::thread::sleep(Duration::from_millis(500));
    (rss, threads, opened)
}

fn main() {
    support::fds::ensure(4096);
    let redis = RedisServer::start();
    let quiet = [("RUST_LOG", "warn")];
    let service = Service::start(&redis, &quiet);
    println!(
        "API requests per second (median of {RUNS} runs of {RUN:?}; one request in flight per client):"
    );
    println!("| request | clients | kept-alive connection | new connection per request |");
    println!("|---|---|---|---|");
    let requests = [
        ("GET /health", "/health"),
        (
            "POST /webhook-monitor/:session (56 B JSON)",
            "/webhook-monitor/bench_{c}",
        ),
    ];
    for (name, path) in requests {
        for clients in [1, 4] {
            let mut figures = Vec::new();
            for keep_alive in [true, false] {
                let mut rates = Vec::new();
                let mut failures = 0;
                for _ in 0..RUNS {
                    let (rate, failed) = rate(service.port, path, clients, keep_alive);
                    rates.push(rate);
                    failures += failed;
                }
                let note = if failures > 0 {
                    format!(" ({failures} failed)")
                } else {
                    String::new()
                };
                figures.push(format!("{:.0}/s{note}", median(rates)));
            }
            println!("| {name} | {clients} | {} | {} |", figures[0], figures[1]);
        }
    }
    let idle = service.rss_bytes().unwrap_or(0);
    let (rss, threads, opened) = rss_with_idle(&service, 1000);
    println!();
    println!("RSS idle: {:.1} MB", mb(idle));
    println!(
        "RSS with {opened} idle connections (default limit, 256 kept, the rest evicted): {:.1} MB, {threads} threads",
        mb(rss)
    );
    drop(service);
    let all = [
        ("RUST_LOG", "warn"),
        ("WEBHOOK_API_MAX_CONNECTIONS", "1024"),
    ];
    let service = Service::start(&redis, &all);
    let idle = service.rss_bytes().unwrap_or(0);
    let (rss, threads, opened) = rss_with_idle(&service, 1000);
    println!(
        "RSS with {opened} idle connections, all kept (WEBHOOK_API_MAX_CONNECTIONS=1024): {:.1} MB from {:.1} MB idle, {threads} threads",
        mb(rss),
        mb(idle)
    );
}
