//! Exact figures (issue #10): per-webhook response times after the last attempt of a burst, and
//! every documented `/metrics` family on a fresh service.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::receiver::{Receiver, Reply};
use crate::support::{try_wait_until, wait_until};
use crate::{SOON, call, setup};

#[test]
fn p95_and_average_count_the_slow_attempt_of_a_burst() {
    let (redis, service) = setup(&[]);
    // The first request takes 200 ms, the others 5 ms: they end first.
    let receiver =
        Receiver::start(|_, n| Reply::Slow(Duration::from_millis(if n == 0 { 200 } else { 5 })));
    let body = json!({"url": receiver.url("/p95"), "events": ["complete_job"]});
    let created = call(&service, "POST", "/webhooks", Some(&body.to_string()), &[]);
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["data"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    for i in 0..3 {
        redis.publish(
            "complete_job",
            &format!(r#"{{"job_id":"p95-{i}","timestamp":1}}"#),
        );
    }
    receiver.wait_for(3, SOON);
    let stats = || -> Value {
        call(&service, "GET", &format!("/webhooks/{id}/stats"), None, &[]).body["data"].clone()
    };
    wait_until(SOON, "three attempts in the stats", || {
        (stats()["total_deliveries"] == 3).then_some(())
    });
    // Once the attempts are recorded the figures are final; give a slow machine a moment, but
    // no figure may wait for a later attempt.
    let exact = try_wait_until(Duration::from_secs(3), || {
        let s = stats();
        (s["p95_response_time_ms"].as_f64()? >= 150.0).then_some(s)
    });
    let last = stats();
    let exact = exact.unwrap_or_else(|| panic!("p95 after attempts of 200, 5 and 5 ms: {last}"));
    let average = exact["average_response_time_ms"].as_f64().unwrap_or(0.0);
    assert!(
        (65.0..150.0).contains(&average),
        "average of 200, 5 and 5 ms: {exact}"
    );
}

/// The families the README's Metrics section names (`webhook_…`, labels cut off).
fn documented_families() -> Vec<String> {
    let readme = include_str!("../README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("the README has no Metrics section"));
    let mut families: Vec<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| code.starts_with("webhook_"))
        .map(|code| code.split('{').next().unwrap_or(code).to_string())
        .collect();
    families.sort();
    families.dedup();
    families
}

#[test]
fn a_fresh_service_exposes_every_documented_metric_family() {
    let (_redis, service) = setup(&[]);
    let metrics = call(&service, "GET", "/metrics", None, &[]);
    assert_eq!(metrics.status, 200);
    let documented = documented_families();
    assert!(documented.len() >= 20, "{documented:?}");
    for family in &documented {
        for line in [format!("# HELP {family} "), format!("# TYPE {family} ")] {
            assert!(
                metrics.text.lines().any(|l| l.starts_with(&line)),
                "a fresh /metrics lacks {line:?}:\n{}",
                metrics.text
            );
        }
    }
    // And the README documents every family there is.
    for line in metrics.text.lines() {
        if let Some(family) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split(' ').next())
        {
            assert!(
                documented.iter().any(|d| d == family),
                "the README does not document {family}"
            );
        }
    }
    // Unlabelled families have their sample from the start.
    for family in documented.iter().filter(|f| {
        ![
            "webhook_events_total",
            "webhook_malformed_messages_total",
            "webhook_attempt_duration_seconds",
        ]
        .contains(&f.as_str())
    }) {
        assert!(
            metrics.text.lines().any(
                |l| l.starts_with(family.as_str()) && l[family.len()..].starts_with([' ', '{'])
            ),
            "a fresh /metrics has no sample of {family}"
        );
    }
}
