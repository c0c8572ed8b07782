//! End-to-end benchmark: Redis pub/sub in, webhooks out, measured against this design's ceiling.
//!
//! Starts its own redis-server, the release binary and a fast keep-alive receiver on loopback,
//! then runs: throughput (50,000 `complete_job` events to 1 webhook), fan-out (1,000 events to 100
//! webhooks at one endpoint, then at 100 endpoints: one origin each), latency (1,000 events/s for 10 s), and the ceiling (the same receiver driven by plain
//! ureq threads). It prints deliveries/s, the ratio to the ceiling, latency percentiles, CPU
//! seconds per 10,000 deliveries, RSS and start-up time. Then isolation (issue #11), each workload
//! on a fresh redis-server and service: a healthy webhook's latency at 200 events/s for 10 s
//! beside 0, 1, 2, 8 and 64 endpoints that never answer and 8 that answer after 4 s, and the
//! fan-out throughput of 90 healthy webhooks alone and beside 10 that never answer.
//!
//! Run: `cargo bench --bench e2e`; only the throughput part: `E2E_ONLY=throughput`; only the
//! isolation part: `E2E_ONLY=isolation`; all but the isolation part: `E2E_ONLY=main`.

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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::redis::RedisServer;
use support::service::Service;

/// How a [`FastReceiver`] answers.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// 200 at once.
    Ok,
    /// Reads the request and never answers.
    Hang,
    /// 200 after this long.
    Slow(Duration),
}

/// A minimal keep-alive HTTP/1.1 receiver: records when each job (`"job_id":"e2e-<n>"`) arrived.
struct FastReceiver {
    /// Every port it listens on: one origin each.
    ports: Vec<u16>,
    arrivals: Arc<Vec<AtomicU64>>,
    count: Arc<AtomicUsize>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
}

impl FastReceiver {
    fn start(slots: usize, mode: Mode) -> FastReceiver {
        FastReceiver::start_on(1, slots, mode)
    }

    /// One receiver listening on `listeners` ports of 127.0.0.1 (as many origins), counting
    /// what arrives on all of them together.
    fn start_on(listeners: usize, slots: usize, mode: Mode) -> FastReceiver {
        let arrivals: Arc<Vec<AtomicU64>> =
            Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect());
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let mut ports = Vec::new();
        for _ in 0..listeners.max(1) {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            ports.push(listener.local_addr().unwrap().port());
            let (a, c, s) = (arrivals.clone(), count.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    let (a, c, s) = (a.clone(), c.clone(), s.clone());
                    std::thread::spawn(move || serve(stream, a, c, epoch, mode, s));
                }
            });
        }
        FastReceiver {
            ports,
            arrivals,
            count,
            epoch,
            stop,
        }
    }

    fn url(&self) -> String {
        self.url_at(0)
    }

    /// The URL of its `i`-th port.
    fn url_at(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}/in", self.ports[i % self.ports.len()])
    }
}

impl Drop for FastReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for port in &self.ports {
            let _ = TcpStream::connect(("127.0.0.1", *port));
        }
    }
}

