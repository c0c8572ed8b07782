//! What each kind of answer leads to: retries on schedule, Retry-After, 410, 3xx, timeouts,
//! refused and closed connections, the SSRF guard, and isolation from a hanging endpoint (many
//! bad endpoints: `isolation.rs`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::receiver::{Receiver, Reply};
use crate::support::{free_port, wait_until};
use crate::{SOON, register, setup, webhook};

fn fast_retries(url: &str, events: &[&str], attempts: u32, initial_ms: u64) -> Value {
    let mut hook = webhook(url, events);
    hook["retry_config"] = json!({
        "max_attempts": attempts,
        "initial_delay_ms": initial_ms,
        "backoff_multiplier": 2,
        "max_delay_ms": 60_000,
    });
    hook
}

fn publish_completion(redis: &crate::support::redis::RedisServer, job: &str) {
    redis.publish(
        "complete_job",
        &format!(r#"{{"job_id":"{job}","worker_id":"w1","timestamp":1}}"#),
    );
}

#[test]
fn failures_are_retried_on_the_backoff_schedule_with_the_same_body() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::start(|_, n| {
        if n < 2 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    register(
        &redis,
        &service,
        "wh_1_r",
        fast_retries(&receiver.url("/r"), &["complete_job"], 5, 300),
    );
    publish_completion(&redis, "j");
    let got = receiver.wait_for(3, SOON);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(receiver.requests().len(), 3, "no attempt after the success");
    let gaps: Vec<Duration> = got
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    // 300 ms then 600 ms, each ±20%, plus a little time to act.
    assert!(
        gaps[0] >= Duration::from_millis(240) && gaps[0] <= Duration::from_millis(500),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(480) && gaps[1] <= Duration::from_millis(900),
        "{gaps:?}"
    );
    for r in &got[1..] {
        assert_eq!(r.body, got[0].body, "a retry sends the same bytes");
        assert_eq!(r.header("x-event-id"), got[0].header("x-event-id"));
    }
    let health = service.health();
    assert_eq!(health["deliveries"]["attempts"]["5xx"], 2);
    assert_eq!(health["deliveries"]["attempts"]["2xx"], 1);
    assert_eq!(health["deliveries"]["succeeded"], 1);
}

#[test]
fn attempts_stop_at_max_attempts_and_the_failure_is_recorded() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::start(|_, _| Reply::status(500));
    register(
        &redis,
        &service,
        "wh_1_x",
        fast_retries(&receiver.url("/x"), &["complete_job"], 3, 50),
    );
    publish_completion(&redis, "j");
    receiver.wait_for(3, SOON);
    wait_until(SOON, "the failure to be recorded", || {
        let stored: String = ::redis::cmd("HGET")
            .arg("webhooks:registry")
            .arg("wh_1_x")
            .query(&mut redis.conn())
            .ok()?;
        let stored: Value = serde_json::from_str(&stored).ok()?;
        (stored["consecutive_failures"] == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.requests().len(), 3);
    assert_eq!(service.health()["deliveries"]["failed"], 1);
}

#[test]
fn retry_after_on_429_and_503_sets_the_earliest_next_attempt() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::start(|r, n| match (r.path.as_str(), n) {
        (_, 0) => Reply::Status(429, vec![("Retry-After".into(), "1".into())], String::new()),
        (_, 2) => Reply::Status(503, vec![("Retry-After".into(), "1".into())], String::new()),
        _ => Reply::ok(),
    });
    register(
        &redis,
        &service,
        "wh_1_ra",
        fast_retries(&receiver.url("/ra"), &["complete_job"], 5, 20),
    );
    publish_completion(&redis, "a");
    let first = receiver.wait_for(2, SOON);
    let gap = first[1].at.duration_since(first[0].at);
    assert!(
        gap >= Duration::from_millis(1000) && gap < Duration::from_millis(1800),
        "429 then {gap:?}"
    );
    publish_completion(&redis, "b");
    let all = receiver.wait_for(4, SOON);
    let gap = all[3].at.duration_since(all[2].at);
    assert!(
        gap >= Duration::from_millis(1000) && gap < Duration::from_millis(1800),
        "503 then {gap:?}"
    );
}

#[test]
fn gone_410_disables_the_webhook() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::start(|_, _| Reply::status(410));
    register(
        &redis,
        &service,
        "wh_1_g",
        fast_retries(&receiver.url("/g"), &["complete_job"], 5, 20),
    );
    publish_completion(&redis, "a");
    receiver.wait_for(1, SOON);
    let stored = wait_until(SOON, "the webhook to be disabled", || {
        let text: String = ::redis::cmd("HGET")
            .arg("webhooks:registry")
            .arg("wh_1_g")
            .query(&mut redis.conn())
            .ok()?;
        let stored: Value = serde_json::from_str(&text).ok()?;
        (stored["active"] == false).then_some(stored)
    });
    assert_eq!(stored["disabled_reason"], "gone");
    assert_eq!(
        stored["url"],
        receiver.url("/g"),
        "the rest of the webhook is kept"
    );
    let active: bool = ::redis::cmd("SISMEMBER")
        .arg("webhooks:active")
        .arg("wh_1_g")
        .query(&mut redis.conn())
        .unwrap_or(true);
    assert!(!active);
    wait_until(SOON, "the change to load", || {
        (service.health()["processor"]["active_webhooks"] == 0).then_some(())
    });
    publish_completion(&redis, "b");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        receiver.requests().len(),
        1,
        "no retry and no new delivery after 410"
    );
}

