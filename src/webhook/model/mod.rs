//! A webhook as stored in `webhooks:registry`, validated into a typed form.
//!
//! The stored JSON is the original's (reference section 4) plus fields we add; every field we do not
//! understand is kept untouched by the writers. Validation here is the one place that decides what a
//! valid webhook is, for the registry loader and for the API alike (CONTRACT sections 2 and 6).
//! It owns every field rule: the fields a client may write and their limits (`fields.rs`), the
//! stored form and every change made to it (`stored.rs`), the retry policy's bounds
//! (`retry.rs`), URLs, filters and headers (here). The API and its OpenAPI document read them
//! from here.

use std::fmt;

use serde_json::{Map, Value};

pub(crate) mod fields;
pub(crate) mod retry;
pub(crate) mod stored;

pub(crate) use fields::{
    DEFAULT_GRACE_MS, MAX_GRACE_MS, MAX_HEADER_VALUE, SERVER_OWNED, WRITABLE, valid_secret,
};
pub(crate) use retry::RetryPolicy;
pub(crate) use stored::{masked, merge_writable, new_stored, secrets};

use crate::event::EventKind;

/// A validated webhook. Its `Debug` shows no secret and no custom header value.
#[derive(Clone)]
pub struct Webhook {
    /// `wh_<ms>_<base36>`.
    pub(crate) id: String,
    /// Where deliveries go; `http` or `https`, with a host.
    pub(crate) url: String,
    /// The `events` entries as written.
    pub(crate) events: Vec<String>,
    /// The entries of `events` understood, in order.
    pub(crate) subscriptions: Vec<Subscription>,
    /// The signing secret, when set.
    pub(crate) secret: Option<String>,
    /// The secret being rotated out, and when it stops signing (ms since the epoch).
    pub(crate) previous_secret: Option<(String, u64)>,
    /// Which events of a subscribed type reach this webhook.
    pub(crate) filters: Filters,
    /// Custom request headers, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// Retry policy, merged over the defaults.
    pub(crate) retry: RetryPolicy,
    /// Inactive webhooks receive nothing.
    pub(crate) active: bool,
    /// Static webhooks are never disconnected for failing.
    pub(crate) is_static: bool,
    /// Disconnected after repeated final failures (reference 5.4).
    pub(crate) disconnected: bool,
    /// When the last final failure happened (ms since the epoch).
    pub(crate) last_failure_at: Option<u64>,
    /// Final failures since the last success.
    pub(crate) consecutive_failures: u64,
}

/// What `Debug` prints for a secret or a custom header's value.
const REDACTED: &str = "<redacted>";

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), REDACTED))
            .collect();
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("subscriptions", &self.subscriptions)
            .field("secret", &self.secret.as_ref().map(|_| REDACTED))
            .field(
                "previous_secret",
                &self
                    .previous_secret
                    .as_ref()
                    .map(|(_, until)| (REDACTED, until)),
            )
            .field("filters", &self.filters)
            .field("headers", &headers)
            .field("retry", &self.retry)
            .field("active", &self.active)
            .field("is_static", &self.is_static)
            .field("disconnected", &self.disconnected)
            .field("last_failure_at", &self.last_failure_at)
            .field("consecutive_failures", &self.consecutive_failures)
            .finish()
    }
}

/// One entry of `events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subscription {
    /// A canonical name (`job.completed`).
    Canonical(EventKind),
    /// A legacy name (`complete_job`): delivered with the original's name and shape.
    Legacy(EventKind),
    /// A prefix pattern: `job.*` is stored as `job.`.
    Prefix(String),
    /// `*`.
    All,
}

impl Subscription {
    /// Parses one `events` entry.
    pub(crate) fn parse(entry: &str) -> Option<Subscription> {
        if entry == "*" {
            return Some(Subscription::All);
        }
        if let Some(kind) = EventKind::from_name(entry) {
            return Some(Subscription::Canonical(kind));
        }
        if let Some(kind) = EventKind::from_legacy_name(entry) {
            return Some(Subscription::Legacy(kind));
        }
        let prefix = entry.strip_suffix('*')?;
        let known = EventKind::ALL.iter().any(|k| k.name().starts_with(prefix));
        (prefix.ends_with('.') && known).then(|| Subscription::Prefix(prefix.to_string()))
    }

