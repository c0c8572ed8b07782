//! Nothing lost (issue #4): crashes, SIGTERM, Redis restarts, several instances, dead letters,
//! endpoint health. Real redis-server, real receivers, the real binary; every loop is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::receiver::{Receiver, Reply};
use crate::support::redis::{RedisServer, add_event};
use crate::support::service::Service;
use crate::support::wait_until;
use crate::{call, register, webhook};

const LONG: Duration = Duration::from_secs(30);

fn hook(url: &str, attempts: u32) -> Value {
    let mut h = webhook(url, &["complete_job"]);
    h["retry_config"] = json!({"max_attempts": attempts, "initial_delay_ms": 50, "backoff_multiplier": 2, "max_delay_ms": 1000});
    h
}

fn publish_jobs(redis: &RedisServer, from: usize, n: usize) {
    for i in from..from + n {
        redis.publish(
            "complete_job",
            &format!(r#"{{"job_id":"job-{i}","timestamp":{i}}}"#),
        );
    }
}

fn received(service: &Service) -> u64 {
    service.health()["events"]["received"].as_u64().unwrap_or(0)
}

/// Deliveries recorded in Redis (or, with Redis away, made from memory).
fn created(service: &Service) -> u64 {
    service.health()["deliveries"]["created"]
        .as_u64()
        .unwrap_or(0)
}

fn redis_count(redis: &RedisServer, cmd: &str, key: &str) -> u64 {
    ::redis::cmd(cmd)
        .arg(key)
        .query(&mut redis.conn())
        .unwrap_or(0)
}

/// Settings of an instance that may be killed: a short heartbeat, few delivery threads.
const KILLABLE: [(&str, &str); 2] = [
    ("WEBHOOK_INSTANCE_TTL_MS", "1000"),
    ("WEBHOOK_DELIVERY_THREADS", "2"),
];

/// An instance killed with SIGKILL in the middle of a burst of `n` events to a slow endpoint,
/// once the endpoint has seen `seen` of them; and that endpoint.
fn killed_mid_burst(redis: &RedisServer, id: &str, n: usize, seen: usize) -> (Service, Receiver) {
    let mut service = Service::start(redis, &KILLABLE);
    let receiver = Receiver::start(|_, _| Reply::Slow(Duration::from_millis(20)));
    register(redis, &service, id, hook(&receiver.url("/burst"), 5));
    publish_jobs(redis, 0, n);
    // Pub/sub is at most once until a delivery is recorded: a kill between the read and the
    // record (a few ms, batched) loses the event. Kill once every delivery is recorded.
    wait_until(LONG, "every delivery to be recorded", || {
        (created(&service) == n as u64).then_some(())
    });
    receiver.wait_for(seen, LONG);
    service.kill();
    (service, receiver)
}

#[test]
fn kill_9_mid_burst_then_restart_delivers_every_matched_event() {
    let redis = RedisServer::start();
    let n = 200;
    let (mut service, receiver) = killed_mid_burst(&redis, "wh_1_k", n, 20);
    let before = receiver.requests().len();
    assert!(before < n, "the burst finished before the kill ({before})");
    service.restart();
    wait_until(LONG, "every event after the restart", || {
        (receiver.distinct_events().0 == n).then_some(())
    });
    let (distinct, duplicates) = receiver.distinct_events();
    eprintln!("kill -9 after {before} of {n}: {distinct} delivered, {duplicates} duplicates");
    wait_until(LONG, "the durable state to empty", || {
        (redis_count(&redis, "HLEN", "webhooks:deliveries") == 0).then_some(())
    });
}

/// The count in the log line a stop ends with: "stopped: N deliveries handed back …".
fn handed_back_in_log(log: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.split_once("stopped: ")?.1.split(' ').next()?.parse().ok())
}

