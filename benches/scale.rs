//! Scale-out benchmark: 1, 2 and 3 instances of the release binary on one Redis.
//!
//! For each count it starts a fresh redis-server and that many instances, then sends bursts
//! through pub/sub and through a stream to one webhook on a keep-alive loopback receiver, and
//! prints deliveries/s, how the deliveries split between the instances, and the CPU each
//! delivery costs in the instances and in Redis (Redis' own ceiling is one core divided by the
//! latter). A second run has the receiver take 5 ms per request, where one instance is held by
//! its delivery threads rather than by CPU, to show what more instances buy there.
//!
//! Run: `cargo bench --bench scale` (`SCALE_EVENTS=<n>` changes the burst size, default 30,000).

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::redis::RedisServer;
use support::service::Service;

/// A keep-alive HTTP/1.1 receiver that counts requests and answers 200 after `delay`.
struct Counter {
    port: u16,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Counter {
    fn start(delay: Duration) -> Counter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let c = c.clone();
                std::thread::spawn(move || serve(stream, &c, delay));
            }
        });
        Counter { port, count, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/in", self.port)
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(stream: TcpStream, count: &AtomicUsize, delay: Duration) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if line.len() > 15 && line[..15].eq_ignore_ascii_case("content-length:") {
                length = line[15..].trim().parse().unwrap_or(0);
            }
        }
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        count.fetch_add(1, Ordering::Relaxed);
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

fn message(i: usize) -> String {
    format!(
        r#"{{"job_id":"scale-{i}","worker_id":"w1","result":{{"ok":true}},"timestamp":{}}}"#,
        1_700_000_000_000u64 + i as u64
    )
}

/// Publishes (or adds to the stream) events `from..from + n`, 1,000 per pipeline.
fn send(redis: &RedisServer, stream: bool, from: usize, n: usize) {
    let mut conn = redis.conn();
    for start in (from..from + n).step_by(1000) {
        let mut pipe = ::redis::pipe();
        for i in start..(start + 1000).min(from + n) {
            if stream {
                pipe.cmd("XADD")
                    .arg("events")
                    .arg("*")
                    .arg("channel")
                    .arg("complete_job")
                    .arg("message")
                    .arg(message(i));
            } else {
                pipe.cmd("PUBLISH").arg("complete_job").arg(message(i));
            }
            pipe.ignore();
        }
        pipe.query::<()>(&mut conn).unwrap();
    }
}

fn succeeded(service: &Service) -> u64 {
    service.health()["deliveries"]["succeeded"]
        .as_u64()
        .unwrap_or(0)
}

/// One measured burst: deliveries/s, each instance's share, and CPU per delivery.
struct Burst {
    rate: f64,
    shares: Vec<f64>,
    service_us: f64,
    redis_us: f64,
}

fn burst(
    redis: &RedisServer,
    services: &[Service],
    receiver: &Counter,
    stream: bool,
    from: usize,
    n: usize,
) -> Burst {
    let pids: Vec<u32> = services.iter().filter_map(Service::pid).collect();
    let redis_pid = redis.pid();
    let before = receiver.count();
    let succeeded0: Vec<u64> = services.iter().map(succeeded).collect();
    let cpu0: f64 = pids.iter().map(|p| support::cpu_seconds(*p)).sum();
    let redis0 = support::cpu_seconds(redis_pid);
    let started = Instant::now();
    send(redis, stream, from, n);
    let deadline = Instant::now() + Duration::from_secs(300);
    while receiver.count() - before < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = started.elapsed();
    let delivered = (receiver.count() - before).max(1);
    let cpu: f64 = pids.iter().map(|p| support::cpu_seconds(*p)).sum::<f64>() - cpu0;
    let redis_cpu = support::cpu_seconds(redis_pid) - redis0;
    // Let the counters settle before reading each instance's share.
    std::thread::sleep(Duration::from_millis(300));
    let shares = services
        .iter()
        .zip(succeeded0)
        .map(|(s, was)| (succeeded(s) - was) as f64 / delivered as f64)
        .collect();
    Burst {
        rate: delivered as f64 / took.as_secs_f64(),
        shares,
        service_us: cpu * 1e6 / delivered as f64,
        redis_us: redis_cpu * 1e6 / delivered as f64,
    }
}

fn start_instances(redis: &RedisServer, count: usize, url: &str) -> Vec<Service> {
    let services: Vec<Service> = (0..count)
        .map(|i| {
            Service::start(
                redis,
                &[
                    ("RUST_LOG", "info"),
                    ("WEBHOOK_INSTANCE_ID", &format!("bench-{i}")),
                    ("WEBHOOK_EVENT_STREAM", "events"),
                    ("WEBHOOK_REGISTRY_REFRESH_MS", "600000"),
                ],
            )
        })
        .collect();
    let hook = serde_json::json!({"id": "wh_1_scale", "url": url, "events": ["complete_job"], "active": true,
        "retry_config": {"max_attempts": 3, "initial_delay_ms": 1000, "backoff_multiplier": 2, "max_delay_ms": 30000}});
    let mut conn = redis.conn();
    let _: () = ::redis::cmd("HSET")
        .arg("webhooks:registry")
        .arg("wh_1_scale")
        .arg(hook.to_string())
        .query(&mut conn)
        .unwrap();
    let _: () = ::redis::cmd("PUBLISH")
        .arg("webhooks:changed")
        .arg("wh_1_scale")
        .query(&mut conn)
        .unwrap();
    let others = format!("shared with {} other live instances", count - 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    for service in &services {
        while !(service.health()["processor"]["total_webhooks"] == 1
            && (count == 1 || service.log_text().contains(&others)))
        {
            assert!(Instant::now() < deadline, "instances did not get ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    services
}

fn run(label: &str, delay: Duration, n: usize) {
    println!("{label}: {n} events per burst to one webhook (receiver delay {delay:?})");
    println!(
        "  {:<9} {:<7} {:>13} {:>24} {:>17} {:>15} {:>16}",
        "instances",
        "intake",
        "deliveries/s",
        "shares",
        "service us/dlv",
        "redis us/dlv",
        "redis ceiling/s"
    );
    for count in 1..=3 {
        let redis = RedisServer::start();
        let receiver = Counter::start(delay);
        let services = start_instances(&redis, count, &receiver.url());
        for (i, stream) in [false, true].into_iter().enumerate() {
            let b = burst(&redis, &services, &receiver, stream, i * n, n);
            let shares: Vec<String> = b
                .shares
                .iter()
                .map(|s| format!("{:.0}%", 100.0 * s))
                .collect();
            println!(
                "  {:<9} {:<7} {:>13.0} {:>24} {:>17.1} {:>15.1} {:>16.0}",
                count,
                if stream { "stream" } else { "pub/sub" },
                b.rate,
                shares.join("/"),
                b.service_us,
                b.redis_us,
                1e6 / b.redis_us.max(f64::MIN_POSITIVE)
            );
        }
    }
}

fn main() {
    let n: usize = std::env::var("SCALE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(0),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    run("fast endpoint", Duration::ZERO, n);
    run("5 ms endpoint", Duration::from_millis(5), n / 5);
}