    /// Whether this entry is a pattern that covers `kind`.
    pub(crate) fn pattern_covers(&self, kind: EventKind) -> bool {
        match self {
            Subscription::All => true,
            Subscription::Prefix(p) => kind.name().starts_with(p.as_str()),
            _ => false,
        }
    }
}

/// The four filters of CONTRACT section 2. An absent or empty list does not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Filters {
    /// Job types (`service_required`).
    pub(crate) job_types: Vec<String>,
    /// Job priorities (`job_priorities`, alias `priorities`).
    pub(crate) job_priorities: Vec<f64>,
    /// Machine ids.
    pub(crate) machine_ids: Vec<String>,
    /// Worker ids.
    pub(crate) worker_ids: Vec<String>,
}

/// A webhook field that is not acceptable, named.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationError {
    /// The field, dotted for nested ones (`retry_config.max_attempts`).
    pub(crate) field: String,
    /// What is wrong with it.
    pub(crate) message: String,
}

impl ValidationError {
    /// A new error for `field`.
    pub(crate) fn new(field: &str, message: &str) -> ValidationError {
        ValidationError {
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// How strict [`Webhook::from_json`] is about `events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventNames {
    /// Unknown names are an error (the API).
    Strict,
    /// Unknown names are ignored (registries written by the original, which stored any string).
    Lenient,
}

/// Headers the service sets itself, which a webhook may not set or override.
const RESERVED_HEADERS: [&str; 14] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "user-agent",
    "x-webhook-event",
    "x-webhook-id",
    "x-event-id",
    "x-webhook-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "expect",
];

impl Webhook {
    /// Validates a stored or requested webhook object.
    pub fn from_json(
        id: &str,
        value: &Value,
        names: EventNames,
    ) -> Result<Webhook, ValidationError> {
        let map = value
            .as_object()
            .ok_or_else(|| ValidationError::new("webhook", "must be a JSON object"))?;
        let url = match map.get("url") {
            Some(Value::String(s)) => validate_url(s)?,
            Some(_) => return Err(ValidationError::new("url", "must be a string")),
            None => return Err(ValidationError::new("url", "is required")),
        };
        let events: Vec<String> = match map.get("events") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ValidationError::new("events", "must contain only strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => {
                return Err(ValidationError::new("events", "must not be empty"));
            }
            Some(_) => {
                return Err(ValidationError::new(
                    "events",
                    "must be an array of strings",
                ));
            }
            None => return Err(ValidationError::new("events", "is required")),
        };
        let mut subscriptions = Vec::with_capacity(events.len());
        for entry in &events {
            match Subscription::parse(entry) {
                Some(s) => subscriptions.push(s),
                None if names == EventNames::Lenient => {}
                None => {
                    return Err(ValidationError::new(
                        "events",
                        &format!("contains an unknown event type {entry:?}"),
                    ));
                }
            }
        }
        let secret = match map.get("secret") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ValidationError::new("secret", "must be a string")),
        };
        let previous_secret = match (map.get("previous_secret"), map.get("previous_expires_at")) {
            (Some(Value::String(s)), Some(exp)) if !s.is_empty() => {
                exp.as_u64().map(|exp| (s.clone(), exp))
            }
            _ => None,
        };
        Ok(Webhook {
            id: id.to_string(),
            url,
            events,
            subscriptions,
            secret,
            previous_secret,
            filters: parse_filters(map.get("filters"))?,
            headers: parse_headers(map.get("headers"))?,
            retry: RetryPolicy::default()
                .merged(map.get("retry_config").unwrap_or(&Value::Null))?,
            active: flag(map, "active", true)?,
            is_static: flag(map, "static", false)?,
            disconnected: flag(map, "disconnected", false)?,
            last_failure_at: map.get("last_failure_at").and_then(Value::as_u64),
            consecutive_failures: map
                .get("consecutive_failures")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        })
    }
}