fn serve(
    stream: TcpStream,
    arrivals: Arc<Vec<AtomicU64>>,
    count: Arc<AtomicUsize>,
    epoch: Instant,
    mode: Mode,
    stop: Arc<AtomicBool>,
) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        let mut length = 0usize;
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line
                .get(..15)
                .filter(|p| p.eq_ignore_ascii_case("content-length:"))
            {
                let _ = v;
                length = line[15..].trim().parse().unwrap_or(0);
            }
        }
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        match mode {
            Mode::Ok => {}
            Mode::Hang => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Mode::Slow(pause) => std::thread::sleep(pause),
        }
        let at = epoch.elapsed().as_nanos() as u64;
        if let Some(i) = find_job(&body) {
            if let Some(slot) = arrivals.get(i) {
                let _ = slot.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
            }
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

fn find_job(body: &[u8]) -> Option<usize> {
    let needle = b"\"job_id\":\"e2e-";
    let at = body.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let digits: String = body[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|b| char::from(*b))
        .collect();
    digits.parse().ok()
}

/// CPU seconds used, resident memory now and at its peak (KiB).
fn proc_stat(pid: u32) -> (f64, u64, u64) {
    let (rss, peak) = support::memory_kb(pid);
    (support::cpu_seconds(pid), rss, peak)
}

fn register(redis: &RedisServer, id: &str, url: &str) {
    let hook = serde_json::json!({"id": id, "url": url, "events": ["complete_job"], "active": true,
        "retry_config": {"max_attempts": 3, "initial_delay_ms": 1000, "backoff_multiplier": 2, "max_delay_ms": 30000}});
    let _: () = ::redis::cmd("HSET")
        .arg("webhooks:registry")
        .arg(id)
        .arg(hook.to_string())
        .query(&mut redis.conn())
        .unwrap();
    let _: () = ::redis::cmd("PUBLISH")
        .arg("webhooks:changed")
        .arg(id)
        .query(&mut redis.conn())
        .unwrap();
}

/// Deletes these webhooks and tells the service.
fn unregister(conn: &mut ::redis::Connection, ids: impl Iterator<Item = String>) {
    for id in ids {
        let _: () = ::redis::cmd("HDEL")
            .arg("webhooks:registry")
            .arg(id)
            .query(conn)
            .unwrap();
    }
    let _: () = ::redis::cmd("PUBLISH")
        .arg("webhooks:changed")
        .arg("x")
        .query(conn)
        .unwrap();
}

fn wait_loaded(service: &Service, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if service.health()["processor"]["total_webhooks"].as_u64() == Some(n) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("webhooks did not load");
}

fn publish_batch(conn: &mut ::redis::Connection, from: usize, to: usize) {
    let mut pipe = ::redis::pipe();
    for i in from..to {
        pipe.cmd("PUBLISH")
            .arg("complete_job")
            .arg(format!(
                r#"{{"job_id":"e2e-{i}","worker_id":"w1","result":{{"ok":true}},"timestamp":{}}}"#,
                1_700_000_000_000u64 + i as u64
            ))
            .ignore();
    }
    pipe.query::<()>(conn).unwrap();
}

/// Nanoseconds a thread (`/proc/<pid>/task/<tid>`) has run, from its schedstat.
fn cpu_ns(task: &std::path::Path) -> f64 {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// What a group of threads has used so far: CPU seconds and context switches.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    cpu: f64,
    switches: f64,
}

/// Usage so far of each group of a process's threads (`delivery-3` counts as `delivery`).
fn thread_usage(pid: u32) -> std::collections::BTreeMap<String, Usage> {
    let mut groups = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let name = name
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let switches: f64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .sum();
        let group: &mut Usage = groups.entry(name.to_string()).or_default();
        group.cpu += cpu_ns(&task.path()) / 1e9;
        group.switches += switches;
    }
    groups
}

/// Prints the service's CPU by thread group; returns microseconds per delivery by group.
fn print_thread_cpu(
    before: &std::collections::BTreeMap<String, Usage>,
    after: &std::collections::BTreeMap<String, Usage>,
    deliveries: usize,
) -> std::collections::BTreeMap<String, f64> {
    let per = deliveries.max(1) as f64;
    let mut rows: Vec<(&String, Usage)> = after
        .iter()
        .map(|(name, now)| {
            let was = before.get(name).copied().unwrap_or_default();
            let used = Usage {
                cpu: now.cpu - was.cpu,
                switches: now.switches - was.switches,
            };
            (name, used)
        })
        .filter(|(_, used)| used.cpu > 0.0)
        .collect();
    rows.sort_by(|a, b| b.1.cpu.total_cmp(&a.1.cpu));
    let total: f64 = rows.iter().map(|r| r.1.cpu).sum();
    println!("service CPU by thread (us per delivery, share, context switches per delivery):");
    let mut per_delivery = std::collections::BTreeMap::new();
    for (name, used) in rows {
        per_delivery.insert(name.clone(), used.cpu * 1e6 / per);
        println!(
            "  {name:<18} {:>6.1} {:>4.0}% {:>6.2}",
            used.cpu * 1e6 / per,
            100.0 * used.cpu / total.max(f64::MIN_POSITIVE),
            used.switches / per
        );
    }
    per_delivery
}

/// CPU seconds used so far by all of a process's threads.
fn total_cpu(pid: u32) -> f64 {
    thread_usage(pid).values().map(|u| u.cpu).sum()
}

