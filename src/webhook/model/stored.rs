//! The stored form of a webhook and every change the service makes to it: a create, a client's
//! update, a rotation, a reconnect, and the delivery path's (410 Gone, a final failure, a
//! success); and the views the API shows of it. Pure: `webhook::store` makes the writes in Redis.
//!
//! Stored exactly as the original stores a webhook (key order `id, created_at, updated_at,
//! consecutive_failures, disconnected, retry_config, url, events, active, secret, filters`, then
//! ours), so the original can read what we write.

use serde_json::{Map, Value, json};

use super::fields::{WRITABLE, valid_secret};
use super::{RetryPolicy, ValidationError};
use crate::webhook::ids;

/// The stored form of a new webhook `id` made at `now` from a client's `input` (writable
/// fields only) and its `secret`, with the defaults of absent fields, in the original's key
/// order. Absent `url` and `events` stay absent, so validation says "is required"; the caller
/// validates the result.
pub(crate) fn new_stored(
    id: &str,
    now: u64,
    input: &Map<String, Value>,
    secret: String,
) -> Result<Map<String, Value>, ValidationError> {
    let retry = RetryPolicy::default().merged(input.get("retry_config").unwrap_or(&Value::Null))?;
    let mut stored = Map::new();
    stored.insert("id".into(), Value::from(id));
    stored.insert("created_at".into(), Value::from(now));
    stored.insert("updated_at".into(), Value::from(now));
    stored.insert("consecutive_failures".into(), Value::from(0));
    stored.insert("disconnected".into(), Value::Bool(false));
    stored.insert("retry_config".into(), retry.to_json());
    for field in ["url", "events"] {
        if let Some(value) = input.get(field) {
            stored.insert(field.into(), value.clone());
        }
    }
    let given = |field: &str| {
        input
            .get(field)
            .filter(|v| !v.is_null())
            .cloned()
            .or_else(|| default_of(field))
    };
    stored.insert("active".into(), given("active").unwrap_or(Value::Null));
    stored.insert("secret".into(), Value::from(secret));
    for field in ["filters", "headers", "static"] {
        stored.insert(field.into(), given(field).unwrap_or(Value::Null));
    }
    // Any other writable field given, as given (none today: the fields above are all of them),
    // so that a new row of `FIELDS` is stored by a create as by an update.
    for field in WRITABLE {
        if let Some(value) = input.get(field).filter(|_| !stored.contains_key(field)) {
            stored.insert(field.into(), value.clone());
        }
    }
    Ok(stored)
}

/// What a writable field with a default holds when a client leaves it out or sends `null` (as
/// validation reads it: the field is then never stored, nor returned, as `null`).
fn default_of(field: &str) -> Option<Value> {
    match field {
        "active" => Some(Value::Bool(true)),
        "static" => Some(Value::Bool(false)),
        "filters" | "headers" => Some(json!({})),
        _ => None,
    }
}

/// Writes the writable fields of `input` over `stored` at `now` (an update): a secret sent back
/// in its masked form, empty or null leaves the secret as it is; a `retry_config` is merged over
/// the stored one; `active: true` clears `disabled_reason`. The caller validates the result.
pub(crate) fn merge_writable(
    stored: &mut Map<String, Value>,
    input: &Map<String, Value>,
    now: u64,
) -> Result<(), ValidationError> {
    for field in WRITABLE {
        let Some(value) = input.get(field) else {
            continue;
        };
        let default = default_of(field).filter(|_| value.is_null());
        let value = default.as_ref().unwrap_or(value);
        match field {
            "secret" => {
                let current = stored.get("secret").and_then(Value::as_str).unwrap_or("");
                match value {
                    // The masked form, sent back unchanged by an edit form: keep the secret.
                    Value::String(s) if !current.is_empty() && *s == ids::mask(current) => {}
                    Value::Null => {}
                    Value::String(s) if s.is_empty() => {}
                    v => {
                        stored.insert("secret".into(), Value::from(valid_secret(v)?));
                    }
                }
            }
            "retry_config" => {
                let base = RetryPolicy::default()
                    .merged(stored.get("retry_config").unwrap_or(&Value::Null))
                    .unwrap_or_default();
                stored.insert("retry_config".into(), base.merged(value)?.to_json());
            }
            "active" => {
                if value == &Value::Bool(true) {
                    stored.shift_remove("disabled_reason");
                }
                stored.insert("active".into(), value.clone());
            }
            _ => {
                stored.insert(field.to_string(), value.clone());
            }
        }
    }
    stored.insert("updated_at".into(), Value::from(now));
    Ok(())
}

/// A stored webhook as lists show it: the secret masked, the previous one too.
pub(crate) fn masked(mut webhook: Map<String, Value>) -> Map<String, Value> {
    for field in ["secret", "previous_secret"] {
        if let Some(Value::String(secret)) = webhook.get(field) {
            let masked = ids::mask(secret);
            webhook.insert(field.into(), Value::from(masked));
        }
    }
    webhook
}

