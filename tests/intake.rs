//! Intake: every source channel, malformed input, duplicates, throttling, registry changes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::receiver::Receiver;
use crate::support::wait_until;
use crate::{SOON, register, setup, webhook};

#[test]
fn a_completed_job_reaches_a_webhook() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_a",
        webhook(&receiver.url("/hook"), &["complete_job"]),
    );
    redis.publish(
        "complete_job",
        r#"{"job_id":"j1","worker_id":"w1","result":{"ok":true},"timestamp":1700000000000}"#,
    );
    let got = receiver.wait_for(1, SOON);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].json()["data"]["job_id"], "j1");
}

/// One message per real source channel (reference sections 3.3 and 12).
const SOURCES: [(&str, &str); 15] = [
    (
        "job_submitted",
        r#"{"job_id":"job-1","service_required":"comfyui","priority":5,"payload":{},"timestamp":1}"#,
    ),
    (
        "worker_status",
        r#"{"worker_id":"w1","old_status":"idle","new_status":"busy","current_job_id":"job-1","timestamp":2}"#,
    ),
    (
        "update_job_progress",
        r#"{"job_id":"job-1","worker_id":"w1","progress":10,"timestamp":3}"#,
    ),
    (
        "complete_job",
        r#"{"job_id":"job-1","worker_id":"w1","result":{},"timestamp":4}"#,
    ),
    (
        "job_failed",
        r#"{"job_id":"job-2","worker_id":"w1","error":"x","timestamp":5}"#,
    ),
    (
        "cancel_job",
        r#"{"job_id":"job-3","worker_id":"w1","reason":"Job cancelled by user","timestamp":6}"#,
    ),
    (
        "worker:events",
        r#"{"type":"worker_connected","worker_id":"w1","machine_id":"m1","timestamp":7}"#,
    ),
    (
        "worker:events",
        r#"{"type":"worker_disconnected","worker_id":"w1","machine_id":"m1","timestamp":8}"#,
    ),
    (
        "machine:startup:events",
        r#"{"event_type":"startup_complete","machine_config":{"machine_id":"m1","services":[]},"worker_id":"w1","total_startup_time_ms":900,"timestamp":9}"#,
    ),
    (
        "machine:startup:events",
        r#"{"event_type":"shutdown","machine_id":"m1","reason":"scale down","timestamp":10}"#,
    ),
    (
        "machine:status:m1",
        r#"{"machine_id":"m1","update_type":"full","status":{"ok":true},"structure":{},"health_url":"http://m1/health","timestamp":11}"#,
    ),
    (
        "workflow_submitted",
        r#"{"workflow_id":"wf-1","first_job_id":"job-1","total_steps":1,"timestamp":12}"#,
    ),
    (
        "workflow_completed",
        r#"{"workflow_id":"wf-1","status":"completed","timestamp":13}"#,
    ),
    (
        "workflow_failed",
        r#"{"workflow_id":"wf-2","failed_job_id":"job-2","error":"x","timestamp":14}"#,
    ),
    (
        "machine:startup:events",
        r#"{"event_type":"startup_step","machine_id":"m1","timestamp":15}"#,
    ),
];

const CANONICAL: [&str; 16] = [
    "job.submitted",
    "job.assigned",
    "job.progress",
    "job.completed",
    "job.failed",
    "job.cancelled",
    "job.status_changed",
    "worker.status_changed",
    "worker.connected",
    "worker.disconnected",
    "machine.startup_complete",
    "machine.shutdown",
    "machine.status_changed",
    "workflow.submitted",
    "workflow.completed",
    "workflow.failed",
];