#[test]
fn redirects_are_failures_and_never_followed() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::start(|r, _| match r.path.as_str() {
        "/moved" => Reply::Status(
            302,
            vec![("Location".into(), "/elsewhere".into())],
            String::new(),
        ),
        _ => Reply::ok(),
    });
    register(
        &redis,
        &service,
        "wh_1_3",
        fast_retries(&receiver.url("/moved"), &["complete_job"], 2, 50),
    );
    publish_completion(&redis, "a");
    receiver.wait_for(2, SOON);
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        receiver.on("/elsewhere").is_empty(),
        "the redirect was followed"
    );
    assert_eq!(
        receiver.on("/moved").len(),
        2,
        "a 3xx is retried like any failure"
    );
    assert_eq!(service.health()["deliveries"]["attempts"]["3xx"], 2);
}

#[test]
fn a_timeout_is_retried() {
    let (redis, service) = setup(&[("WEBHOOK_TIMEOUT_MS", "400")]);
    let receiver = Receiver::start(|_, n| if n == 0 { Reply::Hang } else { Reply::ok() });
    register(
        &redis,
        &service,
        "wh_1_t",
        fast_retries(&receiver.url("/t"), &["complete_job"], 3, 50),
    );
    publish_completion(&redis, "a");
    let got = receiver.wait_for(2, SOON);
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(400),
        "retried {gap:?} after a hang of 400 ms"
    );
    let health = service.health();
    assert_eq!(health["deliveries"]["attempts"]["timeout"], 1);
    assert_eq!(health["deliveries"]["succeeded"], 1);
    let first = wait_until(SOON, "both attempts in the history", || {
        let answer = crate::call(&service, "GET", "/webhooks/wh_1_t/deliveries", None, &[]);
        let attempts = answer.body["data"]["attempts"].as_array().cloned()?;
        (attempts.len() == 2).then(|| attempts[1].clone())
    });
    let error = first["error_message"].as_str().unwrap_or("");
    assert!(
        error.starts_with("timeout: no complete answer within"),
        "{first}"
    );
}

#[test]
fn refused_and_closed_connections_are_retried() {
    let (redis, service) = setup(&[]);
    let closed_port = free_port();
    register(
        &redis,
        &service,
        "wh_1_refused",
        fast_retries(
            &format!("http://127.0.0.1:{closed_port}/nobody"),
            &["complete_job"],
            3,
            30,
        ),
    );
    let closer = Receiver::start(|_, n| if n == 0 { Reply::Close } else { Reply::ok() });
    register(
        &redis,
        &service,
        "wh_1_closed",
        fast_retries(&closer.url("/c"), &["complete_job"], 3, 30),
    );
    publish_completion(&redis, "a");
    closer.wait_for(2, SOON);
    wait_until(SOON, "three refused attempts", || {
        let h = service.health();
        (h["deliveries"]["attempts"]["connect"].as_u64()? >= 4 && h["deliveries"]["failed"] == 1)
            .then_some(())
    });
    assert_eq!(service.health()["deliveries"]["succeeded"], 1);
}