#[test]
fn sigterm_exits_in_time_and_hands_the_rest_back() {
    let redis = RedisServer::start();
    let env = [
        ("WEBHOOK_SHUTDOWN_TIMEOUT_MS", "2000"),
        ("WEBHOOK_DELIVERY_THREADS", "2"),
    ];
    let mut service = Service::start(&redis, &env);
    let receiver = Receiver::start(|_, _| Reply::Slow(Duration::from_millis(50)));
    register(&redis, &service, "wh_1_t", hook(&receiver.url("/t"), 5));
    let n = 100;
    publish_jobs(&redis, 0, n);
    wait_until(LONG, "every event to be read", || {
        (received(&service) == n as u64).then_some(())
    });
    receiver.wait_for(5, LONG);
    // Everything is in the service's hands: queued, parked or in flight, none in Redis' due set.
    assert_eq!(redis_count(&redis, "ZCARD", "webhooks:due"), 0);
    let (code, took) = service
        .terminate(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit within 5 s"));
    assert_eq!(code, 0, "exit code after SIGTERM");
    assert!(took < Duration::from_millis(3000), "took {took:?}");
    let delivered = receiver.distinct_events().0;
    assert!(delivered < n, "everything was delivered before the stop");
    // What was not delivered is back in Redis, leased by nobody, and the log says how much.
    let first_log = service.log_text();
    let due = redis_count(&redis, "ZCARD", "webhooks:due");
    assert_eq!(
        handed_back_in_log(&first_log),
        Some(due),
        "the stop's count differs from what reached webhooks:due:\n{first_log}"
    );
    assert_eq!(
        due as usize + delivered,
        n,
        "{due} due + {delivered} delivered"
    );
    let leased: Vec<String> = ::redis::cmd("KEYS")
        .arg("webhooks:leased:*")
        .query(&mut redis.conn())
        .unwrap_or_default();
    let held: u64 = leased.iter().map(|k| redis_count(&redis, "SCARD", k)).sum();
    assert_eq!(
        held, 0,
        "deliveries still leased after the stop: {leased:?}"
    );
    service.restart();
    let rest =
        crate::support::try_wait_until(LONG, || (receiver.distinct_events().0 == n).then_some(()));
    assert!(
        rest.is_some(),
        "the rest did not arrive after a restart: {} of {n}; due {}, recorded {}, dead {}; first log:\n{first_log}\nlog:\n{}",
        receiver.distinct_events().0,
        redis_count(&redis, "ZCARD", "webhooks:due"),
        redis_count(&redis, "HLEN", "webhooks:deliveries"),
        redis_count(&redis, "HLEN", "webhooks:dead_letters"),
        service.log_text()
    );
    // Each once: nothing in flight was cut off, and nothing delivered was handed back.
    assert_eq!(receiver.distinct_events(), (n, 0));
}

#[test]
fn two_instances_deliver_each_event_once() {
    let redis = RedisServer::start();
    let first = Service::start(&redis, &[]);
    let second = Service::start(&redis, &[]);
    let receiver = Receiver::ok();
    register(&redis, &first, "wh_1_d", hook(&receiver.url("/d"), 3));
    wait_until(LONG, "the second instance to load it", || {
        (second.health()["processor"]["total_webhooks"] == 1).then_some(())
    });
    let n = 100;
    publish_jobs(&redis, 0, n);
    wait_until(LONG, "every event", || {
        (receiver.distinct_events().0 == n).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        receiver.distinct_events(),
        (n, 0),
        "(delivered, duplicates)"
    );
    // The instance that does not own an event finds it claimed after its grace (2 s).
    let claimed = || {
        [&first, &second]
            .iter()
            .map(|s| {
                s.health()["events"]["claimed_elsewhere"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    wait_until(
        LONG,
        "every event found claimed by the other instance",
        || (claimed() >= n as u64).then_some(()),
    );
    assert_eq!(
        claimed(),
        n as u64,
        "each event was claimed by exactly one instance"
    );
}

#[test]
fn a_dead_instances_deliveries_are_taken_over() {
    let redis = RedisServer::start();
    let n = 150;
    let (_doomed, receiver) = killed_mid_burst(&redis, "wh_1_o", n, 10);
    let survivor = Service::start(&redis, &KILLABLE);
    wait_until(LONG, "the survivor to deliver the rest", || {
        (receiver.distinct_events().0 == n).then_some(())
    });
    assert!(
        survivor.log_text().contains("took over"),
        "{}",
        survivor.log_text()
    );
}

#[test]
fn stream_intake_loses_nothing_across_a_redis_restart() {
    let mut redis = RedisServer::start_persistent();
    let env = [
        ("WEBHOOK_EVENT_STREAM", "events"),
        ("WEBHOOK_DELIVERY_THREADS", "2"),
    ];
    let service = Service::start(&redis, &env);
    let receiver = Receiver::start(|_, _| Reply::Slow(Duration::from_millis(10)));
    register(&redis, &service, "wh_1_s", hook(&receiver.url("/s"), 10));
    let n = 150;
    let add = |redis: &RedisServer, from: usize, count: usize| {
        let mut conn = redis.conn();
        for i in from..from + count {
            let message = format!(r#"{{"job_id":"job-{i}","timestamp":{i}}}"#);
            if let Err(e) = add_event(&mut conn, "complete_job", &message) {
                panic!("XADD: {e}");
            }
        }
    };
    add(&redis, 0, n / 2);
    receiver.wait_for(10, LONG);
    redis.restart();
    add(&redis, n / 2, n - n / 2);
    wait_until(LONG, "every stream entry", || {
        (receiver.distinct_events().0 == n).then_some(())
    });
    // Nothing is left pending in the group.
    wait_until(LONG, "every entry acknowledged", || {
        let pending: Vec<::redis::Value> = ::redis::cmd("XPENDING")
            .arg("events")
            .arg("webhook-service")
            .query(&mut redis.conn())
            .ok()?;
        (pending.first() == Some(&::redis::Value::Int(0))).then_some(())
    });
    eprintln!(
        "stream across a Redis restart: {:?} (delivered, duplicates)",
        receiver.distinct_events()
    );
}

#[test]
fn dead_letters_are_listed_redelivered_and_recovered() {
    let redis = RedisServer::start();
    let service = Service::start(&redis, &[]);
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let receiver = Receiver::start(move |_, _| {
        if flag.load(Ordering::Relaxed) {
            Reply::ok()
        } else {
            Reply::Status(500, vec![], "down".into())
        }
    });
    register(&redis, &service, "wh_1_dl", hook(&receiver.url("/dl"), 2));
    let start = crate::now_ms();
    publish_jobs(&redis, 0, 3);
    let letters = wait_until(LONG, "three dead letters", || {
        let list = call(
            &service,
            "GET",
            "/dead-letters?webhook_id=wh_1_dl",
            None,
            &[],
        );
        (list.body["count"] == 3).then_some(list.body["data"].clone())
    });
    let first = letters[0].clone();
    assert_eq!(first["webhook_id"], "wh_1_dl");
    assert_eq!(first["attempts"], 2);
    assert_eq!(first["last_status"], 500);
    assert_eq!(first["last_error"], "HTTP 500");
    let failed_body = receiver
        .requests()
        .iter()
        .find(|r| r.header("x-event-id") == first["event_id"].as_str())
        .map(|r| r.body.clone());
    healthy.store(true, Ordering::Relaxed);
    let before = receiver.requests().len();
    let id = first["id"].as_str().unwrap_or("");
    let redelivered = call(
        &service,
        "POST",
        &format!("/dead-letters/{id}/redeliver"),
        None,
        &[],
    );
    assert_eq!(redelivered.status, 202, "{:?}", redelivered.body);
    let got = receiver.wait_for(before + 1, LONG);
    let again = got
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no redelivery"));
    assert_eq!(
        again.header("x-event-id"),
        first["event_id"].as_str(),
        "same event_id"
    );
    assert_eq!(Some(again.body.clone()), failed_body, "same body");
    assert_eq!(
        call(
            &service,
            "POST",
            &format!("/dead-letters/{id}/redeliver"),
            None,
            &[]
        )
        .status,
        404
    );

    let recovered = call(
        &service,
        "POST",
        &format!("/webhooks/wh_1_dl/recover?since={start}"),
        None,
        &[],
    );
    assert_eq!(recovered.status, 202);
    assert_eq!(recovered.body["data"]["requeued"], 2);
    receiver.wait_for(before + 3, LONG);
    assert_eq!(
        call(&service, "GET", "/dead-letters", None, &[]).body["count"],
        0
    );
    assert_eq!(
        call(&service, "POST", "/webhooks/wh_1_dl/recover", None, &[]).status,
        400
    );
}

#[test]
fn repeated_failures_disconnect_and_a_half_open_probe_reconnects() {
    let redis = RedisServer::start();
    let service = Service::start(
        &redis,
        &[
            ("WEBHOOK_DISCONNECT_AFTER", "2"),
            ("WEBHOOK_HALF_OPEN_AFTER_MS", "1500"),
        ],
    );
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let receiver = Receiver::start(move |_, _| {
        if flag.load(Ordering::Relaxed) {
            Reply::ok()
        } else {
            Reply::status(500)
        }
    });
    register(&redis, &service, "wh_1_h", hook(&receiver.url("/h"), 1));
    let stored = |redis: &RedisServer| -> Value {
        let text: String = ::redis::cmd("HGET")
            .arg("webhooks:registry")
            .arg("wh_1_h")
            .query(&mut redis.conn())
            .unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    publish_jobs(&redis, 0, 2);
    wait_until(LONG, "the webhook to be disconnected", || {
        (stored(&redis)["disconnected"] == true).then_some(())
    });
    let mut next_job = 100;
    wait_until(LONG, "events to be kept as dead letters", || {
        next_job += 1;
        publish_jobs(&redis, next_job, 1);
        std::thread::sleep(Duration::from_millis(100));
        (call(
            &service,
            "GET",
            "/dead-letters?webhook_id=wh_1_h",
            None,
            &[],
        )
        .body["data"]
            .as_array()
            .is_some_and(|l| {
                l.iter()
                    .any(|d| d["last_error"] == "webhook is disconnected")
            }))
        .then_some(())
    });
    let attempts_while_disconnected = receiver.requests().len();
    healthy.store(true, Ordering::Relaxed);
    // After the quiet period a delivery is tried again, succeeds, and reconnects the webhook.
    wait_until(LONG, "the probe to reconnect it", || {
        next_job += 1;
        publish_jobs(&redis, next_job, 1);
        std::thread::sleep(Duration::from_millis(200));
        (stored(&redis)["disconnected"] == false).then_some(())
    });
    assert!(receiver.requests().len() > attempts_while_disconnected);
    assert_eq!(stored(&redis)["consecutive_failures"], 0);
}

#[test]
fn a_fan_out_burst_holds_bounded_memory_and_loses_nothing() {
    // Five slow endpoints, one attempt in flight each, and room for 100 deliveries queued and 100
    // parked: a 1,000-delivery burst must wait in Redis, not in memory, and still all arrive.
    let redis = RedisServer::start();
    let env = [
        ("WEBHOOK_QUEUE_CAPACITY", "100"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "1"),
        // More threads than the endpoints may use: the idle ones park what they read.
        ("WEBHOOK_DELIVERY_THREADS", "16"),
    ];
    let service = Service::start(&redis, &env);
    let receivers: Vec<Receiver> = (0..5)
        .map(|_| Receiver::start(|_, _| Reply::Slow(Duration::from_millis(10))))
        .collect();
    for (i, receiver) in receivers.iter().enumerate() {
        register(
            &redis,
            &service,
            &format!("wh_{i}_fan"),
            hook(&receiver.url("/f"), 3),
        );
    }
    let n = 200;
    publish_jobs(&redis, 0, n);
    let mut deepest = 0;
    wait_until(LONG, "every delivery", || {
        let health = call(&service, "GET", "/health", None, &[]);
        deepest = deepest.max(health.body["queue"]["depth"].as_u64().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
        receivers
            .iter()
            .all(|r| r.distinct_events().0 == n)
            .then_some(())
    });
    assert!(deepest <= 200, "{deepest} deliveries held in memory");
    assert!(
        deepest > 0,
        "the burst never queued: the test proves nothing"
    );
    let spilled = service.health()["deliveries"]["spilled"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        spilled > 0,
        "nothing waited in Redis: the test proves nothing"
    );
    for receiver in &receivers {
        assert_eq!(receiver.distinct_events(), (n, 0));
    }
    wait_until(LONG, "the durable state to empty", || {
        (redis_count(&redis, "HLEN", "webhooks:deliveries") == 0).then_some(())
    });
}

/// The stored record of a first attempt of a `complete_job` to `webhook`, as another instance
/// writes it to `webhooks:deliveries`.
fn due_record(webhook: &str, event_id: &str, created_ms: u64) -> Value {
    let body = json!({
        "event_type": "complete_job",
        "event_id": event_id,
        "timestamp": 1,
        "webhook_id": webhook,
        "data": {"job_id": "j"},
    });
    json!({
        "webhook_id": webhook,
        "event_id": event_id,
        "event_type": "complete_job",
        "kind": "job.completed",
        "attempts": 0,
        "created_ms": created_ms,
        "body": body.to_string(),
    })
}

/// Writes webhook `id` (on `complete_job`, to `url`) straight into `webhooks:registry`, as
/// another instance or a service not yet started would find it.
fn store_webhook(redis: &RedisServer, id: &str, url: &str) {
    let hook = webhook(url, &["complete_job"]);
    let stored: Result<(), _> = ::redis::cmd("HSET")
        .arg("webhooks:registry")
        .arg(id)
        .arg(
            json!({"id": id, "url": hook["url"], "events": ["complete_job"], "active": true})
                .to_string(),
        )
        .query(&mut redis.conn());
    stored.unwrap_or_else(|e| panic!("store the webhook: {e}"));
}

/// `deliveries` of one event recorded for the due set by `instance`, which then died before
/// spreading them (it is listed among the instances, with no heartbeat). Returns the event's
/// sequence.
fn recorded_by_a_dead_instance(
    redis: &RedisServer,
    instance: &str,
    deliveries: &[webhook_service::delivery::Delivery],
) -> u64 {
    use webhook_service::delivery::durable::{Claim, Recording};

    let due_ms = vec![Some(crate::now_ms()); deliveries.len()];
    let recorded =
        crate::support::redis::durable_store(redis, instance).record_many(&[Recording {
            claim_key: webhook_service::keys::claim(&[3; 32]),
            claim_ttl_ms: 60_000,
            deliveries,
            due_ms: &due_ms,
        }]);
    let sequence = match recorded.as_deref() {
        Ok([Claim::Now(sequence)]) => *sequence,
        other => panic!("not recorded: {other:?}"),
    };
    let _: () = ::redis::cmd("SADD")
        .arg("webhooks:instances")
        .arg(instance)
        .query(&mut redis.conn())
        .unwrap_or_else(|e| panic!("SADD: {e}"));
    sequence
}

#[test]
fn a_due_delivery_for_a_webhook_newer_than_the_registry_copy_is_delivered() {
    // Another instance recorded a delivery for a webhook this one has not read yet (no change
    // notice, no periodic refresh for a minute): it must look again, not drop it as deleted.
    let redis = RedisServer::start();
    let service = Service::start(&redis, &[("WEBHOOK_REGISTRY_REFRESH_MS", "60000")]);
    let receiver = Receiver::ok();
    store_webhook(&redis, "wh_9_new", &receiver.url("/new"));
    let mut conn = redis.conn();
    let now = crate::now_ms();
    let record = due_record("wh_9_new", "wh_1_elsewhere", now);
    let queued: Result<(), _> = ::redis::pipe()
        .hset("webhooks:deliveries", "wh_1_elsewhere", record.to_string())
        .zadd("webhooks:due", "wh_1_elsewhere", now)
        .query(&mut conn);
    queued.unwrap_or_else(|e| panic!("queue the delivery: {e}"));
    let got = receiver.wait_for(1, LONG);
    assert_eq!(got[0].header("x-event-id"), Some("wh_1_elsewhere"));
    assert!(!service.log_text().contains("is not delivered"));
}

#[test]
fn a_due_record_that_cannot_be_read_is_reported_and_the_others_go_on() {
    let redis = RedisServer::start();
    let service = Service::start(&redis, &[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_9_mixed",
        webhook(&receiver.url("/m"), &["complete_job"]),
    );
    let now = crate::now_ms();
    let good = due_record("wh_9_mixed", "wh_1_good", now);
    let queued: Result<(), _> = ::redis::pipe()
        .hset(
            "webhooks:deliveries",
            "wh_1_corrupt",
            "{\"webhook_id\": trunc",
        )
        .zadd("webhooks:due", "wh_1_corrupt", now)
        .hset("webhooks:deliveries", "wh_1_good", good.to_string())
        .zadd("webhooks:due", "wh_1_good", now + 1)
        .query(&mut redis.conn());
    queued.unwrap_or_else(|e| panic!("queue the deliveries: {e}"));
    let got = receiver.wait_for(1, LONG);
    assert_eq!(got[0].header("x-event-id"), Some("wh_1_good"));
    // The unreadable one is said, by its id, and kept (not deleted on the quiet).
    wait_until(LONG, "the unreadable record to be reported", || {
        service
            .log_text()
            .contains("delivery wh_1_corrupt: its record in webhooks:deliveries cannot be read")
            .then_some(())
    });
    let kept: Option<String> = ::redis::cmd("HGET")
        .arg("webhooks:deliveries")
        .arg("wh_1_corrupt")
        .query(&mut redis.conn())
        .unwrap_or(None);
    assert_eq!(kept.as_deref(), Some("{\"webhook_id\": trunc"));
}

#[test]
fn deliveries_an_instance_recorded_for_the_due_set_but_never_spread_are_delivered() {
    // An instance records an event whose endpoint is backed up: that delivery is written, with
    // the event's claim, as one value for the due set, and spread there by a second script. The
    // instance is killed between the two: whoever takes over its leases spreads it.
    let redis = RedisServer::start();
    // Many, as one event to many backed-up endpoints (here all one receiver's): more than one
    // command's worth when spread.
    let n = 1500;
    let deliveries: Vec<_> = (0..n)
        .map(|i| {
            crate::support::redis::first_attempt("wh_9_backed", &format!("wh_1_unspread{i:04}"))
        })
        .collect();
    let sequence = recorded_by_a_dead_instance(&redis, "instance-gone", &deliveries);
    assert_eq!(redis_count(&redis, "ZCARD", "webhooks:due"), 0);

    // Its webhook is known before the service starts (it takes over at once).
    let receiver = Receiver::ok();
    store_webhook(&redis, "wh_9_backed", &receiver.url("/b"));
    let service = Service::start(&redis, &[]);
    let got = receiver.wait_for(n, LONG);
    let ids: std::collections::BTreeSet<&str> =
        got.iter().filter_map(|r| r.header("x-event-id")).collect();
    assert_eq!(ids.len(), n, "each delivery");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.requests().len(), n, "no delivery twice");
    assert!(ids.contains("wh_1_unspread0000") && ids.contains("wh_1_unspread1499"));
    let sequence = sequence.to_string();
    assert!(
        got.iter()
            .all(|r| r.header("x-event-sequence") == Some(sequence.as_str()))
    );
    assert!(
        service
            .log_text()
            .contains("instance-gone stopped; took over its 1500 deliveries"),
        "{}",
        service.log_text()
    );
    assert_eq!(
        redis_count(&redis, "HLEN", "webhooks:deferring:instance-gone"),
        0
    );
}

#[test]
fn an_unreadable_value_for_the_due_set_is_kept_aside_and_holds_nothing_up() {
    let redis = RedisServer::start();
    let deliveries = [crate::support::redis::first_attempt("wh_9_b", "wh_1_good")];
    recorded_by_a_dead_instance(&redis, "instance-bad", &deliveries);
    let receiver = Receiver::ok();
    store_webhook(&redis, "wh_9_b", &receiver.url("/b"));
    let written: Result<(), _> = ::redis::cmd("HSET")
        .arg("webhooks:deferring:instance-bad")
        .arg("webhooks:claim:x:1")
        .arg("no lines here")
        .query(&mut redis.conn());
    written.unwrap_or_else(|e| panic!("write: {e}"));
    let service = Service::start(&redis, &[]);
    let got = receiver.wait_for(1, LONG);
    assert_eq!(got[0].header("x-event-id"), Some("wh_1_good"));
    wait_until(LONG, "the dead instance to be taken over", || {
        service
            .log_text()
            .contains("instance-bad stopped")
            .then_some(())
    });
    let kept: Option<String> = ::redis::cmd("HGET")
        .arg("webhooks:deferring:instance-bad:unreadable")
        .arg("webhooks:claim:x:1")
        .query(&mut redis.conn())
        .unwrap_or(None);
    assert_eq!(kept.as_deref(), Some("no lines here"));
    assert_eq!(
        redis_count(&redis, "HLEN", "webhooks:deferring:instance-bad"),
        0
    );
}

#[test]
fn kill_9_while_an_endpoint_is_backed_up_loses_nothing() {
    // One endpoint is slow for its first seconds, with a small parking space: most of the burst
    // to it is recorded for the due set (spread there after each quiet moment). The process is
    // killed with SIGKILL mid-burst and restarted: both webhooks get every event.
    let redis = RedisServer::start();
    let mut env = KILLABLE.to_vec();
    env.extend([
        ("WEBHOOK_QUEUE_CAPACITY", "100"),
        ("WEBHOOK_SLOW_ATTEMPT_MS", "200"),
    ]);
    let mut service = Service::start(&redis, &env);
    let backed = Receiver::slow_at_first(Duration::from_secs(3), Duration::from_millis(300));
    let healthy = Receiver::ok();
    register(&redis, &service, "wh_1_backed", hook(&backed.url("/b"), 5));
    register(
        &redis,
        &service,
        "wh_2_healthy",
        hook(&healthy.url("/h"), 5),
    );
    let n = 300;
    publish_jobs(&redis, 0, n);
    wait_until(LONG, "every delivery to be recorded", || {
        (created(&service) == 2 * n as u64).then_some(())
    });
    let deferred = service.health()["deliveries"]["deferred"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        deferred > 0,
        "nothing was recorded for the due set: the test did not test that path"
    );
    service.kill();
    let before = backed.requests().len();
    assert!(before < n, "the burst finished before the kill ({before})");
    service.restart();
    for (name, receiver) in [("backed-up", &backed), ("healthy", &healthy)] {
        wait_until(Duration::from_secs(60), name, || {
            (receiver.distinct_events().0 == n).then_some(())
        });
    }
    eprintln!(
        "kill -9 with {deferred} deferred, {before} of {n} at the backed-up endpoint: duplicates {} / {}",
        backed.distinct_events().1,
        healthy.distinct_events().1
    );
}

#[test]
fn sigterm_mid_burst_records_what_was_read_without_errors() {
    // A burst of jobs with progress updates to many webhooks: at SIGTERM the record stage is
    // still working through what intake read. Every part it hands work to must still be there.
    let redis = RedisServer::start();
    let mut service = Service::start(&redis, &[("WEBHOOK_SHUTDOWN_TIMEOUT_MS", "3000")]);
    let receiver = Receiver::ok();
    for i in 0..20 {
        register(
            &redis,
            &service,
            &format!("wh_1_s{i:02}"),
            webhook(&receiver.url(&format!("/s{i}")), &["job.*"]),
        );
    }
    let mut conn = redis.conn();
    for i in 0..300 {
        let job = format!("burst-{i}");
        let mut pipe = ::redis::pipe();
        pipe.publish(
            "job_submitted",
            json!({"job_id": job, "timestamp": i}).to_string(),
        )
        .publish(
            "update_job_progress",
            json!({"job_id": job, "progress": 50, "timestamp": i}).to_string(),
        )
        .publish(
            "complete_job",
            json!({"job_id": job, "timestamp": i}).to_string(),
        );
        let _: Vec<u64> = pipe
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }
    wait_until(LONG, "intake to read some of the burst", || {
        (received(&service) >= 100).then_some(())
    });
    let (code, _) = service
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s"));
    assert_eq!(code, 0, "exit code after SIGTERM");
    let log = service.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "errors in a clean stop:\n{}",
        errors.join("\n")
    );
}

#[test]
fn a_progress_update_superseded_while_redis_refuses_writes_is_forgotten_once_it_accepts_them() {
    // Progress updates held by the throttle supersede each other; each superseded one is
    // forgotten in Redis. While Redis refuses that write (here an ACL takes HDEL away; in
    // production, an outage), the forgetting must be tried again, not dropped: else the record
    // stays leased, and goes out after a restart, after its job's end.
    let redis = RedisServer::start();
    let service = Service::start(&redis, &[("WEBHOOK_PROGRESS_THROTTLE_MS", "500")]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_p",
        webhook(&receiver.url("/p"), &["job.*"]),
    );
    let acl = |rule: &str| {
        let _: () = ::redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg(rule)
            .query(&mut redis.conn())
            .unwrap_or_else(|e| panic!("ACL SETUSER default {rule}: {e}"));
    };
    acl("-hdel");
    for progress in [10, 20, 30, 40, 50] {
        redis.publish(
            "update_job_progress",
            &json!({"job_id": "p-1", "progress": progress, "timestamp": progress}).to_string(),
        );
    }
    wait_until(LONG, "the updates to be read", || {
        (received(&service) == 5).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    acl("+hdel");
    // The first and the last update are sent; the three between were superseded.
    receiver.wait_for(2, LONG);
    wait_until(LONG, "every record to be forgotten", || {
        (redis_count(&redis, "HLEN", "webhooks:deliveries") == 0).then_some(())
    });
}

#[test]
fn sigterm_records_every_event_redis_had_sent_before_the_service_unsubscribed() {
    // Redis counts a pub/sub message as delivered once it is in the subscriber's socket. A stop
    // that closes the socket with messages still in it loses them: the service unsubscribes
    // first, then records what Redis sent before the unsubscribe took effect.
    let redis = RedisServer::start();
    let mut service = Service::start(&redis, &[("WEBHOOK_SHUTDOWN_TIMEOUT_MS", "5000")]);
    let receiver = Receiver::start(|_, _| Reply::Slow(Duration::from_millis(20)));
    register(&redis, &service, "wh_1_u", hook(&receiver.url("/u"), 5));
    let n = 3000;
    let mut pipe = ::redis::pipe();
    for i in 0..n {
        pipe.publish(
            "complete_job",
            format!(r#"{{"job_id":"job-{i}","timestamp":{i}}}"#),
        );
    }
    let subscribers: Vec<u64> = pipe
        .query(&mut redis.conn())
        .unwrap_or_else(|e| panic!("publish: {e}"));
    assert!(
        subscribers.iter().all(|s| *s == 1),
        "the service was not subscribed"
    );
    let (code, _) = service
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s"));
    assert_eq!(code, 0, "exit code after SIGTERM");
    let delivered = receiver.distinct_events().0;
    let due = redis_count(&redis, "ZCARD", "webhooks:due");
    assert_eq!(
        due as usize + delivered,
        n,
        "{due} due + {delivered} delivered of {n} sent to the service:\n{}",
        service.log_text()
    );
}
