//! The fields of a stored webhook as clients write them: which a client may set, which the
//! service owns, and the limits of secrets and rotations. The API's handlers and its OpenAPI
//! document read these; they repeat none of them. The changes made to the stored form are
//! `stored.rs`'s.

use serde_json::{Value, json};

use super::ValidationError;

/// Fields a client may set.
pub(crate) const WRITABLE: [&str; 8] = [
    "url",
    "events",
    "secret",
    "filters",
    "headers",
    "retry_config",
    "active",
    "static",
];

/// Fields the service owns; sent back by a client, they are ignored.
pub(crate) const SERVER_OWNED: [&str; 12] = [
    "id",
    "created_at",
    "updated_at",
    "consecutive_failures",
    "disconnected",
    "last_success_at",
    "last_failure_at",
    "last_delivery_at",
    "disabled_reason",
    "previous_secret",
    "previous_expires_at",
    "has_secret",
];

/// The shortest secret accepted.
pub(crate) const MIN_SECRET: usize = 8;
/// The longest secret accepted.
pub(crate) const MAX_SECRET: usize = 512;
/// Longest rotation grace period: 7 days.
pub(crate) const MAX_GRACE_MS: u64 = 7 * 86_400_000;
/// The grace period of a rotation that names none: a day.
pub(crate) const DEFAULT_GRACE_MS: u64 = 86_400_000;
/// Longest custom header value.
pub(crate) const MAX_HEADER_VALUE: usize = 8192;

/// Every accepted entry of `events`.
fn event_names() -> Vec<String> {
    let mut names = vec!["*".to_string()];
    for kind in crate::event::EventKind::ALL {
        names.push(kind.name().to_string());
        if let Some(legacy) = kind.legacy_name() {
            names.push(legacy.to_string());
        }
    }
    for prefix in ["job", "worker", "machine", "workflow"] {
        names.push(format!("{prefix}.*"));
    }
    names
}

/// A secret a client may give.
pub(crate) fn secret_schema() -> Value {
    json!({"type": "string", "minLength": MIN_SECRET, "maxLength": MAX_SECRET})
}

/// The JSON Schema of a writable field, for the OpenAPI document (`{}` for no such field).
pub(crate) fn schema(field: &str) -> Value {
    match field {
        "url" => json!({"type": "string", "format": "uri", "description": "http or https"}),
        "events" => {
            json!({"type": "array", "minItems": 1, "items": {"type": "string", "enum": event_names()}, "description": "Canonical names (job.completed), legacy names (complete_job), * or prefix patterns (job.*)"})
        }
        "secret" => secret_schema(),
        "filters" => json!({"$ref": "#/components/schemas/Filters"}),
        "headers" => json!({
            "type": "object",
            "description": "Custom request headers; the service's own (Content-Type, X-Webhook-*, webhook-*, ...) cannot be set.",
            "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
            "additionalProperties": {"type": "string", "maxLength": MAX_HEADER_VALUE, "pattern": "^[^\\r\\n\\x00]*$"},
        }),
        "retry_config" => json!({"$ref": "#/components/schemas/RetryConfig"}),
        "active" | "static" => json!({"type": "boolean"}),
        _ => json!({}),
    }
}

/// A secret a client gave: any text of [`MIN_SECRET`] to [`MAX_SECRET`] characters.
pub(crate) fn valid_secret(value: &Value) -> Result<String, ValidationError> {
    match value {
        // Any text: a secret is only ever an HMAC key, never a header value.
        Value::String(s) if (MIN_SECRET..=MAX_SECRET).contains(&s.chars().count()) => Ok(s.clone()),
        Value::String(_) => Err(ValidationError::new(
            "secret",
            &format!("must be {MIN_SECRET} to {MAX_SECRET} characters"),
        )),
        _ => Err(ValidationError::new("secret", "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_writable_field_has_a_schema() {
        for field in WRITABLE {
            assert_ne!(schema(field), json!({}), "{field} has no schema");
        }
    }
}