#[test]
fn loopback_targets_are_refused_unless_allowed() {
    let (redis, service) = setup(&[("WEBHOOK_ALLOWED_NETWORKS", "")]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_s",
        fast_retries(&receiver.url("/s"), &["complete_job"], 2, 20),
    );
    publish_completion(&redis, "a");
    wait_until(SOON, "the guard to refuse", || {
        let h = service.health();
        (h["deliveries"]["attempts"]["ssrf_blocked"] == 2 && h["deliveries"]["failed"] == 1)
            .then_some(())
    });
    assert!(
        receiver.requests().is_empty(),
        "a request reached a loopback target"
    );
    assert!(service.log_text().contains("127.0.0.1 is loopback"));
}

#[test]
fn a_hanging_endpoint_does_not_delay_a_healthy_one() {
    let (redis, service) = setup(&[
        ("WEBHOOK_TIMEOUT_MS", "5000"),
        ("WEBHOOK_DELIVERY_THREADS", "4"),
    ]);
    let hanging = Receiver::start(|_, _| Reply::Hang);
    let healthy = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_hang",
        fast_retries(&hanging.url("/h"), &["job.completed"], 3, 100),
    );
    register(
        &redis,
        &service,
        "wh_2_ok",
        fast_retries(&healthy.url("/ok"), &["job.completed"], 3, 100),
    );
    let n = 40;
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        sent.push(Instant::now());
        publish_completion(&redis, &format!("job-{i}"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = healthy.wait_for(n, SOON);
    let mut latencies: Vec<Duration> = got
        .iter()
        .map(|r| {
            let i: usize = r.json()["data"]["job_id"]
                .as_str()
                .and_then(|s| s.strip_prefix("job-"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            r.at.duration_since(sent[i])
        })
        .collect();
    latencies.sort();
    let p50 = latencies[n / 2];
    let max = latencies[n - 1];
    eprintln!("healthy endpoint beside a hanging one: p50 {p50:?}, max {max:?} over {n} events");
    assert!(
        max < Duration::from_millis(500),
        "the healthy endpoint waited {max:?}"
    );
    // The hanging endpoint holds one thread (of the slow lane: one attempt at a time once its
    // attempt has run long), the rest of its deliveries wait without a thread.
    let queue = wait_until(SOON, "the healthy endpoint's attempts to finish", || {
        let queue = service.health()["queue"].clone();
        (queue["in_flight"] == 1).then_some(queue)
    });
    assert_eq!(queue["depth"], (n - 1) as u64, "{queue}");
}

#[test]
fn a_retry_due_while_redis_is_away_is_made_from_memory() {
    // The first attempt hangs until its time limit; meanwhile Redis goes away, so the retry
    // cannot be written back as due: it must be kept in memory and made anyway.
    let (mut redis, service) = setup(&[("WEBHOOK_TIMEOUT_MS", "1000")]);
    let receiver = Receiver::start(|_, n| if n == 0 { Reply::Hang } else { Reply::ok() });
    register(
        &redis,
        &service,
        "wh_1_away",
        fast_retries(&receiver.url("/away"), &["complete_job"], 3, 50),
    );
    publish_completion(&redis, "away");
    receiver.wait_for(1, SOON);
    redis.kill();
    let got = receiver.wait_for(2, SOON);
    assert_eq!(got[0].header("x-event-id"), got[1].header("x-event-id"));
    assert_eq!(got[0].body, got[1].body);
    let health = service.health();
    assert_eq!(health["deliveries"]["attempts"]["timeout"], 1, "{health}");
    assert_eq!(health["deliveries"]["succeeded"], 1, "{health}");
    assert!(
        service
            .log_text()
            .contains("deliveries made from memory instead of put back as due: 1"),
        "the retry did not go through the in-memory fallback"
    );
    redis.restart();
}
