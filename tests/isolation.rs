//! Isolation with many bad endpoints (issue #11), with the default settings: K endpoints that
//! hang or answer in seconds beside one healthy webhook at 20 events/s. Every healthy delivery
//! must arrive within a second of its publish, the bad endpoints must still get attempts, and
//! nothing of theirs may be lost.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::receiver::{Receiver, Reply};
use crate::support::redis::RedisServer;
use crate::support::service::Service;
use crate::support::{try_wait_until, wait_until};
use crate::{SOON, setup, webhook};

/// Events published per second, and for how long.
const RATE: u64 = 20;
const SECONDS: u64 = 5;
/// The most a healthy delivery may take from publish to receipt.
const HEALTHY_WITHIN: Duration = Duration::from_secs(1);

/// Stores every webhook in one go and waits until the service has them all.
fn register_all(redis: &RedisServer, service: &Service, hooks: &[(String, Value)]) {
    let mut conn = redis.conn();
    for (id, hook) in hooks {
        let mut hook = hook.clone();
        hook["id"] = Value::from(id.as_str());
        let _: () = ::redis::cmd("HSET")
            .arg("webhooks:registry")
            .arg(id)
            .arg(hook.to_string())
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("HSET: {e}"));
    }
    let _: () = ::redis::cmd("PUBLISH")
        .arg("webhooks:changed")
        .arg("all")
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("PUBLISH: {e}"));
    wait_until(SOON, "the service to load the webhooks", || {
        let total = service.health()["processor"]["total_webhooks"].as_u64()?;
        (total == hooks.len() as u64).then_some(())
    });
}

fn publish_completion(conn: &mut ::redis::Connection, job: &str) {
    let _: i64 = ::redis::cmd("PUBLISH")
        .arg("complete_job")
        .arg(format!(
            r#"{{"job_id":"{job}","worker_id":"w1","timestamp":1}}"#
        ))
        .query(conn)
        .unwrap_or_else(|e| panic!("PUBLISH complete_job: {e}"));
}

/// The index of a delivered job `iso-<n>`.
fn job_index(request: &crate::support::receiver::Captured) -> Option<usize> {
    request.json()["data"]["job_id"]
        .as_str()?
        .strip_prefix("iso-")?
        .parse()
        .ok()
}

/// What one run saw.
struct Run {
    redis: RedisServer,
    service: Service,
    bad: Vec<Receiver>,
    healthy: Receiver,
    sent: Vec<Instant>,
}

/// Starts a service with the default settings, `k` webhooks whose endpoint does `bad`, and one
/// healthy webhook whose id sorts last (its delivery of each event is queued after the bad
/// ones'), then publishes 20 `complete_job` a second for 5 s.
fn run(
    k: usize,
    env: &[(&str, &str)],
    bad: impl Fn() -> Reply + Clone + Send + Sync + 'static,
    healthy: Receiver,
    retry_config: Value,
    mut during: impl FnMut(usize),
) -> Run {
    let (redis, service) = setup(env);
    let bad: Vec<Receiver> = (0..k)
        .map(|_| {
            let bad = bad.clone();
            Receiver::start(move |_, _| bad())
        })
        .collect();
    let hook = |url: String| {
        let mut hook = webhook(&url, &["job.completed"]);
        hook["retry_config"] = retry_config.clone();
        hook
    };
    let mut hooks: Vec<(String, Value)> = bad
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("wh_1_bad{i:02}"), hook(r.url("/bad"))))
        .collect();
    hooks.push(("wh_9_healthy".to_string(), hook(healthy.url("/ok"))));
    register_all(&redis, &service, &hooks);
    let mut conn = redis.conn();
    let n = (RATE * SECONDS) as usize;
    let started = Instant::now();
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let due = started + Duration::from_millis(i as u64 * 1000 / RATE);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        sent.push(Instant::now());
        publish_completion(&mut conn, &format!("iso-{i}"));
        during(i);
    }
    Run {
        redis,
        service,
        bad,
        healthy,
        sent,
    }
}

impl Run {
    /// Asserts that every healthy delivery arrived within [`HEALTHY_WITHIN`] of its publish.
    fn assert_healthy_on_time(&self, what: &str) {
        let n = self.sent.len();
        // Bounded: what has not arrived a few seconds after the last publish is late anyway.
        try_wait_until(Duration::from_secs(5), || {
            (self.healthy.requests().len() >= n).then_some(())
        });
        let got = self.healthy.requests();
        let mut late = Vec::new();
        let mut seen = vec![false; n];
        for request in &got {
            let Some(i) = job_index(request) else {
                continue;
            };
            seen[i] = true;
            let took = request.at.duration_since(self.sent[i]);
            if took > HEALTHY_WITHIN {
                late.push((i, took));
            }
        }
        let missing: Vec<usize> = (0..n).filter(|i| !seen[*i]).collect();
        let mut took: Vec<Duration> = got
            .iter()
            .filter_map(|r| Some(r.at.duration_since(self.sent[job_index(r)?])))
            .collect();
        took.sort();
        if let (Some(p50), Some(max)) = (took.get(took.len() / 2), took.last()) {
            eprintln!("{what}: healthy deliveries p50 {p50:?}, max {max:?}");
        }
        let health = self.service.health();
        assert!(
            late.is_empty() && missing.is_empty(),
            "{what}: {} of {n} healthy deliveries arrived, {} of them later than {HEALTHY_WITHIN:?} \
             (first late: {:?}); missing: {:?}; queue: {}",
            got.len(),
            late.len(),
            late.first(),
            &missing[..missing.len().min(10)],
            health["queue"]
        );
    }