/// The whole secret of a stored webhook, and the previous one while it still signs at `now`.
pub(crate) fn secrets(webhook: &Map<String, Value>, now: u64) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert(
        "secret".into(),
        webhook.get("secret").cloned().unwrap_or(Value::Null),
    );
    let expires = webhook.get("previous_expires_at").and_then(Value::as_u64);
    if let (Some(previous), Some(expires)) = (webhook.get("previous_secret"), expires)
        && expires > now
    {
        data.insert("previous_secret".into(), previous.clone());
        data.insert("previous_expires_at".into(), Value::from(expires));
    }
    data
}

/// Rotates the secret of `stored` to `new_secret` at `now`: the old one keeps signing until
/// `now + grace_ms` (not when the grace is zero, there was none, or it is the same).
pub(crate) fn rotate(stored: &mut Map<String, Value>, new_secret: &str, grace_ms: u64, now: u64) {
    let old = stored
        .get("secret")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if grace_ms > 0 && !old.is_empty() && old != new_secret {
        stored.insert("previous_secret".into(), Value::from(old));
        stored.insert("previous_expires_at".into(), Value::from(now + grace_ms));
    } else {
        stored.shift_remove("previous_secret");
        stored.shift_remove("previous_expires_at");
    }
    stored.insert("secret".into(), Value::from(new_secret));
    stored.insert("updated_at".into(), Value::from(now));
}

/// Reconnects `stored` at `now`: not disconnected, no failures counted.
pub(crate) fn reconnect(stored: &mut Map<String, Value>, now: u64) {
    stored.insert("disconnected".into(), Value::Bool(false));
    stored.insert("consecutive_failures".into(), Value::from(0));
    stored.insert("updated_at".into(), Value::from(now));
}

/// 410 Gone at `now`: `stored` becomes `active: false`, `disabled_reason: "gone"` (CONTRACT
/// section 6).
pub(crate) fn disable_gone(stored: &mut Map<String, Value>, now: u64) {
    stored.insert("active".into(), Value::Bool(false));
    stored.insert("disabled_reason".into(), Value::from("gone"));
    stored.insert("updated_at".into(), Value::from(now));
}

/// A delivery to `stored` used up its attempts at `now`: counts it, and disconnects a webhook that
/// is not static once `disconnect_after` are counted. Returns the count when this disconnected it.
pub(crate) fn record_final_failure(
    stored: &mut Map<String, Value>,
    is_static: bool,
    disconnect_after: u64,
    now: u64,
) -> Option<u64> {
    let failures = stored
        .get("consecutive_failures")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + 1;
    stored.insert("consecutive_failures".into(), Value::from(failures));
    stored.insert("last_failure_at".into(), Value::from(now));
    stored.insert("updated_at".into(), Value::from(now));
    let disconnected = stored
        .get("disconnected")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if failures >= disconnect_after && !is_static && !disconnected {
        stored.insert("disconnected".into(), Value::Bool(true));
        return Some(failures);
    }
    None
}

/// A delivery to `stored` succeeded at `now`: the failure count is reset and the webhook
/// reconnected. Returns false, changing nothing, when there was nothing to reset.
pub(crate) fn record_success(stored: &mut Map<String, Value>, now: u64) -> bool {
    let failures = stored
        .get("consecutive_failures")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let disconnected = stored
        .get("disconnected")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if failures == 0 && !disconnected {
        return false;
    }
    stored.insert("consecutive_failures".into(), Value::from(0));
    stored.insert("disconnected".into(), Value::Bool(false));
    stored.insert("last_success_at".into(), Value::from(now));
    stored.insert("updated_at".into(), Value::from(now));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `null` for a field with a default means the default, as validation reads it: it is
    /// stored so, and never returned as `null` (the OpenAPI document says those fields are not
    /// nullable).
    #[test]
    fn null_for_a_field_with_a_default_stores_the_default() {
        let nulls = json!({
            "url": "https://example.com/h",
            "events": ["*"],
            "filters": null,
            "headers": null,
            "active": null,
            "static": null,
        });
        let Value::Object(input) = nulls else {
            panic!("not an object");
        };
        let expected = [
            ("filters", json!({})),
            ("headers", json!({})),
            ("active", json!(true)),
            ("static", json!(false)),
        ];
        let created =
            new_stored("wh_1_a", 1, &input, "s".repeat(32)).unwrap_or_else(|e| panic!("{e:?}"));
        for (field, value) in &expected {
            assert_eq!(created.get(*field), Some(value), "create: {field}");
        }
        let mut updated = created.clone();
        updated.insert("active".into(), json!(false));
        updated.insert("filters".into(), json!({"job_types": ["a"]}));
        merge_writable(&mut updated, &input, 2).unwrap_or_else(|e| panic!("{e:?}"));
        for (field, value) in &expected {
            assert_eq!(updated.get(*field), Some(value), "update: {field}");
        }
    }
}