fn flag(map: &Map<String, Value>, key: &str, default: bool) -> Result<bool, ValidationError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ValidationError::new(key, "must be a boolean")),
    }
}

/// Checks a target URL: `http` or `https`, a host, no credentials, no fragment.
pub(crate) fn validate_url(url: &str) -> Result<String, ValidationError> {
    let bad = |why: &str| ValidationError::new("url", why);
    if url.len() > 2048 {
        return Err(bad("must be at most 2048 characters"));
    }
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad("is not a valid URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("must use http or https")),
    }
    let authority = uri.authority().ok_or_else(|| bad("must have a host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not contain credentials"));
    }
    if authority.host().is_empty() {
        return Err(bad("must have a host"));
    }
    if url.contains('#') {
        return Err(bad("must not contain a fragment"));
    }
    Ok(url.to_string())
}

fn parse_filters(value: Option<&Value>) -> Result<Filters, ValidationError> {
    let mut filters = Filters::default();
    let map = match value {
        None | Some(Value::Null) => return Ok(filters),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ValidationError::new("filters", "must be an object")),
    };
    for (key, v) in map {
        let field = format!("filters.{key}");
        match key.as_str() {
            "job_types" => filters.job_types = strings(v, &field)?,
            "machine_ids" => filters.machine_ids = strings(v, &field)?,
            "worker_ids" => filters.worker_ids = strings(v, &field)?,
            "job_priorities" | "priorities" => {
                let items = match v {
                    Value::Null => continue,
                    Value::Array(items) => items,
                    _ => return Err(ValidationError::new(&field, "must be an array of numbers")),
                };
                for item in items {
                    let n = item
                        .as_f64()
                        .or_else(|| item.as_str().and_then(|s| s.trim().parse().ok()))
                        .ok_or_else(|| {
                            ValidationError::new(&field, "must be an array of numbers")
                        })?;
                    filters.job_priorities.push(n);
                }
            }
            // The original stores custom_filters and ignores them; so do we (CONTRACT section 6).
            "custom_filters" if v.is_object() || v.is_null() => {}
            "custom_filters" => return Err(ValidationError::new(&field, "must be an object")),
            _ => return Err(ValidationError::new(&field, "is not a known filter")),
        }
    }
    Ok(filters)
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, ValidationError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ValidationError::new(field, "must be an array of strings"))
            })
            .collect(),
        _ => Err(ValidationError::new(field, "must be an array of strings")),
    }
}