#[test]
fn every_canonical_type_is_delivered_from_its_source_channel() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_all",
        webhook(&receiver.url("/all"), &["*"]),
    );
    for (channel, message) in SOURCES {
        assert_eq!(
            redis.publish(channel, message),
            1,
            "nobody subscribed to {channel}"
        );
    }
    // 14 primary events (the startup step describes nothing) + job.assigned + 6 status changes.
    let got = receiver.wait_for(21, SOON);
    std::thread::sleep(Duration::from_millis(300));
    let got_all = receiver.requests();
    assert_eq!(got_all.len(), got.len(), "unexpected extra deliveries");
    let types: BTreeSet<String> = got
        .iter()
        .map(|r| r.json()["event_type"].as_str().unwrap_or("").to_string())
        .collect();
    let expected: BTreeSet<String> = CANONICAL.iter().map(|s| s.to_string()).collect();
    assert_eq!(types, expected);
    let find = |t: &str| {
        got.iter()
            .find(|r| r.json()["event_type"] == t)
            .map(|r| r.json()["data"].clone())
    };
    assert_eq!(
        find("job.assigned"),
        Some(json!({"job_id": "job-1", "worker_id": "w1", "timestamp": 2}))
    );
    assert_eq!(
        find("machine.startup_complete").map(|d| d["machine_id"].clone()),
        Some(Value::from("m1")),
        "machine_id comes from machine_config"
    );
    // Canonical data: identity fields first, then the message as published.
    let submitted = find("job.submitted").unwrap_or(Value::Null);
    let keys: Vec<&str> = submitted
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            "job_id",
            "job_type",
            "service_required",
            "priority",
            "payload",
            "timestamp"
        ]
    );
    let changes: Vec<Value> = got
        .iter()
        .filter(|r| r.json()["event_type"] == "job.status_changed")
        .map(|r| r.json()["data"].clone())
        .collect();
    // Deliveries to one endpoint may arrive in any order; the source timestamps give the order.
    let mut job1: Vec<&Value> = changes.iter().filter(|d| d["job_id"] == "job-1").collect();
    job1.sort_by_key(|d| d["timestamp"].as_u64());
    let job1: Vec<(Value, Value)> = job1
        .iter()
        .map(|d| (d["old_status"].clone(), d["new_status"].clone()))
        .collect();
    assert_eq!(
        job1,
        [
            (Value::Null, json!("pending")),
            (json!("pending"), json!("assigned")),
            (json!("assigned"), json!("in_progress")),
            (json!("in_progress"), json!("completed")),
        ]
    );
    let health = service.health();
    assert_eq!(health["events"]["received"], 15);
    assert_eq!(health["events"]["malformed"], 0);
}

#[test]
fn b1_pattern_messages_are_delivered_under_the_legacy_name() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_m",
        webhook(&receiver.url("/m"), &["machine_status"]),
    );
    redis.publish(
        "machine:status:gpu-7",
        r#"{"update_type":"partial","status":{"gpu":"ok"},"timestamp":5}"#,
    );
    let got = receiver.wait_for(1, SOON);
    let body = got[0].json();
    assert_eq!(body["event_type"], "machine_status");
    assert_eq!(
        body["data"]["machine_id"], "gpu-7",
        "id taken from the channel"
    );
}

#[test]
fn malformed_messages_on_every_channel_are_counted_and_skipped() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_all",
        webhook(&receiver.url("/all"), &["job.completed"]),
    );
    let channels = [
        "job_submitted",
        "update_job_progress",
        "complete_job",
        "job_failed",
        "cancel_job",
        "worker_status",
        "workflow_submitted",
        "workflow_completed",
        "workflow_failed",
        "worker:events",
        "machine:startup:events",
        "job.events",
        "worker.events",
        "machine.events",
        "machine:status:m1",
    ];
    let bad = [
        "{not json",
        "[1,2]",
        "{}",
        "",
        "\"text\"",
        "{\"job_id\":null}",
    ];
    for channel in channels {
        for payload in bad {
            redis.publish(channel, payload);
        }
    }
    // A huge message that is not JSON either.
    redis.publish("complete_job", &"x".repeat(2 * 1024 * 1024));
    redis.publish(
        "complete_job",
        r#"{"job_id":"after-the-storm","timestamp":1}"#,
    );
    let got = receiver.wait_for(1, SOON);
    assert_eq!(got[0].json()["data"]["job_id"], "after-the-storm");
    let health = service.health();
    // On machine:status:<id> the channel names the machine, so `{}` and `{"job_id":null}` are
    // valid (if empty) status reports there.
    let expected = (channels.len() * bad.len() - 2 + 1) as u64;
    assert_eq!(health["events"]["malformed"], expected);
    let by_source = health["events"]["malformed_by_source"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for channel in channels {
        let source = if channel.starts_with("machine:status:") {
            "machine:status:*"
        } else {
            channel
        };
        assert!(
            by_source.get(source).and_then(Value::as_u64).unwrap_or(0) >= bad.len() as u64 - 2,
            "{source}: {by_source:?}"
        );
    }
    let log = service.log_text();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("skipping a message on complete_job"))
        .count();
    assert!(
        warnings <= 4,
        "malformed messages are logged once per kind, not each time: {warnings}"
    );
}

