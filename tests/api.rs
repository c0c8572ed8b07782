//! The management and monitoring API: every route's success and error paths, the original's
//! envelopes and storage format, auth, masking, rotation and CORS.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::receiver::{Receiver, Reply};
use crate::support::service::Service;
use crate::support::wait_until;
use crate::{Answer, SOON, call, register, setup};

fn post(service: &Service, path: &str, body: &Value) -> Answer {
    call(service, "POST", path, Some(&body.to_string()), &[])
}

fn get(service: &Service, path: &str) -> Answer {
    call(service, "GET", path, None, &[])
}

/// Creates a webhook through the API and waits until this instance matches against it.
fn create(service: &Service, body: Value) -> Value {
    let answer = post(service, "/webhooks", &body);
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let id = answer.body["data"]["id"].as_str().unwrap_or("").to_string();
    wait_until(SOON, "the new webhook to load", || {
        let h = service.health();
        (h["processor"]["total_webhooks"].as_u64()? >= 1).then_some(())
    });
    let _ = id;
    answer.body["data"].clone()
}

#[test]
fn webhooks_are_created_listed_updated_and_deleted() {
    let (redis, service) = setup(&[]);
    let created = create(
        &service,
        json!({"url": "https://example.com/hook", "events": ["complete_job", "job.*"], "static": true, "headers": {"X-Team": "a"}, "retry_config": {"max_attempts": 5}}),
    );
    let id = created["id"].as_str().unwrap_or("");
    assert!(id.starts_with("wh_") && id.len() == 26, "{id}");
    let secret = created["secret"].as_str().unwrap_or("").to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 38,
        "generated secret {secret}"
    );
    assert_eq!(created["static"], true, "b8: static is kept on create");
    assert_eq!(
        created["headers"],
        json!({"X-Team": "a"}),
        "b8: headers are kept on create"
    );
    assert_eq!(
        created["retry_config"],
        json!({"max_attempts": 5, "initial_delay_ms": 5000, "backoff_multiplier": 4, "max_delay_ms": 36000000}),
        "b4: a partial retry_config is merged over the defaults"
    );

    // Stored as the original stores it, readable by the original.
    let stored: String = ::redis::cmd("HGET")
        .arg("webhooks:registry")
        .arg(id)
        .query(&mut redis.conn())
        .unwrap_or_default();
    let stored: Value = serde_json::from_str(&stored).unwrap_or(Value::Null);
    let keys: Vec<&str> = stored
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            "id",
            "created_at",
            "updated_at",
            "consecutive_failures",
            "disconnected",
            "retry_config",
            "url",
            "events",
            "active",
            "secret",
            "filters",
            "headers",
            "static"
        ]
    );
    assert_eq!(
        stored["secret"],
        secret.as_str(),
        "secrets stay plain text in the registry"
    );
    let active: bool = ::redis::cmd("SISMEMBER")
        .arg("webhooks:active")
        .arg(id)
        .query(&mut redis.conn())
        .unwrap_or(false);
    assert!(active);

    // Listings mask the secret.
    let list = get(&service, "/webhooks");
    assert_eq!(list.status, 200);
    assert_eq!(list.body["success"], true);
    assert_eq!(list.body["count"], 1);
    let listed = &list.body["data"][0];
    assert_eq!(listed["id"], id);
    let masked = listed["secret"].as_str().unwrap_or("").to_string();
    assert_eq!(masked, format!("whsec_****{}", &secret[secret.len() - 4..]));
    assert!(!list.body.to_string().contains(&secret));
    let one = get(&service, &format!("/webhooks/{id}"));
    assert_eq!(one.status, 200);
    assert_eq!(one.body["data"]["secret"], masked.as_str());
    let full = get(&service, &format!("/webhooks/{id}/secret"));
    assert_eq!(full.body["data"]["secret"], secret.as_str());

    // The monitor UI's edit form sends the whole object back, masked secret and server fields.
    let mut edited = listed.clone();
    edited["url"] = json!("https://example.com/other");
    edited["consecutive_failures"] = json!(99);
    let updated = call(
        &service,
        "PUT",
        &format!("/webhooks/{id}"),
        Some(&edited.to_string()),
        &[],
    );
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    assert_eq!(updated.body["data"]["url"], "https://example.com/other");
    assert_eq!(
        updated.body["data"]["consecutive_failures"], 0,
        "server-owned fields are ignored"
    );
    assert_eq!(
        get(&service, &format!("/webhooks/{id}/secret")).body["data"]["secret"],
        secret.as_str(),
        "a masked secret leaves the secret unchanged"
    );
    assert_eq!(updated.body["data"]["created_at"], created["created_at"]);

    // A partial update, and a bad one that names the field and changes nothing.
    let partial = call(
        &service,
        "PUT",
        &format!("/webhooks/{id}"),
        Some(r#"{"active": false}"#),
        &[],
    );
    assert_eq!(partial.body["data"]["active"], false);
    assert_eq!(partial.body["data"]["url"], "https://example.com/other");
    let bad = call(
        &service,
        "PUT",
        &format!("/webhooks/{id}"),
        Some(r#"{"events": null}"#),
        &[],
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["field"], "events");
    assert_eq!(
        get(&service, &format!("/webhooks/{id}")).body["data"]["events"],
        json!(["complete_job", "job.*"])
    );

    // Reconnect clears a disconnection, whatever set it.
    let _: () = ::redis::cmd("HSET")
        .arg("webhooks:registry")
        .arg(id)
        .arg({
            let mut w = stored.clone();
            w["disconnected"] = json!(true);
            w["consecutive_failures"] = json!(12);
            w.to_string()
        })
        .query(&mut redis.conn())
        .unwrap_or(());
    let reconnected = call(
        &service,
        "POST",
        &format!("/webhooks/{id}/reconnect"),
        None,
        &[],
    );
    assert_eq!(
        reconnected.body,
        json!({"success": true, "message": format!("Webhook {id} reconnected successfully")})
    );
    let after = get(&service, &format!("/webhooks/{id}")).body["data"].clone();
    assert_eq!(
        (
            after["disconnected"].clone(),
            after["consecutive_failures"].clone()
        ),
        (json!(false), json!(0))
    );

    let deleted = call(&service, "DELETE", &format!("/webhooks/{id}"), None, &[]);
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.body,
        json!({"success": true, "message": "Webhook deleted successfully"})
    );
    assert_eq!(
        call(&service, "DELETE", &format!("/webhooks/{id}"), None, &[]).status,
        404
    );
    assert_eq!(
        get(&service, &format!("/webhooks/{id}")).body,
        json!({"success": false, "error": "Webhook not found"})
    );
}