    /// Asserts that each bad endpoint got at least `min` attempts.
    fn assert_bad_attempted(&self, what: &str, min: usize) {
        for (i, bad) in self.bad.iter().enumerate() {
            let attempted = try_wait_until(Duration::from_secs(10), || {
                (bad.requests().len() >= min).then_some(())
            });
            assert!(
                attempted.is_some(),
                "{what}: bad endpoint {i} got {} attempts, expected at least {min}; queue: {}",
                bad.requests().len(),
                self.service.health()["queue"]
            );
        }
    }

    /// Asserts that every delivery not yet made is still recorded in Redis, or kept as a dead
    /// letter: nothing is lost while endpoints are bad.
    fn assert_nothing_lost(&self, what: &str) {
        let expected = self.sent.len() as u64 * (self.bad.len() as u64 + 1);
        let count = |key: &str| -> Option<u64> {
            ::redis::cmd("HLEN")
                .arg(key)
                .query(&mut self.redis.conn())
                .ok()
        };
        let settled = try_wait_until(SOON, || {
            let health = self.service.health();
            let created = health["deliveries"]["created"].as_u64()?;
            let succeeded = health["deliveries"]["succeeded"].as_u64()?;
            let kept = count("webhooks:deliveries")? + count("webhooks:dead_letters")?;
            (created == expected && kept + succeeded == created).then_some(())
        });
        assert!(
            settled.is_some(),
            "{what}: deliveries lost: {} expected; {}; recorded {:?}, dead {:?}",
            expected,
            self.service.health()["deliveries"],
            count("webhooks:deliveries"),
            count("webhooks:dead_letters")
        );
    }
}

/// The retry policy of [`webhook`]: 3 attempts, 1 s apart and more.
fn default_retries() -> Value {
    webhook("http://x", &[])["retry_config"].clone()
}

/// K endpoints doing `bad` beside a healthy one, with the default settings.
fn check(
    k: usize,
    what: &str,
    bad: impl Fn() -> Reply + Clone + Send + Sync + 'static,
    min: usize,
) {
    let run = run(k, &[], bad, Receiver::ok(), default_retries(), |_| {});
    run.assert_healthy_on_time(what);
    run.assert_bad_attempted(what, min);
    run.assert_nothing_lost(what);
}

#[test]
fn two_hanging_endpoints_do_not_delay_a_healthy_one() {
    check(2, "2 hanging", || Reply::Hang, 1);
}

#[test]
fn four_hanging_endpoints_do_not_delay_a_healthy_one() {
    check(4, "4 hanging", || Reply::Hang, 1);
}

#[test]
fn sixteen_hanging_endpoints_do_not_delay_a_healthy_one() {
    check(16, "16 hanging", || Reply::Hang, 1);
}

#[test]
fn three_endpoints_answering_after_four_seconds_do_not_delay_a_healthy_one() {
    // Each keeps getting attempts: more than its first, which answers after 4 s.
    check(3, "3 slow", || Reply::Slow(Duration::from_secs(4)), 2);
}

#[test]
fn eight_endpoints_that_reset_connections_do_not_delay_a_healthy_one() {
    // Each gets its first attempt and its retry a second later.
    check(8, "8 resetting", || Reply::Close, 2);
}

#[test]
fn endpoints_that_answered_quickly_and_then_hang_do_not_delay_a_healthy_one() {
    // Four endpoints that were healthy, each trusted with several threads, all start hanging
    // at once a second in: their attempts in flight must not keep the healthy endpoint waiting.
    let hanging = Arc::new(AtomicBool::new(false));
    let flag = hanging.clone();
    let bad = move || {
        if flag.load(Ordering::Relaxed) {
            Reply::Hang
        } else {
            Reply::ok()
        }
    };
    let run = run(4, &[], bad, Receiver::ok(), default_retries(), |i| {
        if i == RATE as usize {
            hanging.store(true, Ordering::Relaxed);
        }
    });
    run.assert_healthy_on_time("4 turned hanging");
    run.assert_bad_attempted("4 turned hanging", RATE as usize + 1);
    run.assert_nothing_lost("4 turned hanging");
}

#[test]
fn retries_of_a_healthy_endpoint_are_not_starved_by_hanging_ones() {
    // Attempts time out after a second, so the hanging endpoints have retries of their own
    // within the run; the healthy endpoint fails every first attempt, and each of its retries is
    // due 200 ms (±20%) later.
    let failed_once = Arc::new(Mutex::new(HashSet::new()));
    let healthy = Receiver::start(move |request, _| {
        let id = request.header("x-event-id").unwrap_or("").to_string();
        let first = failed_once.lock().map(|mut seen| seen.insert(id));
        if first.unwrap_or(false) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let retries = json!({"max_attempts": 10, "initial_delay_ms": 200, "backoff_multiplier": 1, "max_delay_ms": 200});
    let run = run(
        8,
        &[("WEBHOOK_TIMEOUT_MS", "1000")],
        || Reply::Hang,
        healthy,
        retries,
        |_| {},
    );
    let n = run.sent.len();
    let got = run.healthy.wait_for(2 * n, Duration::from_secs(10));
    let mut first: Vec<Option<Instant>> = vec![None; n];
    let mut late = Vec::new();
    for request in &got {
        let Some(i) = job_index(request) else {
            continue;
        };
        match first[i] {
            None => first[i] = Some(request.at),
            Some(at) => {
                let gap = request.at.duration_since(at);
                if gap > Duration::from_millis(240) + HEALTHY_WITHIN {
                    late.push((i, gap));
                }
            }
        }
    }
    assert!(
        late.is_empty(),
        "{} of {n} healthy retries came later than 1 s after they were due (first: {:?}); queue: {}",
        late.len(),
        late.first(),
        run.service.health()["queue"]
    );
    run.assert_bad_attempted("8 hanging with retries", 2);
}
