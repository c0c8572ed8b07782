//! Per-job order (issue #11): no `job.progress` after the job's terminal event, first attempts in
//! source order (also when deliveries wait in Redis), and an `X-Event-Sequence` that lets a
//! receiver tell a late retry from news.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::receiver::{Captured, Receiver, Reply};
use crate::support::redis::RedisServer;
use crate::support::service::Service;
use crate::support::wait_until;
use crate::{register, setup, webhook};

/// Jobs per burst.
const JOBS: usize = 200;

/// Publishes, for each job, `job_submitted`, four `update_job_progress` (10, 50, 90, 99) and
/// `complete_job`, one job's six messages within a few ms (one pipeline).
fn publish_bursts(redis: &RedisServer, prefix: &str) {
    let mut conn = redis.conn();
    for j in 0..JOBS {
        let job = format!("{prefix}-{j}");
        let mut pipe = ::redis::pipe();
        pipe.cmd("PUBLISH")
            .arg("job_submitted")
            .arg(json!({"job_id": job, "service_required": "comfyui", "timestamp": 1}).to_string())
            .ignore();
        for progress in [10, 50, 90, 99] {
            pipe.cmd("PUBLISH")
                .arg("update_job_progress")
                .arg(
                    json!({"job_id": job, "worker_id": "w1", "progress": progress, "timestamp": 2})
                        .to_string(),
                )
                .ignore();
        }
        pipe.cmd("PUBLISH")
            .arg("complete_job")
            .arg(
                json!({"job_id": job, "worker_id": "w1", "result": {"ok": true}, "timestamp": 3})
                    .to_string(),
            )
            .ignore();
        pipe.query::<()>(&mut conn)
            .unwrap_or_else(|e| panic!("publish a burst: {e}"));
    }
}

/// Where an event stands in its job's source order: submitted, its status change, progress 10,
/// its status change, the later progress updates, completed, its status change.
fn rank(body: &Value) -> u64 {
    let data = &body["data"];
    match body["event_type"].as_str().unwrap_or("") {
        "job.submitted" => 0,
        "job.status_changed" => match data["new_status"].as_str().unwrap_or("") {
            "pending" => 1,
            "in_progress" => 3,
            _ => 1001,
        },
        "job.progress" => match data["progress"].as_u64().unwrap_or(0) {
            10 => 2,
            p => 4 + p,
        },
        "job.completed" => 1000,
        other => panic!("unexpected event type {other}"),
    }
}

fn sequence(request: &Captured) -> u64 {
    let value = request.header("x-event-sequence").unwrap_or_else(|| {
        panic!(
            "no X-Event-Sequence on {}",
            request.header("x-event-id").unwrap_or("?")
        )
    });
    value
        .parse()
        .unwrap_or_else(|_| panic!("X-Event-Sequence is not a number: {value:?}"))
}

