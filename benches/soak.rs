//! Soak: 100,000 deliveries through stream intake, with an endpoint that fails 2 s of every 10 s
//! and a Redis restart (append-only file, fsync always) in the middle. Reports lost deliveries
//! (must be zero) and duplicates. Loopback only; bounded by count and by time.
//!
//! Run: `cargo bench --bench soak` (a few minutes). `SOAK_EVENTS` changes the count.

#![allow(clippy::print_stdout, missing_docs, unreachable_pub)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::receiver::{Receiver, Reply};
use support::redis::RedisServer;
use support::service::Service;

/// The whole soak must end within this.
const LIMIT: Duration = Duration::from_secs(600);

fn main() {
    let n: usize = std::env::var("SOAK_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut redis = RedisServer::start_persistent();
    let service = Service::start(
        &redis,
        &[
            ("WEBHOOK_EVENT_STREAM", "soak"),
            ("RUST_LOG", "warn"),
            ("WEBHOOK_DELIVERY_THREADS", "8"),
        ],
    );
    let flapping = Arc::new(AtomicBool::new(false));
    let down = flapping.clone();
    // Successful receipts per event id: a duplicate is a second 2xx for the same event.
    let accepted: Arc<Mutex<HashMap<String, u32>>> = Arc::new(Mutex::new(HashMap::new()));
    let tally = accepted.clone();
    let receiver = Receiver::start(move |request, _| {
        if down.load(Ordering::Relaxed) {
            return Reply::status(503);
        }
        if let (Some(id), Ok(mut tally)) = (request.header("x-event-id"), tally.lock()) {
            *tally.entry(id.to_string()).or_insert(0) += 1;
        }
        Reply::ok()
    });
    let hook = serde_json::json!({
        "id": "wh_1_soak",
        "url": receiver.url("/soak"),
        "events": ["complete_job"],
        "active": true,
        "retry_config": {"max_attempts": 50, "initial_delay_ms": 100, "backoff_multiplier": 2, "max_delay_ms": 2000},
    });
    let _: () = ::redis::cmd("HSET")
        .arg("webhooks:registry")
        .arg("wh_1_soak")
        .arg(hook.to_string())
        .query(&mut redis.conn())
        .unwrap_or(());
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    // The flapping endpoint: down 2 s of every 10 s.
    let flap = flapping.clone();
    let stop_flapping = Arc::new(AtomicBool::new(false));
    let stop = stop_flapping.clone();
    let flapper = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(8));
            flap.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(2));
            flap.store(false, Ordering::Relaxed);
        }
    });

    // Produce, restarting Redis once, 40% of the way; a producer retries until its XADD lands.
    let mut restarted = false;
    let mut i = 0;
    while i < n && started.elapsed() < LIMIT {
        if !restarted && i == n * 2 / 5 {
            println!("restarting Redis after {i} events");
            redis.restart();
            restarted = true;
        }
        let end = (i + 500).min(n);
        let mut pipe = ::redis::pipe();
        for j in i..end {
            let message = format!(
                r#"{{"job_id":"soak-{j}","timestamp":{}}}"#,
                1_700_000_000_000u64 + j as u64
            );
            pipe.cmd("XADD")
                .arg("soak")
                .arg("*")
                .arg("channel")
                .arg("complete_job")
                .arg("message")
                .arg(message)
                .ignore();
        }
        let sent = ::redis::Client::open(redis.url().as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| pipe.query::<()>(&mut c));
        match sent {
            Ok(()) => i = end,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    println!("produced {i} events in {:?}", started.elapsed());

    let delivered = || -> (usize, u32) {
        let tally = accepted.lock().map(|t| t.clone()).unwrap_or_default();
        (tally.len(), tally.values().map(|n| n - 1).sum())
    };
    let mut last = 0;
    while started.elapsed() < LIMIT {
        let (distinct, _) = delivered();
        if distinct >= n {
            break;
        }
        if distinct / 10_000 != last / 10_000 {
            println!("{distinct} delivered after {:?}", started.elapsed());
        }
        last = distinct;
        std::thread::sleep(Duration::from_millis(500));
    }
    stop_flapping.store(true, Ordering::Relaxed);
    let _ = flapper.join();
    let (distinct, duplicates) = delivered();
    let lost = n.saturating_sub(distinct);
    println!(
        "soak: {n} events, {distinct} delivered, {lost} lost, {duplicates} duplicates (second 2xx for an event), {} requests, in {:?}",
        receiver.requests().len(),
        started.elapsed()
    );
    drop(service);
    if lost > 0 {
        std::process::exit(1);
    }
}
