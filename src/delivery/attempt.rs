//! One attempt: one signed POST of a delivery's exact body, and what came of it.

use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ureq::Agent;
use ureq::http::header::{CONTENT_TYPE, HeaderName};

use crate::webhook::model::Webhook;

use super::Delivery;
use super::retry::parse_retry_after;
use super::signer::Signer;
use super::ssrf;
use crate::outcome::OutcomeClass;

/// Most bytes of a response body kept for the records (CONTRACT section 6).
pub(crate) const STORED_BODY_BYTES: usize = 4096;
/// Most bytes of a response body read, so a small surplus still lets the connection be reused.
const READ_BODY_BYTES: u64 = 64 * 1024;

/// What one attempt produced.
#[derive(Debug, Clone)]
pub(crate) struct AttemptOutcome {
    /// Its class.
    pub(crate) class: OutcomeClass,
    /// The HTTP status, when a response came.
    pub(crate) status: Option<u16>,
    /// From just before the request to the end of the response (or the error).
    pub(crate) duration: Duration,
    /// The start of the response body, at most [`STORED_BODY_BYTES`].
    pub(crate) response_body: String,
    /// What went wrong, for failures.
    pub(crate) error: Option<String>,
    /// The `Retry-After` the endpoint asked for.
    pub(crate) retry_after: Option<Duration>,
}

// The headers every attempt sends, named once: a name given as text is parsed and copied on every
// request. (Header names go on the wire in lower case either way.)
const X_WEBHOOK_EVENT: HeaderName = HeaderName::from_static("x-webhook-event");
const X_WEBHOOK_ID: HeaderName = HeaderName::from_static("x-webhook-id");
const X_EVENT_ID: HeaderName = HeaderName::from_static("x-event-id");
const X_EVENT_SEQUENCE: HeaderName = HeaderName::from_static("x-event-sequence");
const X_WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("x-webhook-signature");
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The legacy and the Standard Webhooks signatures of `delivery`, when `webhook` has a secret.
fn signatures(
    webhook: &Webhook,
    delivery: &Delivery,
    unix_seconds: u64,
) -> Option<(String, String)> {
    let signer = Signer::new(webhook.secret.as_ref()?);
    let mut standard = signer.standard(&delivery.event_id, unix_seconds, &delivery.body);
    if let Some((previous, expires_at)) = &webhook.previous_secret
        && *expires_at > crate::time::now_ms()
    {
        // During a rotation both secrets sign (CONTRACT section 3).
        standard.push(' ');
        standard.push_str(&Signer::new(previous).standard(
            &delivery.event_id,
            unix_seconds,
            &delivery.body,
        ));
    }
    Some((signer.legacy(&delivery.body), standard))
}

/// Makes one attempt of `delivery` to `webhook`.
pub(crate) fn send(agent: &Agent, webhook: &Webhook, delivery: &Delivery) -> AttemptOutcome {
    let now = SystemTime::now();
    let unix_seconds = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut request = agent
        .post(webhook.url.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(X_WEBHOOK_EVENT, &*delivery.event_type)
        .header(X_WEBHOOK_ID, webhook.id.as_str())
        .header(X_EVENT_ID, delivery.event_id.as_str());
    if let Some(sequence) = delivery.sequence {
        // The event's place in source order: a receiver compares it to tell a late retry of an
        // earlier event from news (the body stays the original's, byte for byte).
        request = request.header(X_EVENT_SEQUENCE, sequence.to_string());
    }
    for (name, value) in &webhook.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some((legacy, standard)) = signatures(webhook, delivery, unix_seconds) {
        request = request
            .header(X_WEBHOOK_SIGNATURE, legacy)
            .header(WEBHOOK_ID, delivery.event_id.as_str())
            .header(WEBHOOK_TIMESTAMP, unix_seconds.to_string())
            .header(WEBHOOK_SIGNATURE, standard);
    }
    let started = Instant::now();
    match request.send(&delivery.body[..]) {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now));
            let mut raw = Vec::new();
            let read = response
                .body_mut()
                .as_reader()
                .take(READ_BODY_BYTES)
                .read_to_end(&mut raw);
            let class = OutcomeClass::of_status(status);
            let error = match (class, read) {
                (OutcomeClass::Success, _) => None,
                (OutcomeClass::Redirect, _) => {
                    Some(format!("HTTP {status}: redirects are not followed"))
                }
                (_, _) => Some(format!("HTTP {status}")),
            };
            AttemptOutcome {
                class,
                status: Some(status),
                duration: started.elapsed(),
                response_body: truncate(&raw),
                error,
                retry_after,
            }
        }
        Err(e) => AttemptOutcome {
            class: classify(&e),
            status: None,
            duration: started.elapsed(),
            response_body: String::new(),
            error: Some(match e {
                // ureq names the limit that ran out first, which says more about how ureq
                // counts than about the endpoint.
                ureq::Error::Timeout(_) => format!(
                    "timeout: no complete answer within {} ms",
                    started.elapsed().as_millis()
                ),
                e => e.to_string(),
            }),
            retry_after: None,
        },
    }
}

/// The class of a transport error.
fn classify(error: &ureq::Error) -> OutcomeClass {
    if ssrf::blocked_in(error).is_some() {
        return OutcomeClass::SsrfBlocked;
    }
    match error {
        ureq::Error::Timeout(_) => OutcomeClass::Timeout,
        ureq::Error::HostNotFound => OutcomeClass::Dns,
        ureq::Error::Io(e) => match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => OutcomeClass::Timeout,
            std::io::ErrorKind::NotFound => OutcomeClass::Dns,
            _ => OutcomeClass::Connect,
        },
        _ => OutcomeClass::Connect,
    }
}

/// The first [`STORED_BODY_BYTES`] of a body as text, cut on a character boundary.
fn truncate(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(STORED_BODY_BYTES)]);
    let mut text = text.into_owned();
    while text.len() > STORED_BODY_BYTES {
        text.pop();
    }
    text
}