/// What Redis did for the run, per delivery: the commands by time spent (the publishes are the
/// benchmark's own). Returns the share of command time spent on durable delivery state (the
/// claim-and-record script, and forgetting or re-scheduling deliveries), counting commands run
/// inside scripts once, with their script.
fn print_redis_work(conn: &mut ::redis::Connection, deliveries: usize) -> f64 {
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .unwrap();
    let mut rows: Vec<(String, u64, u64)> = info
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((name.to_string(), field("calls=")?, field("usec=")?))
        })
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.2));
    let total: u64 = rows.iter().map(|row| row.2).sum();
    let per = deliveries.max(1) as f64;
    println!(
        "redis: {:.1} us of command time per delivery; by command (calls per delivery, us per delivery):",
        total as f64 / per
    );
    for (name, calls, usec) in rows.iter().take(20) {
        println!(
            "  {name:<14} {:>6.2} {:>7.2}",
            *calls as f64 / per,
            *usec as f64 / per
        );
    }
    let usec = |names: &[&str]| -> f64 {
        rows.iter()
            .filter(|row| names.contains(&row.0.as_str()))
            .map(|row| row.2 as f64)
            .sum()
    };
    // `set` (claims) and `sadd` (leases) run only inside the record script here.
    let counted = total as f64 - usec(&["set", "sadd"]);
    let durable = usec(&[
        "evalsha",
        "hdel",
        "srem",
        "zadd",
        "zrem",
        "zrangebyscore",
        "hget",
    ]);
    durable / counted.max(1.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Requests per second, and the client's CPU microseconds per request.
fn ceiling(url: &str, threads: usize, per_thread: usize) -> (f64, f64) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_idle_connections_per_host(threads)
        .build()
        .into();
    let body = br#"{"event_type":"complete_job","event_id":"wh_1700000000000_abcdefghi","timestamp":1700000000000,"webhook_id":"wh_1_e2e","data":{"job_id":"x","worker_id":"w1","result":{"ok":true},"completed_at":1700000000000}}"#;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let agent = agent.clone();
            let url = url.to_string();
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    let _ = agent
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .send(&body[..]);
                }
                cpu_ns(std::path::Path::new("/proc/thread-self"))
            })
        })
        .collect();
    let cpu: f64 = handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum();
    let n = (threads * per_thread) as f64;
    (n / started.elapsed().as_secs_f64(), cpu / 1e3 / n)
}

