//! Signatures on the wire, checked by independent verifiers: the PyPI `standardwebhooks` library
//! and Python's own hmac, in a separate process.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::receiver::{Captured, Receiver};
use crate::{SOON, register, setup, webhook};

/// The Python that has `standardwebhooks` (scripts/test makes a virtualenv and sets this).
fn python() -> String {
    std::env::var("WEBHOOK_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs the Python verifier on a captured request; returns its verdict line.
pub fn verify(request: &Captured, secret: &str, legacy_secret: &str) -> String {
    let headers: serde_json::Map<String, Value> = request
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let input = json!({
        "secret": secret,
        "legacy_secret": legacy_secret,
        "body": request.body_str(),
        "headers": headers,
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/verify_signatures.py"
    );
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.to_string().as_bytes());
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("verifier: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'standardwebhooks'"),
        "the verifier needs the PyPI package standardwebhooks: run scripts/test, or pip install standardwebhooks"
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout).trim(),
        stderr.trim()
    )
}

#[test]
fn standard_webhooks_and_legacy_signatures_verify_independently() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut a = webhook(&receiver.url("/whsec"), &["complete_job"]);
    a["secret"] = Value::from(whsec);
    register(&redis, &service, "wh_1_whsec", a);
    let mut b = webhook(&receiver.url("/plain"), &["job.completed"]);
    b["secret"] = Value::from("test-secret");
    b["headers"] = json!({"X-Tenant": "acme"});
    register(&redis, &service, "wh_2_plain", b);
    redis.publish(
        "complete_job",
        r#"{"job_id":"j","worker_id":"w","result":{"ratio":0.5,"n":1.0},"timestamp":1}"#,
    );
    receiver.wait_for(2, SOON);
    let whsec_request = &receiver.on("/whsec")[0];
    let plain_request = &receiver.on("/plain")[0];
    assert_eq!(verify(whsec_request, whsec, whsec), "ok");
    assert_eq!(verify(plain_request, "test-secret", "test-secret"), "ok");
    assert_eq!(plain_request.header("x-tenant"), Some("acme"));
    assert_eq!(
        plain_request.header("webhook-id"),
        plain_request.header("x-event-id")
    );
    // The verifier is not vacuous: another secret, or one changed byte, fails.
    assert_ne!(verify(plain_request, "other-secret", "test-secret"), "ok");
    let mut tampered = plain_request.clone();
    tampered.body = tampered
        .body_str()
        .replace("\"n\":1", "\"n\":2")
        .into_bytes();
    assert_ne!(verify(&tampered, "test-secret", "test-secret"), "ok");
}

#[test]
fn during_a_rotation_both_secrets_sign() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    let mut hook = webhook(&receiver.url("/rot"), &["complete_job"]);
    hook["secret"] = Value::from("whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTI0Yg==");
    hook["previous_secret"] = Value::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    hook["previous_expires_at"] = Value::from(4_102_444_800_000u64);
    register(&redis, &service, "wh_1_rot", hook);
    redis.publish("complete_job", r#"{"job_id":"j","timestamp":1}"#);
    let got = receiver.wait_for(1, SOON);
    let signatures = got[0].header("webhook-signature").unwrap_or("");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    let new = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTI0Yg==";
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(verify(&got[0], new, new), "ok");
    assert_eq!(
        verify(&got[0], old, new),
        "ok",
        "the old secret still verifies during the grace period"
    );
}

#[test]
fn unsigned_webhooks_send_no_signature_headers() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    register(
        &redis,
        &service,
        "wh_1_u",
        webhook(&receiver.url("/u"), &["complete_job"]),
    );
    redis.publish("complete_job", r#"{"job_id":"j","timestamp":1}"#);
    let got = receiver.wait_for(1, SOON);
    for name in [
        "x-webhook-signature",
        "webhook-signature",
        "webhook-timestamp",
    ] {
        assert_eq!(got[0].header(name), None, "{name}");
    }
}

#[test]
fn a_body_larger_than_the_send_buffer_arrives_whole_and_verifies() {
    // Head and body are sent in one write up to 64 KiB and in pieces beyond: a 300 KB result
    // must arrive byte for byte, with its length and signatures right.
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut hook = webhook(&receiver.url("/big"), &["complete_job"]);
    hook["secret"] = Value::from(whsec);
    register(&redis, &service, "wh_1_big", hook);
    let blob: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    redis.publish(
        "complete_job",
        &json!({"job_id": "big", "result": {"blob": blob}, "timestamp": 1}).to_string(),
    );
    let got = receiver.wait_for(1, SOON);
    let body = got[0].json();
    assert_eq!(body["data"]["result"]["blob"].as_str(), Some(blob.as_str()));
    assert_eq!(
        got[0].header("content-length"),
        Some(got[0].body.len().to_string().as_str())
    );
    assert_eq!(verify(&got[0], whsec, whsec), "ok");
    // And the connection is still good for the next, small one.
    redis.publish("complete_job", r#"{"job_id":"small","timestamp":2}"#);
    let got = receiver.wait_for(2, SOON);
    assert_eq!(got[1].json()["data"]["job_id"], "small");
    assert_eq!(verify(&got[1], whsec, whsec), "ok");
}
