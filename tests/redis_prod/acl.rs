//! An ACL user made by the README's exact rule runs the whole pipeline, and Redis refuses it
//! nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::call;
use crate::support::receiver::{Receiver, Reply};
use crate::support::redis::{RedisServer, add_event};
use crate::support::service::Service;
use crate::support::wait_until;

use super::{LONG, job, jobs_received};

const PASSWORD: &str = "s3cret-Pass_word";

/// The README's `ACL SETUSER webhook-service ...` line, with our password.
fn readme_rule() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("ACL SETUSER webhook-service "))
        .unwrap_or_else(|| panic!("the README documents no `ACL SETUSER webhook-service` rule"));
    line.split_whitespace()
        .map(|word| match word {
            ">CHANGE-ME" => format!(">{PASSWORD}"),
            other => other.to_string(),
        })
        .collect()
}

fn api(service: &Service, method: &str, path: &str, body: Option<Value>) -> Value {
    let answer = call(
        service,
        method,
        path,
        body.map(|b| b.to_string()).as_deref(),
        &[],
    );
    assert!(
        answer.status < 300,
        "{method} {path}: {} {}",
        answer.status,
        answer.text
    );
    answer.body
}

/// Makes the README's user on `redis`; returns its URL.
fn make_user(redis: &RedisServer) -> String {
    let rule = readme_rule();
    let _: () = ::redis::cmd(&rule[0])
        .arg(&rule[1..])
        .query(&mut redis.conn())
        .unwrap_or_else(|e| panic!("the README's rule: {e}"));
    format!(
        "redis://webhook-service:{PASSWORD}@127.0.0.1:{}",
        redis.port
    )
}

/// Adds a `complete_job` entry to the stream `events`.
fn add(conn: &mut ::redis::Connection, message: String) {
    if let Err(e) = add_event(conn, "complete_job", &message) {
        panic!("XADD: {e}");
    }
}

/// Checks the user at `url` is refused what the service never needs.
fn assert_limited(url: &str) {
    let mut user = ::redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("log in as the user: {e}"));
    for refused in [
        vec!["GET", "other:key"],
        vec!["FLUSHALL"],
        vec!["KEYS", "*"],
    ] {
        let answer: ::redis::RedisResult<::redis::Value> =
            ::redis::cmd(refused[0]).arg(&refused[1..]).query(&mut user);
        assert!(
            answer.as_ref().is_err_and(|e| e.code() == Some("NOPERM")),
            "{refused:?}: {answer:?}"
        );
    }
}

/// A stream entry (`job-ghost-0`) left pending by a consumer whose instance is gone.
fn leave_a_ghost_entry(admin: &mut ::redis::Connection) {
    let _: () = ::redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("events")
        .arg("webhook-service")
        .arg("$")
        .arg("MKSTREAM")
        .query(admin)
        .unwrap_or_else(|e| panic!("XGROUP CREATE: {e}"));
    add(admin, job("ghost", 0));
    let _: ::redis::Value = ::redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("webhook-service")
        .arg("ghost")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg("events")
        .arg(">")
        .query(admin)
        .unwrap_or_else(|e| panic!("XREADGROUP: {e}"));
}