fn latency_run(
    redis: &RedisServer,
    receiver: &FastReceiver,
    offset: usize,
    rate: usize,
    seconds: usize,
) -> Vec<f64> {
    let mut conn = redis.conn();
    let n = rate * seconds;
    let mut sent_at = vec![0u64; n];
    let started = Instant::now();
    for (k, slot) in sent_at.iter_mut().enumerate() {
        let due = Duration::from_secs_f64(k as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        *slot = receiver.epoch.elapsed().as_nanos() as u64;
        publish_batch(&mut conn, offset + k, offset + k + 1);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && (offset..offset + n).any(|i| receiver.arrivals[i].load(Ordering::Relaxed) == 0)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut ms: Vec<f64> = (0..n)
        .filter_map(|k| {
            let at = receiver.arrivals[offset + k].load(Ordering::Relaxed);
            (at > 0).then(|| (at.saturating_sub(sent_at[k])) as f64 / 1e6)
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    ms
}

fn main() {
    let total_slots = 200_000;
    let redis = RedisServer::start();
    let threads = std::env::var("E2E_DELIVERY_THREADS").unwrap_or_else(|_| "8".into());
    if std::env::var("E2E_ONLY").is_ok_and(|v| v == "isolation") {
        isolation(&threads);
        return;
    }
    let receiver = FastReceiver::start(total_slots, Mode::Ok);
    let exec = Instant::now();
    let mut service = Service::start(
        &redis,
        &[
            ("RUST_LOG", "warn"),
            ("WEBHOOK_REGISTRY_REFRESH_MS", "600000"),
            ("WEBHOOK_DELIVERY_THREADS", &threads),
        ],
    );
    let ready = exec.elapsed();
    let pid = service.pid().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (_, idle_rss, _) = proc_stat(pid);
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_webhook-service"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "machine: {} cores; binary {:.1} MB; idle RSS {:.1} MB; exec to /health ready {:?} (includes process spawn and polling)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        binary as f64 / 1e6,
        idle_rss as f64 / 1024.0,
        ready
    );

    // Ceiling: the same receiver, plain ureq threads, no Redis, no service.
    let mut best = 0.0f64;
    let thread_counts: &[usize] = if std::env::var("E2E_ONLY").is_ok() {
        &[4]
    } else {
        &[2, 4, 8]
    };
    for &threads in thread_counts {
        let (rate, client_us) = ceiling(&receiver.url(), threads, 50_000 / threads);
        println!(
            "ceiling: ureq loop with {threads} threads: {rate:.0} requests/s; client CPU {client_us:.1} us per request"
        );
        best = best.max(rate);
    }

    // Throughput: 50,000 events to one webhook.
    register(&redis, "wh_1_e2e", &receiver.url());
    wait_loaded(&service, 1);
    let n = 50_000;
    let before = receiver.count.load(Ordering::Relaxed);
    let (cpu0, _, _) = proc_stat(pid);
    let threads0 = thread_usage(pid);
    let mut conn = redis.conn();
    let redis_pid = redis.pid();
    let redis_cpu0 = total_cpu(redis_pid);
    let _: () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    let started = Instant::now();
    for from in (0..n).step_by(1000) {
        publish_batch(&mut conn, from, (from + 1000).min(n));
    }
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while receiver.count.load(Ordering::Relaxed) - before < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    let delivered = receiver.count.load(Ordering::Relaxed) - before;
    let (cpu1, _, peak) = proc_stat(pid);
    let rate = delivered as f64 / took.as_secs_f64();
    println!("service counters: {}", service.health()["deliveries"]);
    println!(
        "throughput: {delivered} of {n} delivered in {took:?} (published in {published:?}): {rate:.0} deliveries/s, {:.0}% of the ceiling; CPU {:.2} s per 10k deliveries; peak RSS {:.1} MB",
        100.0 * rate / best,
        (cpu1 - cpu0) * 10_000.0 / delivered.max(1) as f64,
        peak as f64 / 1024.0
    );

    let by_thread = print_thread_cpu(&threads0, &thread_usage(pid), delivered);
    let redis_cpu = total_cpu(redis_pid) - redis_cpu0;
    println!(
        "redis-server CPU: {:.1} us per delivery (including the benchmark's own publishes)",
        redis_cpu * 1e6 / delivered.max(1) as f64
    );
    let redis_durable_share = print_redis_work(&mut conn, delivered);
    let service_us: f64 = by_thread.values().sum();
    let service_durable_us: f64 = ["intake-record", "delivery-comple", "delivery-poller"]
        .iter()
        .filter_map(|name| by_thread.get(*name))
        .sum();
    let redis_us = redis_cpu * 1e6 / delivered.max(1) as f64;
    let durable_us = service_durable_us + redis_us * redis_durable_share;
    println!(
        "durable delivery state: {durable_us:.1} us of the {:.1} us the service and Redis spend per delivery ({:.0}%): {service_durable_us:.1} us in the record, completer and poller threads, {:.1} us of Redis",
        service_us + redis_us,
        100.0 * durable_us / (service_us + redis_us).max(f64::MIN_POSITIVE),
        redis_us * redis_durable_share
    );

    if std::env::var("E2E_ONLY").is_ok_and(|v| v == "throughput") {
        return;
    }
    // Fan-out: 1,000 events to 100 webhooks.
    for i in 2..=100 {
        register(&redis, &format!("wh_{i}_e2e"), &receiver.url());
    }
    wait_loaded(&service, 100);
    let before = receiver.count.load(Ordering::Relaxed);
    let started = Instant::now();
    publish_batch(&mut conn, 60_000, 61_000);
    let deadline = Instant::now() + Duration::from_secs(300);
    while receiver.count.load(Ordering::Relaxed) - before < 100_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    let delivered = receiver.count.load(Ordering::Relaxed) - before;
    let (_, _, peak) = proc_stat(pid);
    println!("service counters: {}", service.health()["deliveries"]);
    println!(
        "fan-out: {delivered} of 100000 deliveries (1,000 events x 100 webhooks) in {took:?}: {:.0} deliveries/s; peak RSS so far {:.1} MB",
        delivered as f64 / took.as_secs_f64(),
        peak as f64 / 1024.0
    );
    unregister(&mut conn, (2..=100).map(|i| format!("wh_{i}_e2e")));
    wait_loaded(&service, 1);

    // Fan-out to 100 endpoints: the same, each webhook at an origin of its own (a port of one
    // receiver), as webhooks of different customers are.
    let spread = FastReceiver::start_on(100, 0, Mode::Ok);
    for i in 2..=101 {
        register(&redis, &format!("wh_{i}_spread"), &spread.url_at(i));
    }
    wait_loaded(&service, 101);
    let started = Instant::now();
    publish_batch(&mut conn, 62_000, 63_000);
    let deadline = Instant::now() + Duration::from_secs(300);
    while spread.count.load(Ordering::Relaxed) < 100_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    let delivered = spread.count.load(Ordering::Relaxed);
    println!("service counters: {}", service.health()["deliveries"]);
    println!(
        "fan-out to 100 endpoints: {delivered} of 100000 deliveries (1,000 events x 100 webhooks, one origin each) in {took:?}: {:.0} deliveries/s",
        delivered as f64 / took.as_secs_f64(),
    );
    unregister(&mut conn, (2..=101).map(|i| format!("wh_{i}_spread")));
    wait_loaded(&service, 1);

    // Latency: 1,000 events/s for 10 s.
    let ms = latency_run(&redis, &receiver, 70_000, 1000, 10);
    println!(
        "latency at 1000 ev/s for 10 s: {} delivered, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms; peak RSS so far {:.1} MB",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        percentile(&ms, 0.999),
        proc_stat(pid).2 as f64 / 1024.0
    );

    let (_, _, peak) = proc_stat(pid);
    println!(
        "peak RSS over the whole run: {:.1} MB",
        peak as f64 / 1024.0
    );

    // 100,000 scheduled retries: every first attempt fails, the retries wait an hour. A fresh
    // process, so the figure is not the earlier runs' high-water mark, started after a graceful
    // stop: after a SIGKILL the new process would see the old one's heartbeat until it expires
    // and leave it half the pub/sub events for their 2 s grace (see intake::share), which is a
    // figure of its own (crash recovery), not of retries.
    let _: () = ::redis::cmd("DEL")
        .arg("webhooks:registry")
        .query(&mut conn)
        .unwrap();
    service.terminate(Duration::from_secs(30));
    service.restart();
    let pid = service.pid().unwrap();
    let failing = support::receiver::Receiver::start(|_, _| support::receiver::Reply::status(500));
    let hook = serde_json::json!({"id": "wh_9_retry", "url": failing.url("/f"), "events": ["complete_job"], "active": true,
        "retry_config": {"max_attempts": 5, "initial_delay_ms": 3_600_000, "backoff_multiplier": 2, "max_delay_ms": 7_200_000}});
    let _: () = ::redis::cmd("HSET")
        .arg("webhooks:registry")
        .arg("wh_9_retry")
        .arg(hook.to_string())
        .query(&mut conn)
        .unwrap();
    let _: () = ::redis::cmd("PUBLISH")
        .arg("webhooks:changed")
        .arg("wh_9_retry")
        .query(&mut conn)
        .unwrap();
    wait_loaded(&service, 1);
    for from in (200_000..300_000).step_by(1000) {
        publish_batch(&mut conn, from, from + 1000);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut scheduled = 0u64;
    while Instant::now() < deadline {
        scheduled = ::redis::cmd("ZCARD")
            .arg("webhooks:due")
            .query(&mut conn)
            .unwrap_or(0);
        if scheduled >= 100_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (_, rss, _) = proc_stat(pid);
    println!(
        "{scheduled} retries scheduled (kept in Redis, not in memory): RSS {:.1} MB",
        rss as f64 / 1024.0
    );
    service.kill();
    drop(redis);

    if std::env::var("E2E_ONLY").is_err() {
        isolation(&threads);
    }
}

/// Events per second and seconds of the isolation latency runs.
const ISOLATION_RATE: usize = 200;
const ISOLATION_SECONDS: usize = 10;

/// Isolation (issue #11): a healthy webhook's latency beside bad endpoints, and fan-out
/// throughput beside endpoints that never answer.
fn isolation(threads: &str) {
    println!(
        "isolation: a healthy webhook's latency (publish to receipt) at {ISOLATION_RATE} events/s for {ISOLATION_SECONDS} s, beside K endpoints receiving the same events (each run on a fresh redis-server and service; the healthy webhook has answered 500 events first, the bad ones are new)"
    );
    println!(
        "  {:<22} {:>9} {:>9} {:>9} {:>10} {:>14}  target: p99 moves by at most 10% or 1 ms",
        "beside", "p50 ms", "p99 ms", "p999 ms", "delivered", "CPU s svc/redis"
    );
    let workloads = [
        ("nothing", 0, Mode::Ok),
        ("1 never answering", 1, Mode::Hang),
        ("2 never answering", 2, Mode::Hang),
        ("8 never answering", 8, Mode::Hang),
        ("64 never answering", 64, Mode::Hang),
        (
            "8 answering after 4 s",
            8,
            Mode::Slow(Duration::from_secs(4)),
        ),
    ];
    let mut alone_p99 = None;
    for (name, k, mode) in workloads {
        let (ms, cpu) = isolation_run(k, mode, threads);
        let p99 = percentile(&ms, 0.99);
        let verdict = match alone_p99 {
            None => {
                alone_p99 = Some(p99);
                String::new()
            }
            Some(alone) => {
                let allowed = (alone * 0.1).max(1.0);
                let moved = p99 - alone;
                format!(
                    "  p99 {moved:+.2} ms: {}",
                    if moved <= allowed { "within" } else { "OVER" }
                )
            }
        };
        println!(
            "  {name:<22} {:>9.2} {p99:>9.2} {:>9.2} {:>10} {:>14}{verdict}",
            percentile(&ms, 0.5),
            percentile(&ms, 0.999),
            ms.len(),
            format!("{:.2}/{:.2}", cpu.0, cpu.1)
        );
    }
    let alone = fan_out_beside_hung(0, threads);
    let beside = fan_out_beside_hung(10, threads);
    println!(
        "isolation fan-out: 1,000 events to 90 healthy webhooks: {alone:.0} healthy deliveries/s alone, {beside:.0} beside 10 webhooks that never answer ({:.0}%; target at least 90%)",
        100.0 * beside / alone
    );
}

/// The healthy latencies (ms) of one isolation workload, `k` endpoints answering as `mode` beside
/// one healthy webhook, and the CPU seconds the service and Redis used in the measured run.
fn isolation_run(k: usize, mode: Mode, threads: &str) -> (Vec<f64>, (f64, f64)) {
    let redis = RedisServer::start();
    let n = ISOLATION_RATE * ISOLATION_SECONDS;
    let healthy = FastReceiver::start(1000 + n, Mode::Ok);
    let service = Service::start(
        &redis,
        &[
            ("RUST_LOG", "warn"),
            ("WEBHOOK_REGISTRY_REFRESH_MS", "600000"),
            ("WEBHOOK_DELIVERY_THREADS", threads),
        ],
    );
    register(&redis, "wh_9_healthy", &healthy.url());
    wait_loaded(&service, 1);
    // Warm-up: the healthy endpoint is known to answer quickly, as in production.
    latency_run(&redis, &healthy, 0, 1000, 1);
    let bad: Vec<FastReceiver> = (0..k).map(|_| FastReceiver::start(0, mode)).collect();
    for (i, receiver) in bad.iter().enumerate() {
        register(&redis, &format!("wh_1_bad{i:02}"), &receiver.url());
    }
    wait_loaded(&service, 1 + k as u64);
    let pid = service.pid().unwrap();
    let redis_pid = redis.pid();
    let cpu0 = (total_cpu(pid), total_cpu(redis_pid));
    let ms = latency_run(&redis, &healthy, 1000, ISOLATION_RATE, ISOLATION_SECONDS);
    let cpu = (total_cpu(pid) - cpu0.0, total_cpu(redis_pid) - cpu0.1);
    drop(service);
    (ms, cpu)
}

/// Healthy deliveries per second when 1,000 events fan out to 90 healthy webhooks and `hung`
/// webhooks whose endpoints never answer (their ids sort first: their deliveries are queued
/// first).
fn fan_out_beside_hung(hung: usize, threads: &str) -> f64 {
    let redis = RedisServer::start();
    let receiver = FastReceiver::start(0, Mode::Ok);
    let service = Service::start(
        &redis,
        &[
            ("RUST_LOG", "warn"),
            ("WEBHOOK_REGISTRY_REFRESH_MS", "600000"),
            ("WEBHOOK_DELIVERY_THREADS", threads),
        ],
    );
    let bad: Vec<FastReceiver> = (0..hung)
        .map(|_| FastReceiver::start(0, Mode::Hang))
        .collect();
    for (i, receiver) in bad.iter().enumerate() {
        register(&redis, &format!("wh_0_hung{i:02}"), &receiver.url());
    }
    for i in 0..90 {
        register(&redis, &format!("wh_5_fan{i:02}"), &receiver.url());
    }
    wait_loaded(&service, 90 + hung as u64);
    let mut conn = redis.conn();
    let started = Instant::now();
    publish_batch(&mut conn, 0, 1000);
    let deadline = Instant::now() + Duration::from_secs(120);
    while receiver.count.load(Ordering::Relaxed) < 90_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let rate = receiver.count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    drop(service);
    rate
}