#[test]
fn bad_requests_get_clear_json_errors() {
    let (_redis, service) = setup(&[("WEBHOOK_MAX_BODY_BYTES", "4096")]);
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        (
            "POST",
            "/webhooks",
            Some("{not json".into()),
            400,
            "Invalid JSON",
        ),
        (
            "POST",
            "/webhooks",
            Some("[1]".into()),
            400,
            "request body must be a JSON object",
        ),
        (
            "POST",
            "/webhooks",
            Some(r#"{"events":["*"]}"#.into()),
            400,
            "url is required",
        ),
        (
            "POST",
            "/webhooks",
            Some(r#"{"url":"ftp://x/","events":["*"]}"#.into()),
            400,
            "url must use http or https",
        ),
        (
            "POST",
            "/webhooks",
            Some(r#"{"url":"http://x/","events":[]}"#.into()),
            400,
            "events must not be empty",
        ),
        (
            "POST",
            "/webhooks",
            Some(r#"{"url":"http://x/","events":["job.nope"]}"#.into()),
            400,
            "events contains an unknown event type \"job.nope\"",
        ),
        (
            "POST",
            "/webhooks",
            Some(r#"{"url":"http://x/","events":["*"],"filters":{"colour":[]}}"#.into()),
            400,
            "filters.colour is not a known filter",
        ),
        (
            "POST",
            "/webhooks",
            Some(r#"{"url":"http://x/","events":["*"],"retry_config":{"max_attempts":0}}"#.into()),
            400,
            "retry_config.max_attempts must be between 1 and 50",
        ),
        (
            "POST",
            "/webhooks",
            Some(
                r#"{"url":"http://x/","events":["*"],"retry_config":{"backoff_multiplier":"2"}}"#
                    .into(),
            ),
            400,
            "retry_config.backoff_multiplier must be a number",
        ),
        (
            "POST",
            "/webhooks",
            Some(r#"{"url":"http://x/","events":["*"],"secret":"short"}"#.into()),
            400,
            "secret must be 8 to 512 characters",
        ),
        (
            "POST",
            "/webhooks",
            Some(r#"{"url":"http://x/","events":["*"],"colour":"red"}"#.into()),
            400,
            "colour is not a webhook field",
        ),
        (
            "POST",
            "/webhooks",
            Some(format!(
                r#"{{"url":"http://x/","events":["*"],"pad":"{}"}}"#,
                "x".repeat(8192)
            )),
            413,
            "Request body too large",
        ),
        ("PATCH", "/webhooks", None, 405, "Method not allowed"),
        ("GET", "/nowhere", None, 404, "Endpoint not found"),
        (
            "GET",
            "/webhooks/wh_0_unknown",
            None,
            404,
            "Webhook not found",
        ),
        (
            "PUT",
            "/webhooks/wh_0_unknown",
            Some(r#"{"active":true}"#.into()),
            404,
            "Webhook not found",
        ),
        (
            "POST",
            "/webhooks/wh_0_unknown/test",
            None,
            404,
            "Webhook not found",
        ),
        (
            "GET",
            "/webhooks/wh_0_unknown/stats",
            None,
            404,
            "Webhook not found",
        ),
        (
            "GET",
            "/webhooks/wh_0_unknown/deliveries",
            None,
            404,
            "Webhook not found",
        ),
        (
            "POST",
            "/webhooks/wh_0_unknown/reconnect",
            None,
            404,
            "Webhook not found",
        ),
        (
            "GET",
            "/webhooks/wh_0_unknown/secret",
            None,
            404,
            "Webhook not found",
        ),
        (
            "POST",
            "/webhooks/wh_0_unknown/secret/rotate",
            None,
            404,
            "Webhook not found",
        ),
        (
            "GET",
            "/deliveries/recent?limit=-5",
            None,
            400,
            "limit must be a positive whole number",
        ),
        (
            "GET",
            "/test-receivers/nope/requests",
            None,
            404,
            "Test receiver not found",
        ),
    ];
    for (method, path, body, status, error) in cases {
        let answer = call(&service, method, path, body.as_deref(), &[]);
        assert_eq!(answer.status, status, "{method} {path}: {:?}", answer.body);
        assert_eq!(answer.body["success"], false, "{method} {path}");
        assert_eq!(
            answer.body["error"], error,
            "{method} {path}: {:?}",
            answer.body
        );
        assert!(
            answer
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json"))
        );
    }
    let wrong = call(&service, "DELETE", "/stats/summary", None, &[]);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
    // The service is still fine.
    assert_eq!(get(&service, "/health").status, 200);
}

#[test]
fn test_route_reports_the_real_outcome_of_signed_deliveries() {
    let (_redis, service) = setup(&[]);
    let ok = Receiver::ok();
    let failing = Receiver::start(|_, _| Reply::Status(500, vec![], "boom".into()));
    let good = create(
        &service,
        json!({"url": ok.url("/t"), "events": ["complete_job", "job.failed", "job.*"]}),
    );
    let bad = create(
        &service,
        json!({"url": failing.url("/f"), "events": ["complete_job"]}),
    );
    let answer = post(
        &service,
        &format!("/webhooks/{}/test", good["id"].as_str().unwrap_or("")),
        &Value::Null,
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["success"], true, "{:?}", answer.body);
    let results = answer.body["data"]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let types: Vec<&str> = results
        .iter()
        .map(|r| r["event_type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["complete_job", "job.failed", "webhook.test"]);
    assert!(
        results
            .iter()
            .all(|r| r["delivered"] == true && r["status_code"] == 200)
    );
    let got = ok.wait_for(3, SOON);
    assert!(got.iter().all(|r| {
        r.header("x-webhook-signature")
            .is_some_and(|s| s.starts_with("sha256="))
    }));
    assert_eq!(got[0].json()["metadata"]["test_event"], true);

    let answer = post(
        &service,
        &format!("/webhooks/{}/test", bad["id"].as_str().unwrap_or("")),
        &Value::Null,
    );
    assert_eq!(answer.body["success"], false);
    assert_eq!(answer.body["data"]["results"][0]["status_code"], 500);
    assert_eq!(answer.body["error"], "Test delivery failed: HTTP 500");
}

#[test]
fn stats_count_attempts_and_events_and_record_response_times() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::start(|_, n| {
        if n == 0 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let hook = create(
        &service,
        json!({"url": receiver.url("/s"), "events": ["complete_job"], "retry_config": {"initial_delay_ms": 50}}),
    );
    let id = hook["id"].as_str().unwrap_or("").to_string();
    redis.publish("complete_job", r#"{"job_id":"j","timestamp":1}"#);
    receiver.wait_for(2, SOON);
    let stats = wait_until(SOON, "stats to be recorded", || {
        let s = get(&service, &format!("/webhooks/{id}/stats")).body["data"].clone();
        (s["total_deliveries"] == 2 && s["total_events"] == 1).then_some(s)
    });
    assert_eq!(stats["successful_deliveries"], 1);
    assert_eq!(stats["failed_deliveries"], 1);
    assert_eq!(stats["successful_events"], 1);
    assert_eq!(stats["failed_events"], 0);
    assert!(
        stats["average_response_time_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{stats}"
    );
    assert!(
        stats["p95_response_time_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{stats}"
    );
    assert!(stats["last_success_at"].as_u64().is_some());

    let deliveries = get(&service, &format!("/webhooks/{id}/deliveries?limit=1"));
    assert_eq!(deliveries.body["limit"], 1);
    assert_eq!(deliveries.body["data"]["total_count"], 2);
    let newest = &deliveries.body["data"]["attempts"][0];
    assert_eq!(newest["attempt_number"], 2);
    assert_eq!(newest["success"], true);

    let recent = get(&service, "/deliveries/recent?limit=50");
    let entries = recent.body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["response_status"], 503);
    assert!(
        entries
            .iter()
            .all(|e| e["response_time_ms"].as_f64().is_some()
                && e["payload"]["data"]["job_id"] == "j")
    );

    let summary = get(&service, "/stats/summary").body["data"].clone();
    assert_eq!(summary["delivery_stats"]["total_deliveries"], 2);
    assert_eq!(summary["delivery_stats"]["successful_deliveries"], 1);
    assert_eq!(summary["delivery_stats"]["failed_deliveries"], 1);
    assert_eq!(summary["delivery_stats"]["success_rate"], 50.0);
    assert_eq!(summary["webhook_summary"]["total_webhooks"], 1);
    assert_eq!(summary["webhook_summary"]["total_deliveries_today"], 2);
    assert_eq!(summary["event_processing"]["totalEvents"], 1);
}

#[test]
fn history_of_a_burst_counts_every_attempt_once() {
    // Written by the recorder in batches: sums, lists and their trims must come out as if each
    // attempt had been recorded on its own.
    let (redis, service) = setup(&[("WEBHOOK_DISCONNECT_AFTER", "10000")]);
    let good = Receiver::ok();
    let bad = Receiver::start(|_, _| Reply::status(500));
    let ok_id = create(
        &service,
        json!({"url": good.url("/ok"), "events": ["complete_job"]}),
    )["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let bad_id = create(
        &service,
        json!({"url": bad.url("/bad"), "events": ["complete_job"], "retry_config": {"max_attempts": 1}}),
    )["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let n = 150;
    let mut pipe = ::redis::pipe();
    for i in 0..n {
        pipe.cmd("PUBLISH")
            .arg("complete_job")
            .arg(format!(
                r#"{{"job_id":"burst-{i}","timestamp":{}}}"#,
                1000 + i
            ))
            .ignore();
    }
    if let Err(e) = pipe.query::<()>(&mut redis.conn()) {
        panic!("publish the burst: {e}");
    }
    good.wait_for(n, SOON);
    bad.wait_for(n, SOON);

    let stats_of = |id: &str| get(&service, &format!("/webhooks/{id}/stats")).body["data"].clone();
    let ok = wait_until(SOON, "the good webhook's stats", || {
        Some(stats_of(&ok_id)).filter(|s| s["total_events"] == n)
    });
    assert_eq!(ok["total_deliveries"], n, "{ok}");
    assert_eq!(ok["successful_deliveries"], n, "{ok}");
    assert_eq!(ok["failed_deliveries"], 0, "{ok}");
    assert_eq!(ok["successful_events"], n, "{ok}");
    assert!(ok["last_success_at"].as_u64().is_some(), "{ok}");
    assert!(ok.get("last_failure_at").is_none(), "{ok}");
    let failed = wait_until(SOON, "the failing webhook's stats", || {
        Some(stats_of(&bad_id)).filter(|s| s["total_events"] == n)
    });
    assert_eq!(failed["total_deliveries"], n, "{failed}");
    assert_eq!(failed["failed_deliveries"], n, "{failed}");
    assert_eq!(failed["failed_events"], n, "{failed}");
    assert_eq!(failed["successful_events"], 0, "{failed}");
    assert!(failed.get("last_success_at").is_none(), "{failed}");

    // The newest 100 attempts are kept per webhook, each a different event.
    let attempts = get(&service, &format!("/webhooks/{ok_id}/deliveries?limit=100"));
    assert_eq!(attempts.body["data"]["total_count"], 100);
    let listed = attempts.body["data"]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let events: std::collections::HashSet<String> = listed
        .iter()
        .filter_map(|a| a["event_id"].as_str().map(String::from))
        .collect();
    assert_eq!(events.len(), 100);
    assert!(listed.iter().all(|a| a["success"] == true));

    // The delivery log holds every attempt once, newest first.
    let recent = get(&service, "/deliveries/recent?limit=1000").body["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(recent.len(), 2 * n);
    for id in [&ok_id, &bad_id] {
        let jobs: std::collections::HashSet<&str> = recent
            .iter()
            .filter(|e| e["webhook_id"] == id.as_str())
            .filter_map(|e| e["payload"]["data"]["job_id"].as_str())
            .collect();
        assert_eq!(jobs.len(), n, "webhook {id}");
    }
    let newest = recent.first().and_then(|e| e["timestamp"].as_u64());
    let oldest = recent.last().and_then(|e| e["timestamp"].as_u64());
    assert!(newest >= oldest, "{newest:?} {oldest:?}");
}

#[test]
fn the_token_guards_every_route_but_health_and_capture_urls() {
    let token = "0123456789abcdef0123";
    let (_redis, service) = setup(&[("WEBHOOK_API_TOKEN", token)]);
    let denied = get(&service, "/webhooks");
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
    assert_eq!(denied.body["success"], false);
    let wrong = call(
        &service,
        "GET",
        "/webhooks",
        None,
        &[("Authorization", "Bearer 0123456789abcdef0124")],
    );
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {token}");
    let allowed = call(
        &service,
        "GET",
        "/webhooks",
        None,
        &[("Authorization", &bearer)],
    );
    assert_eq!(allowed.status, 200);
    assert_eq!(get(&service, "/health").status, 200);
    assert_eq!(
        call(&service, "POST", "/webhook-monitor/s1", Some("{}"), &[]).status,
        200
    );
    assert_eq!(get(&service, "/webhook-monitor/s1/requests").status, 401);
}

#[test]
fn cors_reflects_allowed_origins_only() {
    let (_redis, service) = setup(&[(
        "CORS_ORIGINS",
        "https://monitor.example,http://127.0.0.1:3333",
    )]);
    let allowed = call(
        &service,
        "GET",
        "/webhooks",
        None,
        &[("Origin", "https://monitor.example")],
    );
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://monitor.example")
    );
    assert_eq!(allowed.header("vary"), Some("Origin"));
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    let other = call(
        &service,
        "GET",
        "/webhooks",
        None,
        &[("Origin", "http://localhost.evil.com")],
    );
    assert_eq!(other.status, 200);
    assert_eq!(
        other.header("access-control-allow-origin"),
        None,
        "b9: no substring matches"
    );
    let preflight = call(
        &service,
        "OPTIONS",
        "/webhooks/x",
        None,
        &[
            ("Origin", "http://127.0.0.1:3333"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET,POST,PUT,DELETE,PATCH,OPTIONS")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("Content-Type,Authorization,X-Requested-With,Accept,Origin")
    );
    let refused = call(
        &service,
        "OPTIONS",
        "/webhooks",
        None,
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "DELETE"),
        ],
    );
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body["success"], false);
}

#[test]
fn rotation_signs_with_both_secrets_until_the_grace_period_ends() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    let hook = create(
        &service,
        json!({"url": receiver.url("/r"), "events": ["complete_job"], "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
    );
    let id = hook["id"].as_str().unwrap_or("").to_string();
    let rotated = post(
        &service,
        &format!("/webhooks/{id}/secret/rotate"),
        &json!({"grace_period_ms": 1500}),
    );
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let new_secret = rotated.body["data"]["secret"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(new_secret.starts_with("whsec_"));
    let secrets = get(&service, &format!("/webhooks/{id}/secret")).body["data"].clone();
    assert_eq!(
        secrets["previous_secret"],
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    );
    // Wait until this instance signs with the new secret.
    wait_until(SOON, "the rotation to load", || {
        redis.publish(
            "complete_job",
            &format!(
                r#"{{"job_id":"probe-{}","timestamp":1}}"#,
                receiver.requests().len()
            ),
        );
        std::thread::sleep(Duration::from_millis(50));
        receiver
            .requests()
            .last()
            .and_then(|r| {
                r.header("webhook-signature")
                    .map(|s| s.split(' ').count() == 2)
            })
            .filter(|two| *two)
    });
    let during = receiver.requests().last().cloned();
    let during = during.unwrap_or_else(|| panic!("no delivery"));
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(
        crate::signatures::verify(&during, &new_secret, &new_secret),
        "ok"
    );
    assert_eq!(
        crate::signatures::verify(&during, old, &new_secret),
        "ok",
        "the old secret verifies during the grace period"
    );
    std::thread::sleep(Duration::from_millis(1600));
    let before = receiver.requests().len();
    redis.publish("complete_job", r#"{"job_id":"after-grace","timestamp":1}"#);
    let after = receiver
        .wait_for(before + 1, SOON)
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no delivery"));
    assert_eq!(
        after
            .header("webhook-signature")
            .map(|s| s.split(' ').count()),
        Some(1)
    );
    assert_eq!(
        crate::signatures::verify(&after, &new_secret, &new_secret),
        "ok"
    );
    assert_ne!(
        crate::signatures::verify(&after, old, &new_secret),
        "ok",
        "the old secret no longer verifies"
    );
}

#[test]
fn test_receivers_capture_deliveries_to_the_service_itself() {
    // No private networks allowed: the service's own capture URL is still a valid target.
    let (redis, service) = setup(&[("WEBHOOK_ALLOWED_NETWORKS", "")]);
    let created = post(&service, "/test-receivers", &Value::Null);
    assert_eq!(created.status, 201, "{:?}", created.body);
    let receiver_id = created.body["data"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(receiver_id.len(), 16);
    assert_eq!(created.body["data"]["expires_in_hours"], 24);
    let url = format!(
        "http://127.0.0.1:{}/test-receivers/{receiver_id}/webhook",
        service.port
    );
    create(
        &service,
        json!({"url": url, "events": ["complete_job", "job_failed"]}),
    );
    redis.publish("complete_job", r#"{"job_id":"self","timestamp":1}"#);
    let requests = wait_until(SOON, "the capture", || {
        let r = get(&service, &format!("/test-receivers/{receiver_id}/requests"));
        (r.body["data"]["total_requests"] == 1).then_some(r)
    });
    let captured = &requests.body["data"]["requests"][0];
    assert_eq!(captured["method"], "POST");
    assert_eq!(captured["headers"]["x-webhook-event"], "complete_job");
    assert_eq!(captured["user_agent"], "EMP-Job-Queue-Webhook/1.0");
    assert_eq!(captured["body"]["data"]["job_id"], "self");
    assert!(
        captured["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("req_"))
    );
    let listed = get(&service, "/test-receivers");
    assert_eq!(listed.body["total"], 1);
    assert_eq!(listed.body["data"][0]["request_count"], 1);
    let cleared = call(
        &service,
        "DELETE",
        &format!("/test-receivers/{receiver_id}/requests"),
        None,
        &[],
    );
    assert_eq!(cleared.body["cleared_count"], 1);
    let gone = post(&service, "/test-receivers/nope/webhook", &json!({}));
    assert_eq!(gone.status, 404);
    assert_eq!(
        gone.body["message"],
        "This test receiver URL may have expired or been deleted"
    );
}

#[test]
fn monitor_sessions_capture_in_memory() {
    let (_redis, service) = setup(&[]);
    for n in 0..3 {
        let answer = post(&service, "/webhook-monitor/session_1", &json!({"n": n}));
        assert_eq!(answer.body["session_id"], "session_1");
    }
    let listed = get(&service, "/webhook-monitor/session_1/requests?limit=2");
    assert_eq!(listed.body["data"]["total_requests"], 3);
    assert_eq!(listed.body["data"]["returned_count"], 2);
    assert_eq!(
        listed.body["data"]["requests"][0]["body"]["n"], 2,
        "newest first"
    );
    let cleared = call(
        &service,
        "DELETE",
        "/webhook-monitor/session_1/requests",
        None,
        &[],
    );
    assert_eq!(cleared.body["cleared_count"], 3);
}

#[test]
fn a_webhook_created_on_one_instance_is_delivered_by_another() {
    let (redis, first) = setup(&[]);
    let mut second_env = crate::support::service::Service::start(
        &redis,
        &[("WEBHOOK_REGISTRY_REFRESH_MS", "600000")],
    );
    let receiver = Receiver::ok();
    let hook = create(
        &first,
        json!({"url": receiver.url("/x"), "events": ["complete_job"]}),
    );
    // The second instance hears the change on webhooks:changed (its periodic refresh is off).
    wait_until(SOON, "the second instance to load it", || {
        (second_env.health()["processor"]["total_webhooks"] == 1).then_some(())
    });
    drop(first);
    redis.publish("complete_job", r#"{"job_id":"j","timestamp":1}"#);
    let got = receiver.wait_for(1, SOON);
    assert_eq!(got[0].header("x-webhook-id"), hook["id"].as_str());
    second_env.kill();
}

#[test]
fn an_original_registry_entry_loads_and_delivers() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    // Exactly what the original stored: partial retry_config (B4), `priorities`, unknown extras.
    let original = json!({
        "id": "wh_1759579200000_k3j5h7g9q",
        "created_at": 1759579200000u64,
        "updated_at": 1759579300000u64,
        "consecutive_failures": 2,
        "disconnected": false,
        "retry_config": {"max_attempts": 3},
        "url": receiver.url("/orig"),
        "events": ["complete_job", "job_failed"],
        "active": true,
        "secret": "legacy-secret",
        "filters": {"priorities": ["50"], "custom_filters": {"x": 1}},
        "owner": "team-a",
    });
    register(&redis, &service, "wh_1759579200000_k3j5h7g9q", original);
    redis.publish("complete_job", r#"{"job_id":"j","timestamp":1}"#);
    let got = receiver.wait_for(1, SOON);
    assert_eq!(got[0].header("x-webhook-event"), Some("complete_job"));
    let listed = get(&service, "/webhooks/wh_1759579200000_k3j5h7g9q");
    assert_eq!(
        listed.body["data"]["owner"], "team-a",
        "unknown fields are kept"
    );
    // The success reset the failure count, in place.
    let stored: Value = wait_until(SOON, "the reset", || {
        let text: String = ::redis::cmd("HGET")
            .arg("webhooks:registry")
            .arg("wh_1759579200000_k3j5h7g9q")
            .query(&mut redis.conn())
            .ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        (v["consecutive_failures"] == 0).then_some(v)
    });
    assert_eq!(
        stored["retry_config"],
        json!({"max_attempts": 3}),
        "the stored config is not rewritten"
    );
}

#[test]
fn openapi_document_is_served() {
    let (_redis, service) = setup(&[]);
    let doc = get(&service, "/openapi.json");
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.0.3");
    assert!(doc.body["paths"]["/webhooks/{id}"]["put"].is_object());
}

/// The value of one sample line of a Prometheus exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[test]
fn metrics_move_as_deliveries_happen() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::start(|_, n| {
        if n % 2 == 0 {
            Reply::ok()
        } else {
            Reply::status(500)
        }
    });
    let hook = create(
        &service,
        json!({"url": receiver.url("/m"), "events": ["complete_job"], "retry_config": {"initial_delay_ms": 20}}),
    );
    let id = hook["id"].as_str().unwrap_or("").to_string();
    let before = get(&service, "/metrics");
    assert_eq!(before.status, 200);
    assert!(
        before
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    assert_eq!(
        sample(&before.text, "webhook_deliveries_total{outcome=\"2xx\"}"),
        0.0
    );
    for i in 0..4 {
        redis.publish(
            "complete_job",
            &format!(r#"{{"job_id":"m-{i}","timestamp":{i}}}"#),
        );
    }
    let text = wait_until(SOON, "four successes in the metrics", || {
        let text = get(&service, "/metrics").text;
        (sample(&text, "webhook_deliveries_total{outcome=\"2xx\"}") == 4.0).then_some(text)
    });
    assert!(sample(&text, "webhook_deliveries_total{outcome=\"5xx\"}") >= 1.0);
    assert_eq!(
        sample(
            &text,
            "webhook_events_total{type=\"job.completed\",source=\"complete_job\"}"
        ),
        4.0
    );
    let attempts = sample(
        &text,
        &format!("webhook_attempt_duration_seconds_count{{webhook=\"{id}\"}}"),
    );
    let by_outcome = sample(&text, "webhook_deliveries_total{outcome=\"2xx\"}")
        + sample(&text, "webhook_deliveries_total{outcome=\"5xx\"}");
    assert_eq!(attempts, by_outcome, "the histogram counts every attempt");
    assert_eq!(sample(&text, "webhook_redis_connected"), 1.0);
    assert_eq!(sample(&text, "webhook_webhooks"), 1.0);
}