/// Every delivery of one job, in arrival order.
fn by_job(requests: &[Captured]) -> BTreeMap<String, Vec<Captured>> {
    let mut jobs: BTreeMap<String, Vec<Captured>> = BTreeMap::new();
    for request in requests {
        let job = request.json()["data"]["job_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        jobs.entry(job).or_default().push(request.clone());
    }
    jobs
}

/// Per job, over first attempts (the first request of each `X-Event-ID`): no progress after the
/// terminal event, and source order, by the events' own order and by their sequence.
fn check_order(requests: &[Captured]) {
    let jobs = by_job(requests);
    assert_eq!(jobs.len(), JOBS, "every job was delivered");
    for (job, got) in &jobs {
        let mut completed = false;
        let mut seen_ids = HashSet::new();
        let mut last: Option<(u64, u64, String)> = None;
        for request in got {
            let body = request.json();
            let event_type = body["event_type"].as_str().unwrap_or("").to_string();
            let id = request.header("x-event-id").unwrap_or("").to_string();
            if !seen_ids.insert(id) {
                continue; // a retry: it may come after later events (its sequence tells)
            }
            if event_type == "job.completed" {
                completed = true;
            }
            assert!(
                !(completed && event_type == "job.progress"),
                "job {job}: progress {} arrived after job.completed",
                body["data"]["progress"]
            );
            let (rank, seq) = (rank(&body), sequence(request));
            if let Some((last_rank, last_seq, last_type)) = &last {
                assert!(
                    rank > *last_rank && seq > *last_seq,
                    "job {job}: first attempt of {event_type} (rank {rank}, sequence {seq}) arrived after {last_type} (rank {last_rank}, sequence {last_seq})"
                );
            }
            last = Some((rank, seq, event_type));
        }
        assert!(completed, "job {job}: job.completed never arrived");
        assert_eq!(
            last.map(|l| l.2).as_deref(),
            Some("job.status_changed"),
            "job {job}: the last new event is the status change to completed"
        );
    }
}

/// Waits until every job's last event (its status change to completed) has arrived, then a
/// throttle period more, so a trailing progress update sent late would be seen.
fn wait_for_all(receiver: &Receiver) -> Vec<Captured> {
    wait_for_all_within(receiver, Duration::from_secs(30))
}

/// [`wait_for_all`], waiting up to `limit`.
fn wait_for_all_within(receiver: &Receiver, limit: Duration) -> Vec<Captured> {
    wait_until(limit, "every job to complete", || {
        let done = receiver
            .requests()
            .iter()
            .filter(|r| {
                let body = r.json();
                body["event_type"] == "job.status_changed"
                    && body["data"]["new_status"] == "completed"
            })
            .count();
        (done >= JOBS).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    receiver.requests()
}

#[test]
fn progress_never_follows_the_terminal_event_and_first_attempts_keep_source_order() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_order",
        webhook(&receiver.url("/o"), &["job.*"]),
    );
    publish_bursts(&redis, "ord");
    let got = wait_for_all(&receiver);
    check_order(&got);
    // Every first progress update of a burst goes out at once; nothing is retried here.
    let (distinct, repeated) = receiver.distinct_events();
    assert_eq!(repeated, 0, "no retries against an endpoint answering 200");
    assert!(distinct >= JOBS * 6, "{distinct} events delivered");
}

#[test]
fn source_order_holds_when_deliveries_wait_in_redis() {
    // A small queue and an endpoint taking 2 ms per request: the burst overflows into Redis
    // and comes back through the poller.
    let (redis, service) = setup(&[("WEBHOOK_QUEUE_CAPACITY", "100")]);
    let receiver = Receiver::start(|_, _| {
        std::thread::sleep(Duration::from_millis(2));
        Reply::ok()
    });
    register(
        &redis,
        &service,
        "wh_1_spill",
        webhook(&receiver.url("/s"), &["job.*"]),
    );
    publish_bursts(&redis, "spill");
    let got = wait_for_all(&receiver);
    check_order(&got);
    let spilled = service.health()["deliveries"]["spilled"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        spilled > 0,
        "nothing waited in Redis: the test did not test that path"
    );
}

#[test]
fn source_order_holds_when_a_backed_up_endpoints_deliveries_go_straight_to_redis() {
    // A small parking space, and an endpoint that answers in 300 ms for its first two seconds
    // (slow, one attempt at a time): most of the burst finds it backed up and is recorded
    // straight into the due set; it comes back through the poller once the endpoint is quick.
    let (redis, service) = setup(&[
        ("WEBHOOK_QUEUE_CAPACITY", "100"),
        ("WEBHOOK_SLOW_ATTEMPT_MS", "200"),
    ]);
    let receiver = Receiver::slow_at_first(Duration::from_secs(2), Duration::from_millis(300));
    register(
        &redis,
        &service,
        "wh_1_backed_up",
        webhook(&receiver.url("/b"), &["job.*"]),
    );
    publish_bursts(&redis, "backed");
    // What went to the due set comes back at the pace the endpoint had when it was sent there
    // (300 ms an attempt): 21-25 s on a quiet 2-core machine, so a minute's bound.
    let got = wait_for_all_within(&receiver, Duration::from_secs(60));
    check_order(&got);
    let deliveries = &service.health()["deliveries"];
    assert!(
        deliveries["deferred"].as_u64().unwrap_or(0) > 0,
        "nothing was recorded straight into the due set: the test did not test that path ({deliveries})"
    );
    // Nothing lost, nothing twice: every delivery created was sent once or superseded.
    let (distinct, repeated) = receiver.distinct_events();
    assert_eq!(repeated, 0, "an event was delivered twice");
    let created = deliveries["created"].as_u64().unwrap_or(0);
    let throttled = deliveries["throttled"].as_u64().unwrap_or(0);
    assert_eq!(distinct as u64, created - throttled, "{deliveries}");
}

#[test]
fn a_receiver_that_fails_first_attempts_tells_stale_retries_by_the_sequence() {
    let (redis, service) = setup(&[]);
    // The first attempt of every progress update and of every other job's submission fails:
    // their retries arrive after later events of the same job.
    let failed = Arc::new(Mutex::new(HashSet::new()));
    let receiver = Receiver::start(move |request, _| {
        let body = request.json();
        let job: usize = body["data"]["job_id"]
            .as_str()
            .and_then(|j| j.strip_prefix("stale-"))
            .and_then(|j| j.parse().ok())
            .unwrap_or(0);
        let fail_first = match body["event_type"].as_str() {
            Some("job.progress") => true,
            Some("job.submitted") => job % 2 == 0,
            _ => false,
        };
        let id = request.header("x-event-id").unwrap_or("").to_string();
        let first = failed.lock().map(|mut seen| seen.insert(id));
        if fail_first && first.unwrap_or(false) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let mut hook = webhook(&receiver.url("/r"), &["job.*"]);
    hook["retry_config"] = json!({"max_attempts": 5, "initial_delay_ms": 300, "backoff_multiplier": 2, "max_delay_ms": 5000});
    register(&redis, &service, "wh_1_stale", hook);
    publish_bursts(&redis, "stale");
    wait_for_all(&receiver);
    // Every retry succeeds on its second attempt: wait for all of them.
    let got = wait_until(Duration::from_secs(30), "every retry", || {
        let health = service.health();
        let pending = health["deliveries"]["created"].as_u64()?
            - health["deliveries"]["succeeded"].as_u64()?
            - health["deliveries"]["throttled"].as_u64()?;
        (pending == 0).then(|| receiver.requests())
    });
    check_order(&got);

    // The receiver's logic: apply an event only if its sequence is newer than the last one
    // applied for the job; otherwise it is stale.
    let mut applied: HashMap<String, (u64, Value)> = HashMap::new();
    let mut stale = 0;
    let mut sequence_of: HashMap<String, u64> = HashMap::new();
    for request in &got {
        let body = request.json();
        let seq = sequence(request);
        let id = request.header("x-event-id").unwrap_or("").to_string();
        let first_seq = *sequence_of.entry(id.clone()).or_insert(seq);
        assert_eq!(
            first_seq, seq,
            "event {id}: every attempt carries the same sequence"
        );
        let job = body["data"]["job_id"].as_str().unwrap_or("").to_string();
        match applied.get(&job) {
            Some((last, _)) if *last >= seq => stale += 1,
            _ => {
                applied.insert(job, (seq, body));
            }
        }
    }
    assert!(
        stale > 0,
        "no retry arrived after a later event: the test did not test that"
    );
    assert_eq!(applied.len(), JOBS);
    for (job, (_, state)) in &applied {
        assert_eq!(
            (
                state["event_type"].as_str(),
                state["data"]["new_status"].as_str()
            ),
            (Some("job.status_changed"), Some("completed")),
            "job {job}: the receiver's state went back to {state}"
        );
    }
}

#[test]
fn the_sequence_follows_source_order_when_two_instances_share_the_events() {
    let redis = RedisServer::start();
    let first = Service::start(&redis, &[]);
    let second = Service::start(&redis, &[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &first,
        "wh_1_two",
        webhook(&receiver.url("/t"), &["job.*"]),
    );
    wait_until(
        Duration::from_secs(10),
        "the second instance to load it",
        || (second.health()["processor"]["total_webhooks"] == 1).then_some(()),
    );
    publish_bursts(&redis, "two");
    let got = wait_for_all(&receiver);
    // Both instances claimed events: the numbers come from both.
    let claimed_elsewhere = |s: &Service| {
        s.health()["events"]["claimed_elsewhere"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        claimed_elsewhere(&first) > 0 && claimed_elsewhere(&second) > 0,
        "one instance claimed everything: the test did not test that"
    );
    // Each event once, and within a job, a later event (by source order) has a higher number,
    // whichever instance claimed it. (Arrival order across instances is not promised.)
    let (distinct, repeated) = receiver.distinct_events();
    assert_eq!(repeated, 0, "an event was delivered twice");
    assert!(distinct >= JOBS * 6, "{distinct} events delivered");
    for (job, requests) in by_job(&got) {
        let mut ranked: Vec<(u64, u64)> = requests
            .iter()
            .map(|r| (rank(&r.json()), sequence(r)))
            .collect();
        ranked.sort();
        assert!(
            ranked.windows(2).all(|w| w[0].1 < w[1].1),
            "job {job}: sequence not in source order: {ranked:?}"
        );
    }
}