#[test]
fn b11_a_republished_completion_is_delivered_once() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_a",
        webhook(&receiver.url("/a"), &["complete_job"]),
    );
    let message = r#"{"job_id":"job-1","worker_id":"w1","result":{},"timestamp":100}"#;
    redis.publish("complete_job", message);
    for attempt in 0..3 {
        let again = format!(
            r#"{{"job_id":"job-1","worker_id":"w1","result":{{}},"timestamp":100,"retry_verification":true,"retry_attempt":{attempt}}}"#
        );
        redis.publish("complete_job", &again);
    }
    redis.publish("complete_job", r#"{"job_id":"job-2","timestamp":101}"#);
    let got = receiver.wait_for(2, SOON);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.requests().len(), 2, "duplicates were delivered");
    assert!(!got[0].body_str().contains("retry_attempt"));
    assert_eq!(service.health()["events"]["duplicate"], 3);
}

#[test]
fn progress_is_throttled_and_the_last_update_is_always_sent() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_p",
        webhook(&receiver.url("/p"), &["update_job_progress"]),
    );
    for progress in 1..=10 {
        redis.publish(
            "update_job_progress",
            &format!(
                r#"{{"job_id":"job-1","worker_id":"w1","progress":{},"timestamp":{progress}}}"#,
                progress * 10
            ),
        );
    }
    let first = receiver.wait_for(1, SOON);
    assert_eq!(first[0].json()["data"]["progress"], 10);
    let both = receiver.wait_for(2, SOON);
    let gap = both[1].at.duration_since(both[0].at);
    assert_eq!(
        both[1].json()["data"]["progress"],
        100,
        "the trailing update is the last one"
    );
    assert!(
        gap >= Duration::from_millis(900),
        "sent {gap:?} after the first"
    );
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(receiver.requests().len(), 2);
}

