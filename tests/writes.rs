//! Read-your-writes (issue #10): once `POST`, `PUT` or `DELETE /webhooks…` has answered, this
//! instance matches events against the new state. Every event is published the instant the API
//! call returns; a sentinel webhook that receives every event tells when the service has
//! handled it, and `deliveries.created` counts exactly which webhooks it matched.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::receiver::{Captured, Receiver};
use crate::support::redis::RedisServer;
use crate::support::service::Service;
use crate::support::{try_wait_until, wait_until};
use crate::{Answer, SOON, call, setup};

/// Bound for a few hundred deliveries to arrive on a loaded machine.
const LONG: Duration = Duration::from_secs(60);

fn send(service: &Service, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let text = body.map(Value::to_string);
    call(service, method, path, text.as_deref(), &[])
}

fn created(service: &Service, body: Value) -> String {
    let answer = send(service, "POST", "/webhooks", Some(&body));
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.body["data"]["id"].as_str().unwrap_or("").to_string()
}

fn submit(redis: &RedisServer, job: &str, job_type: &str) {
    let message = json!({"job_id": job, "service_required": job_type, "timestamp": 1});
    assert_eq!(redis.publish("job_submitted", &message.to_string()), 1);
}

/// The `job_id` of every request on `path`, with the webhook it was addressed to.
fn jobs_on(receiver: &Receiver, path: &str) -> Vec<(String, String)> {
    receiver
        .on(path)
        .iter()
        .map(|r: &Captured| {
            let body = r.json();
            (
                body["data"]["job_id"].as_str().unwrap_or("").to_string(),
                body["webhook_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Whether `job` reaches `path` within a few seconds.
fn arrives(receiver: &Receiver, path: &str, job: &str) -> bool {
    try_wait_until(SOON, || {
        jobs_on(receiver, path)
            .iter()
            .any(|(j, _)| j == job)
            .then_some(())
    })
    .is_some()
}

/// Once the sentinel has every event: `expected` events reached `path`, each a job whose name
/// starts with `allowed`.
fn only_allowed_arrived(receiver: &Receiver, path: &str, expected: usize, allowed: &str) {
    wait_until(LONG, "the sentinel to receive every event", || {
        (receiver.on("/all").len() >= 2 * expected).then_some(())
    });
    for (job, webhook) in jobs_on(receiver, path) {
        assert!(
            job.starts_with(allowed),
            "{job} reached webhook {webhook} although it was published after the change that excludes it"
        );
    }
    assert_eq!(receiver.on(path).len(), expected);
}

fn deliveries_created(service: &Service) -> u64 {
    service.health()["deliveries"]["created"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn an_event_published_right_after_a_create_or_delete_sees_it() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    created(
        &service,
        json!({"url": receiver.url("/all"), "events": ["job_submitted"]}),
    );
    let rounds = 200;
    for i in 0..rounds {
        // Each webhook takes only its own job type: each event has one webhook besides the
        // sentinel, while that webhook exists.
        let id = created(
            &service,
            json!({"url": receiver.url("/new"), "events": ["job_submitted"],
                   "filters": {"job_types": [format!("t{i}")]}}),
        );
        let job = format!("after-create-{i}");
        submit(&redis, &job, &format!("t{i}"));
        // Delivered before the delete, which would otherwise drop it (deleted means gone).
        assert!(
            arrives(&receiver, "/new", &job),
            "{job}, published right after webhook {id} was created, was not delivered"
        );
        let answer = send(&service, "DELETE", &format!("/webhooks/{id}"), None);
        assert_eq!(answer.status, 200, "{}", answer.text);
        submit(&redis, &format!("after-delete-{i}"), &format!("t{i}"));
    }
    only_allowed_arrived(&receiver, "/new", rounds, "after-create");
    // Matching is exact: the sentinel twice a round, the new webhook once; never a deleted one.
    assert_eq!(deliveries_created(&service), 3 * rounds as u64);
}

#[test]
fn an_event_published_right_after_a_pause_or_resume_sees_it() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    created(
        &service,
        json!({"url": receiver.url("/all"), "events": ["job_submitted"]}),
    );
    let paused = created(
        &service,
        json!({"url": receiver.url("/paused"), "events": ["job_submitted"]}),
    );
    let path = format!("/webhooks/{paused}");
    let rounds = 200;
    for i in 0..rounds {
        let answer = send(&service, "PUT", &path, Some(&json!({"active": false})));
        assert_eq!(answer.status, 200, "{}", answer.text);
        let job = format!("while-paused-{i}");
        submit(&redis, &job, "t");
        // Matched (the sentinel has it) before the resume: an event still unread when a change
        // is answered may be matched against either state.
        assert!(
            arrives(&receiver, "/all", &job),
            "{job} did not reach the sentinel"
        );
        let answer = send(&service, "PUT", &path, Some(&json!({"active": true})));
        assert_eq!(answer.status, 200, "{}", answer.text);
        let job = format!("while-active-{i}");
        submit(&redis, &job, "t");
        // Delivered before the next pause, which would otherwise hold it as a dead letter.
        assert!(
            arrives(&receiver, "/paused", &job),
            "{job}, published right after the webhook was resumed, was not delivered"
        );
    }
    only_allowed_arrived(&receiver, "/paused", rounds, "while-active");
    // Nothing published while paused was even matched (it would be a dead letter).
    assert_eq!(deliveries_created(&service), 3 * rounds as u64);
    let dead = send(&service, "GET", "/dead-letters", None);
    assert_eq!(dead.body["count"], 0, "{}", dead.text);
}