fn parse_headers(value: Option<&Value>) -> Result<Vec<(String, String)>, ValidationError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ValidationError::new(
                "headers",
                "must be an object of strings",
            ));
        }
    };
    let mut headers = Vec::with_capacity(map.len());
    for (name, v) in map {
        let field = format!("headers.{name}");
        let value = v
            .as_str()
            .ok_or_else(|| ValidationError::new(&field, "must be a string"))?;
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(ValidationError::new(&field, "is not a valid header name"));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ValidationError::new(
                &field,
                "is set by the service and cannot be overridden",
            ));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
            || value.len() > MAX_HEADER_VALUE
        {
            return Err(ValidationError::new(&field, "is not a valid header value"));
        }
        headers.push((name.clone(), value.to_string()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error_field(value: Value) -> String {
        match Webhook::from_json("wh_1_a", &value, EventNames::Strict) {
            Ok(_) => "ok".into(),
            Err(e) => e.field,
        }
    }

    #[test]
    fn debug_shows_no_secret_and_no_header_value() {
        let stored = json!({"url": "https://example.com/h", "events": ["*"],
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "headers": {"X-Api-Key": "header-value-1234"}});
        let mut webhook = match Webhook::from_json("wh_1_a", &stored, EventNames::Strict) {
            Ok(webhook) => webhook,
            Err(e) => panic!("{e}"),
        };
        webhook.previous_secret = Some(("old-secret-5678".into(), 9));
        let shown = format!("{webhook:?}");
        for hidden in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "header-value-1234",
            "old-secret-5678",
        ] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        for kept in ["wh_1_a", "https://example.com/h", "X-Api-Key", "<redacted>"] {
            assert!(shown.contains(kept), "{kept} not in {shown}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let ok = json!({"url": "https://example.com/h", "events": ["job.*"]});
        assert_eq!(error_field(ok), "ok");
        let cases = [
            (json!({"events": ["*"]}), "url"),
            (json!({"url": "ftp://x/", "events": ["*"]}), "url"),
            (json!({"url": "http://u:p@x/", "events": ["*"]}), "url"),
            (json!({"url": "http://x/", "events": []}), "events"),
            (json!({"url": "http://x/", "events": null}), "events"),
            (
                json!({"url": "http://x/", "events": ["job.nope"]}),
                "events",
            ),
            (
                json!({"url": "http://x/", "events": ["*"], "filters": {"colour": []}}),
                "filters.colour",
            ),
            (
                json!({"url": "http://x/", "events": ["*"], "headers": {"X-Webhook-ID": "1"}}),
                "headers.X-Webhook-ID",
            ),
            (
                json!({"url": "http://x/", "events": ["*"], "headers": {"X-A": "a\r\nb"}}),
                "headers.X-A",
            ),
            (
                json!({"url": "http://x/", "events": ["*"], "active": "yes"}),
                "active",
            ),
            (
                json!({"url": "http://x/", "events": ["*"], "retry_config": {"max_attempts": 0}}),
                "retry_config.max_attempts",
            ),
            (
                json!({"url": "http://x/", "events": ["*"], "retry_config": {"max_attempts": 51}}),
                "retry_config.max_attempts",
            ),
            (
                json!({"url": "http://x/", "events": ["*"], "retry_config": {"initial_delay_ms": 5}}),
                "retry_config.initial_delay_ms",
            ),
            (
                json!({"url": "http://x/", "events": ["*"], "retry_config": {"backoff_multiplier": 0.5}}),
                "retry_config.backoff_multiplier",
            ),
            (
                json!({"url": "http://x/", "events": ["*"], "retry_config": {"initial_delay_ms": 5000, "max_delay_ms": 1000}}),
                "retry_config.max_delay_ms",
            ),
            (
                json!({"url": "http://x/", "events": ["*"], "retry_config": {"max_attempts": "3"}}),
                "retry_config.max_attempts",
            ),
        ];
        for (value, field) in cases {
            assert_eq!(error_field(value.clone()), field, "{value}");
        }
    }

    #[test]
    fn b4_partial_retry_config_keeps_the_defaults() {
        let merged = RetryPolicy::default().merged(&json!({"max_attempts": 5}));
        let expected = RetryPolicy {
            max_attempts: 5,
            ..RetryPolicy::default()
        };
        assert_eq!(merged, Ok(expected));
    }

    #[test]
    fn lenient_loading_skips_unknown_event_names() {
        let value = json!({"url": "http://x/", "events": ["complete_job", "job.nope"]});
        let webhook = Webhook::from_json("wh_1_a", &value, EventNames::Lenient);
        let subs = webhook.map(|w| w.subscriptions).unwrap_or_default();
        assert_eq!(subs, vec![Subscription::Legacy(EventKind::JobCompleted)]);
    }

    #[test]
    fn subscriptions_parse() {
        assert_eq!(
            Subscription::parse("job.*"),
            Some(Subscription::Prefix("job.".into()))
        );
        assert_eq!(Subscription::parse("*"), Some(Subscription::All));
        assert_eq!(Subscription::parse("nope.*"), None);
        assert_eq!(Subscription::parse("job*"), None);
        assert_eq!(
            Subscription::parse("worker_status"),
            Some(Subscription::Legacy(EventKind::WorkerStatusChanged))
        );
    }

    #[test]
    fn default_policy_spans_more_than_a_day() {
        let p = RetryPolicy::default();
        let mut total = 0.0;
        for n in 1..p.max_attempts {
            let d = p.initial_delay_ms as f64 * p.backoff_multiplier.powi(n as i32 - 1);
            total += d.min(p.max_delay_ms as f64) * 0.8; // the earliest each retry can come
        }
        assert!(total >= 86_400_000.0, "spans only {total} ms");
    }
}