#[test]
fn filters_apply_to_later_events_of_a_job() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    let mut hook = webhook(&receiver.url("/f"), &["job.submitted", "job.completed"]);
    hook["filters"] = json!({"job_types": ["comfyui"], "worker_ids": ["w1"]});
    register(&redis, &service, "wh_1_f", hook);
    redis.publish(
        "job_submitted",
        r#"{"job_id":"a","service_required":"comfyui","timestamp":1}"#,
    );
    redis.publish(
        "job_submitted",
        r#"{"job_id":"b","service_required":"a1111","timestamp":1}"#,
    );
    redis.publish(
        "complete_job",
        r#"{"job_id":"a","worker_id":"w1","timestamp":2}"#,
    );
    redis.publish(
        "complete_job",
        r#"{"job_id":"b","worker_id":"w1","timestamp":2}"#,
    );
    redis.publish(
        "complete_job",
        r#"{"job_id":"a","worker_id":"w2","timestamp":3}"#,
    );
    redis.publish(
        "complete_job",
        r#"{"job_id":"marker","worker_id":"w1","timestamp":4}"#,
    );
    let got = receiver.wait_for(3, SOON);
    std::thread::sleep(Duration::from_millis(300));
    let mut seen: Vec<(String, String)> = receiver
        .requests()
        .iter()
        .map(|r| {
            let b = r.json();
            (
                b["event_type"].as_str().unwrap_or("").into(),
                b["data"]["job_id"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    // Attempts to one endpoint run on several threads: order is not promised.
    seen.sort();
    assert_eq!(got.len(), 3);
    assert_eq!(
        seen,
        [
            ("job.completed".to_string(), "a".to_string()),
            ("job.completed".to_string(), "marker".to_string()),
            ("job.submitted".to_string(), "a".to_string()),
        ]
    );
}

#[test]
fn b8_an_invalid_webhook_does_not_stop_the_others() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    let mut conn = redis.conn();
    for (id, text) in [
        ("wh_0_broken", "{not json".to_string()),
        (
            "wh_0_null",
            json!({"url": "http://127.0.0.1:1/", "events": null}).to_string(),
        ),
        (
            "wh_0_ftp",
            json!({"url": "ftp://x/", "events": ["*"]}).to_string(),
        ),
    ] {
        let _: () = ::redis::cmd("HSET")
            .arg("webhooks:registry")
            .arg(id)
            .arg(text)
            .query(&mut conn)
            .unwrap_or(());
    }
    register(
        &redis,
        &service,
        "wh_1_ok",
        webhook(&receiver.url("/ok"), &["complete_job", "not_a_type"]),
    );
    redis.publish("complete_job", r#"{"job_id":"j","timestamp":1}"#);
    receiver.wait_for(1, SOON);
    let health = service.health();
    assert_eq!(
        health["processor"]["total_webhooks"], 1,
        "invalid entries are skipped"
    );
}

#[test]
fn webhook_changes_apply_without_a_restart() {
    let (redis, service) = setup(&[("WEBHOOK_REGISTRY_REFRESH_MS", "600000")]);
    let receiver = Receiver::ok();
    let mut conn = redis.conn();
    let hook = webhook(&receiver.url("/late"), &["job.completed"]);
    let _: () = ::redis::cmd("HSET")
        .arg("webhooks:registry")
        .arg("wh_1_late")
        .arg(hook.to_string())
        .query(&mut conn)
        .unwrap_or(());
    // With a long refresh period, the change notification is what makes it visible.
    let _: () = ::redis::cmd("PUBLISH")
        .arg("webhooks:changed")
        .arg("wh_1_late")
        .query(&mut conn)
        .unwrap_or(());
    wait_until(SOON, "the webhook to load", || {
        (service.health()["processor"]["total_webhooks"] == 1).then_some(())
    });
    redis.publish("complete_job", r#"{"job_id":"j","timestamp":1}"#);
    receiver.wait_for(1, SOON);
    let _: () = ::redis::cmd("HDEL")
        .arg("webhooks:registry")
        .arg("wh_1_late")
        .query(&mut conn)
        .unwrap_or(());
    let _: () = ::redis::cmd("PUBLISH")
        .arg("webhooks:changed")
        .arg("wh_1_late")
        .query(&mut conn)
        .unwrap_or(());
    wait_until(SOON, "the webhook to go", || {
        (service.health()["processor"]["total_webhooks"] == 0).then_some(())
    });
    redis.publish("complete_job", r#"{"job_id":"j2","timestamp":2}"#);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn intake_resubscribes_after_redis_restarts_without_a_log_storm() {
    let (mut redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_a",
        webhook(&receiver.url("/a"), &["job.completed"]),
    );
    redis.kill();
    wait_until(SOON, "/health to report the outage", || {
        let health = service.try_health()?;
        (health["status"] == "degraded" && health["redis"]["connected"] == false).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();
    // The restarted Redis kept nothing: store the webhook again, as the original would.
    let hook = webhook(&receiver.url("/a"), &["job.completed"]);
    let _: () = ::redis::cmd("HSET")
        .arg("webhooks:registry")
        .arg("wh_1_a")
        .arg(hook.to_string())
        .query(&mut redis.conn())
        .unwrap_or(());
    wait_until(SOON, "the service to subscribe again", || {
        (service.try_health()?["status"] == "ok").then_some(())
    });
    // Until the registry refresh sees the webhook, events match nothing: publish until one lands.
    let mut n = 0;
    let got = wait_until(SOON, "a delivery after the restart", || {
        n += 1;
        redis.publish(
            "complete_job",
            &format!(r#"{{"job_id":"after-{n}","timestamp":1}}"#),
        );
        std::thread::sleep(Duration::from_millis(50));
        receiver.requests().first().cloned()
    });
    assert!(
        got.json()["data"]["job_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("after-"))
    );
    let log = service.log_text();
    let warnings = log.lines().filter(|l| l.contains(" WARN ")).count();
    assert!(warnings <= 3, "{warnings} warnings for one outage:\n{log}");
}