/// A receiver that fails the first attempt of every event (each is delivered on a retry), and
/// the count of requests it had.
fn fails_each_event_once() -> (Receiver, Arc<AtomicUsize>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let failed_once = Arc::new(Mutex::new(HashSet::new()));
    let counted = attempts.clone();
    let receiver = Receiver::start(move |request, _| {
        counted.fetch_add(1, Ordering::Relaxed);
        let id = request.header("x-event-id").unwrap_or_default().to_string();
        let first = failed_once
            .lock()
            .map(|mut f| f.insert(id))
            .unwrap_or(false);
        if first {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    (receiver, attempts)
}

/// Creates (and edits) a webhook through the API; returns its id.
fn create(service: &Service, url: &str, events: &[&str], retry: Value) -> String {
    let created = api(
        service,
        "POST",
        "/webhooks",
        Some(json!({"url": url, "events": events, "retry_config": retry})),
    );
    let id = created["data"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api(
        service,
        "PUT",
        &format!("/webhooks/{id}"),
        Some(json!({"headers": {"X-Acl-Test": "1"}})),
    );
    id
}

#[test]
fn a_user_limited_to_the_documented_rule_runs_the_whole_pipeline() {
    let redis = RedisServer::start();
    let mut admin = redis.conn();
    let user_url = make_user(&redis);
    assert_limited(&user_url);
    let _: () = ::redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query(&mut admin)
        .unwrap_or_else(|e| panic!("ACL LOG RESET: {e}"));
    leave_a_ghost_entry(&mut admin);
    let service = Service::start(
        &redis,
        &[("REDIS_URL", &user_url), ("WEBHOOK_EVENT_STREAM", "events")],
    );
    let (flaky, attempts) = fails_each_event_once();
    let broken = Receiver::start(|_, _| Reply::status(500));
    let retry = json!({"max_attempts": 5, "initial_delay_ms": 100, "backoff_multiplier": 2, "max_delay_ms": 500});
    let flaky_id = create(&service, &flaky.url("/acl"), &["complete_job"], retry);
    let dead_id = create(
        &service,
        &broken.url("/dead"),
        &["job_failed"],
        json!({"max_attempts": 1}),
    );
    wait_until(LONG, "both webhooks to load", || {
        (service.health()["processor"]["total_webhooks"] == 2).then_some(())
    });

    let n = 5;
    for i in 0..n {
        redis.publish("complete_job", &job("acl-p", i));
        add(&mut admin, job("acl-s", i));
    }
    redis.publish(
        "job_failed",
        r#"{"job_id":"acl-f","error":"x","timestamp":1}"#,
    );
    // Each event's first attempt failed, so a second request for it is its retry, delivered.
    let mut expected: Vec<String> = (0..n)
        .flat_map(|i| [format!("job-acl-p-{i}"), format!("job-acl-s-{i}")])
        .collect();
    expected.push("job-ghost-0".into());
    wait_until(LONG, "every event delivered on a retry", || {
        let mut requests: HashMap<String, usize> = HashMap::new();
        for request in flaky.requests() {
            if let Some(id) = request.json()["data"]["job_id"].as_str() {
                *requests.entry(id.to_string()).or_default() += 1;
            }
        }
        expected
            .iter()
            .all(|id| requests.get(id).is_some_and(|n| *n >= 2))
            .then_some(())
    });
    let letter = wait_until(LONG, "a dead letter", || {
        let list = api(
            &service,
            "GET",
            &format!("/dead-letters?webhook_id={dead_id}"),
            None,
        );
        (list["count"] == 1).then(|| list["data"][0]["id"].as_str().map(str::to_string))
    })
    .unwrap_or_else(|| panic!("the dead letter has no id"));
    api(
        &service,
        "POST",
        &format!("/dead-letters/{letter}/redeliver"),
        None,
    );
    broken.wait_for(2, LONG);
    api(&service, "POST", "/test-receivers", Some(json!({})));
    api(
        &service,
        "GET",
        &format!("/webhooks/{flaky_id}/stats"),
        None,
    );
    api(&service, "GET", "/stats/summary", None);
    api(&service, "GET", "/deliveries/recent", None);

    // Redis refused this user nothing, and the service met no refusal.
    let log: Vec<::redis::Value> = ::redis::cmd("ACL")
        .arg("LOG")
        .query(&mut admin)
        .unwrap_or_else(|e| panic!("ACL LOG: {e}"));
    assert!(log.is_empty(), "Redis refused the service: {log:?}");
    assert!(
        !service.log_text().contains("NOPERM"),
        "{}",
        service.log_text()
    );
    assert!(attempts.load(Ordering::Relaxed) >= 2 * expected.len());
}

/// A stream entry read while its deliveries cannot be recorded stays pending; read again (after
/// a reconnect, as after a failover), it must be delivered, not taken for a duplicate of itself.
/// Redis refusing the record script to this user is the fault here.
#[test]
fn a_stream_entry_whose_record_failed_is_delivered_when_read_again() {
    let redis = RedisServer::start();
    let mut admin = redis.conn();
    let user_url = make_user(&redis);
    let service = Service::start(
        &redis,
        &[("REDIS_URL", &user_url), ("WEBHOOK_EVENT_STREAM", "events")],
    );
    let receiver = Receiver::ok();
    crate::register(
        &redis,
        &service,
        "wh_1_replay",
        crate::webhook(&receiver.url("/replay"), &["complete_job"]),
    );
    let acl = |admin: &mut ::redis::Connection, change: &str| {
        let _: () = ::redis::cmd("ACL")
            .arg("SETUSER")
            .arg("webhook-service")
            .arg(change)
            .query(admin)
            .unwrap_or_else(|e| panic!("ACL SETUSER {change}: {e}"));
    };
    acl(&mut admin, "-evalsha");
    add(&mut admin, job("replayed", 0));
    wait_until(LONG, "the record to fail", || {
        (service.health()["events"]["unrecorded"].as_u64() >= Some(1)).then_some(())
    });
    acl(&mut admin, "+evalsha");
    // Every connection of the service dropped: the reader reconnects and reads its pending entry.
    let _: ::redis::Value = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg("webhook-service")
        .query(&mut admin)
        .unwrap_or_else(|e| panic!("CLIENT KILL: {e}"));
    let delivered = crate::support::try_wait_until(LONG, || {
        jobs_received(&receiver)
            .0
            .contains("job-replayed-0")
            .then_some(())
    });
    assert!(
        delivered.is_some(),
        "the entry was dropped on its second reading: {}",
        service.health()["events"]
    );
}

/// Credentials Redis or a sentinel refuses stop start-up, naming the setting to fix.
#[test]
fn refused_credentials_stop_start_up_naming_the_setting() {
    let redis = RedisServer::start();
    make_user(&redis);
    let wrong = format!("redis://webhook-service:wrong@127.0.0.1:{}", redis.port);
    let (code, stderr) = super::start_and_expect_exit(&[("REDIS_URL", &wrong)]);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(
        stderr.contains("REDIS_URL") && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "the password is not printed: {stderr}"
    );

    // A sentinel with a password of its own (it need not see a master to refuse us).
    let dir = std::env::temp_dir().join(format!("webhook-service-sentinel-auth-{}", redis.port));
    let _ = std::fs::create_dir_all(&dir);
    let config = dir.join("sentinel.conf");
    let _ = std::fs::write(
        &config,
        format!("sentinel monitor mymaster 127.0.0.1 {} 1\n", redis.port),
    );
    let sentinel = RedisServer::start_on(
        crate::support::free_port(),
        Some(config),
        &[
            "--dir".into(),
            dir.display().to_string(),
            "--sentinel".into(),
        ],
    );
    let _: () = ::redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("resetpass")
        .arg(">sentinel-pass")
        .query(&mut sentinel.conn())
        .unwrap_or_else(|e| panic!("a password for the sentinel: {e}"));
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port);
    let (code, stderr) =
        super::start_and_expect_exit(&[("REDIS_URL", &url), ("REDIS_SENTINEL_PASSWORD", "not-it")]);
    drop(sentinel);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("REDIS_SENTINEL_PASSWORD"), "{stderr}");
}
