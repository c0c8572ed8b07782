//! Scale-out: three instances on one Redis share pub/sub and stream events, each delivered once,
//! and lose nothing when one of them is killed with SIGKILL mid-burst.

use std::time::Duration;

use serde_json::json;

use crate::support::receiver::{Receiver, Reply};
use crate::support::redis::RedisServer;
use crate::support::service::Service;
use crate::support::wait_until;
use crate::{register, webhook};

use super::{LONG, job, jobs_received, missing};

/// Publishes `n` pub/sub events and adds `n` stream entries, pipelined as a busy producer would.
fn burst(redis: &RedisServer, prefix: &str, n: usize) {
    let mut conn = redis.conn();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut pipe = ::redis::pipe();
        for i in chunk {
            pipe.cmd("PUBLISH")
                .arg("complete_job")
                .arg(job(&format!("{prefix}-p"), *i))
                .ignore();
            pipe.cmd("XADD")
                .arg("events")
                .arg("*")
                .arg("channel")
                .arg("complete_job")
                .arg("message")
                .arg(job(&format!("{prefix}-s"), *i))
                .ignore();
        }
        pipe.query::<()>(&mut conn)
            .unwrap_or_else(|e| panic!("publishing the burst: {e}"));
    }
}

/// Ids of the burst not delivered yet.
fn undelivered(receiver: &Receiver, prefix: &str, n: usize) -> Vec<String> {
    let (seen, _) = jobs_received(receiver);
    let mut lost = missing(&seen, &format!("{prefix}-p"), n);
    lost.extend(missing(&seen, &format!("{prefix}-s"), n));
    lost
}

/// Waits until every event of the burst arrived (at least `total` requests in all), reading
/// bodies only once enough requests came, and not more often than every 100 ms.
fn wait_delivered(receiver: &Receiver, prefix: &str, n: usize, total: usize) {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        if receiver.requests().len() >= total && undelivered(receiver, prefix, n).is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} events of the burst {prefix} were not delivered within {LONG:?}",
            undelivered(receiver, prefix, n).len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn succeeded(service: &Service) -> u64 {
    service.health()["deliveries"]["succeeded"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn three_instances_share_the_work_once_each_and_lose_nothing_when_one_is_killed() {
    let redis = RedisServer::start();
    let ids = ["scale-a", "scale-b", "scale-c"];
    let mut services: Vec<Service> = ids
        .iter()
        .map(|id| {
            Service::start(
                &redis,
                &[
                    ("WEBHOOK_INSTANCE_ID", id),
                    ("WEBHOOK_EVENT_STREAM", "events"),
                    ("WEBHOOK_INSTANCE_TTL_MS", "1000"),
                    ("WEBHOOK_DELIVERY_THREADS", "4"),
                    ("RUST_LOG", "info"),
                ],
            )
        })
        .collect();
    // A receiver that takes a moment per request, so a burst lasts long enough to kill into.
    let receiver = Receiver::start(|_, _| Reply::Slow(Duration::from_millis(2)));
    let mut hook = webhook(&receiver.url("/scale"), &["complete_job"]);
    hook["retry_config"] = json!({"max_attempts": 10, "initial_delay_ms": 100, "backoff_multiplier": 2, "max_delay_ms": 1000});
    register(&redis, &services[0], "wh_1_scale", hook);
    for service in &services {
        wait_until(
            LONG,
            "every instance to load the webhook and see the others",
            || {
                let loaded = service.health()["processor"]["total_webhooks"] == 1;
                let sees = service
                    .log_text()
                    .contains("shared with 2 other live instances");
                (loaded && sees).then_some(())
            },
        );
    }

    // All three live: every event exactly once, the work spread over all three.
    let n = 3000;
    let started = std::time::Instant::now();
    burst(&redis, "live", n);
    wait_delivered(&receiver, "live", n, 2 * n);
    let first_burst = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (seen, repeats) = jobs_received(&receiver);
    assert_eq!((seen.len(), repeats), (2 * n, 0), "(delivered, repeated)");
    let shares: Vec<u64> = services.iter().map(succeeded).collect();
    assert_eq!(shares.iter().sum::<u64>(), 2 * n as u64, "{shares:?}");
    for share in &shares {
        let fraction = *share as f64 / (2 * n) as f64;
        assert!(
            (0.2..=0.5).contains(&fraction),
            "each instance delivers 20-50% of the work: {shares:?}"
        );
    }

    // One instance killed mid-burst: nothing lost.
    let before = receiver.requests().len();
    burst(&redis, "killed", n);
    receiver.wait_for(before + n / 2, LONG);
    services[0].kill();
    wait_delivered(&receiver, "killed", n, before + 2 * n);
    let (seen, repeats) = jobs_received(&receiver);
    assert_eq!(seen.len(), 4 * n);
    eprintln!(
        "3 instances: first burst ({:.1} s) shares {shares:?} of {}; second burst with {} killed after {} requests: 0 lost, {repeats} repeated",
        first_burst.as_secs_f64(),
        2 * n,
        ids[0],
        n / 2
    );
    assert!(
        services[1].log_text().contains("scale-a") || services[2].log_text().contains("scale-a"),
        "a survivor took over the killed instance's work"
    );
}
