//! The fields of a stored webhook, in one table ([`FIELDS`]): who writes each (a client, with
//! its JSON Schema in requests, or the service), whether and as what the API returns it, and
//! what it means. From the table come [`WRITABLE`] and [`SERVER_OWNED`] (what a request may
//! send), and the OpenAPI document's `WebhookInput` ([`input_properties`]) and `Webhook`
//! ([`output_schema`]). Here too: the limits of secrets and rotations. The API's handlers and
//! its OpenAPI document read these; they repeat none of them. The stored form and the changes
//! made to it are `stored.rs`'s; a test here runs them all and checks what they return against
//! the table.

use serde_json::{Map, Value, json};

use super::ValidationError;

/// One field of a stored webhook: a row of [`FIELDS`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    /// The JSON key.
    pub(crate) name: &'static str,
    /// Who writes it.
    pub(crate) writer: Writer,
    /// Whether and as what the API returns it.
    pub(crate) output: Output,
    /// What it means, for the OpenAPI document.
    pub(crate) description: &'static str,
}

/// Who writes a field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Writer {
    /// A client, through `POST` and `PUT /webhooks…`; the field's JSON Schema in requests.
    Client(fn() -> Value),
    /// The service. A client may send it back (the monitor UI sends the whole object): ignored.
    Service,
}

/// Whether and as what the API returns a field: in `GET /webhooks`, `GET /webhooks/{id}`, and
/// the answers of `POST` and `PUT /webhooks…`. The API returns a webhook as stored (its secrets
/// masked but on create), so a webhook another process wrote (the original service) may lack a
/// field this service always writes: only what every writer writes is [`Output::Always`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// In every webhook returned.
    Always(Type),
    /// When set; never `null`.
    WhenSet(Type),
    /// When set, and may be `null`.
    Nullable(Type),
    /// Never: no writer sets it on a webhook (the name of a figure of the original's views,
    /// accepted in requests and ignored).
    Never,
}

/// The JSON type a field is returned as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    /// A string.
    Text,
    /// A whole number (milliseconds since the epoch, or a count).
    Integer,
    /// `true` or `false`.
    Boolean,
    /// An object.
    Object,
    /// An array of strings.
    Strings,
}

impl Field {
    const fn writable(&self) -> bool {
        matches!(self.writer, Writer::Client(_))
    }
}

/// A field a client writes, with its JSON Schema in requests.
const fn client(
    name: &'static str,
    output: Output,
    input: fn() -> Value,
    description: &'static str,
) -> Field {
    let writer = Writer::Client(input);
    Field {
        name,
        writer,
        output,
        description,
    }
}

/// A field the service writes.
const fn service(name: &'static str, output: Output, description: &'static str) -> Field {
    let writer = Writer::Service;
    Field {
        name,
        writer,
        output,
        description,
    }
}

/// Every field of a stored webhook. Within each writer, in the order requests are read: an update
/// applies the writable fields in this order and names the first invalid one, and `WebhookInput`
/// lists the server-owned ones, then the writable ones, in this order.
#[rustfmt::skip] // One row per field reads as a table.
pub(crate) const FIELDS: &[Field] = {
    use Output::{Always, Never, Nullable, WhenSet};
    use Type::{Boolean, Integer, Object, Strings, Text};
    &[
        service("id", Always(Text),
            "wh_<ms>_<base36>, made at creation"),
        client("url", Always(Text), url_schema,
            "Where deliveries are POSTed"),
        client("events", Always(Strings), events_schema,
            "Event names and patterns subscribed to"),
        client("secret", Nullable(Text), secret_schema,
            "Masked except on create"),
        client("filters", WhenSet(Object), filters_schema,
            "Which events of a subscribed type are delivered"),
        client("headers", WhenSet(Object), headers_schema,
            "Custom request headers"),
        client("retry_config", WhenSet(Object), retry_config_schema,
            "Retry policy, merged over the defaults"),
        client("active", WhenSet(Boolean), boolean_schema,
            "Inactive webhooks receive nothing"),
        client("static", WhenSet(Boolean), boolean_schema,
            "Never disconnected for failing"),
        service("created_at", WhenSet(Integer),
            "Created, ms since the epoch"),
        service("updated_at", WhenSet(Integer),
            "Last changed, ms since the epoch"),
        service("consecutive_failures", WhenSet(Integer),
            "Deliveries that used up their attempts since the last success"),
        service("disconnected", WhenSet(Boolean),
            "Disconnected after failures in a row; a success or a reconnect clears it"),
        service("last_success_at", WhenSet(Integer),
            "The success that ended the last run of failures, ms since the epoch"),
        service("last_failure_at", WhenSet(Integer),
            "The last delivery that used up its attempts, ms since the epoch"),
        service("last_delivery_at", Never,
            "Never set on a webhook: a figure of its stats, ignored if sent"),
        service("disabled_reason", WhenSet(Text),
            "Why the service made it inactive (gone: a 410 answer); active: true clears it"),
        service("previous_secret", WhenSet(Text),
            "The secret being rotated out (masked); it signs too until previous_expires_at"),
        service("previous_expires_at", WhenSet(Integer),
            "When the previous secret stops signing, ms since the epoch"),
        service("has_secret", Never,
            "Never set on a webhook (secret says whether there is one), ignored if sent"),
    ]
};

/// How many fields a client may (`true`) or may not write.
const fn count(writable: bool) -> usize {
    let (mut n, mut i) = (0, 0);
    while i < FIELDS.len() {
        if FIELDS[i].writable() == writable {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The names of the fields a client may (`true`) or may not write, in table order.
const fn names<const N: usize>(writable: bool) -> [&'static str; N] {
    let mut names = [""; N];
    let (mut n, mut i) = (0, 0);
    while i < FIELDS.len() {
        if FIELDS[i].writable() == writable {
            names[n] = FIELDS[i].name;
            n += 1;
        }
        i += 1;
    }
    names
}

/// Fields a client may set, in [`FIELDS`] order.
pub(crate) const WRITABLE: [&str; count(true)] = names(true);

/// Fields the service owns, in [`FIELDS`] order; sent back by a client, they are ignored.
pub(crate) const SERVER_OWNED: [&str; count(false)] = names(false);

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

fn url_schema() -> Value {
    json!({"type": "string", "format": "uri", "description": "http or https"})
}

fn events_schema() -> Value {
    json!({"type": "array", "minItems": 1, "items": {"type": "string", "enum": event_names()}, "description": "Canonical names (job.completed), legacy names (complete_job), * or prefix patterns (job.*)"})
}

/// A secret a client may give.
pub(crate) fn secret_schema() -> Value {
    json!({"type": "string", "minLength": MIN_SECRET, "maxLength": MAX_SECRET})
}

fn filters_schema() -> Value {
    json!({"$ref": "#/components/schemas/Filters"})
}

fn retry_config_schema() -> Value {
    json!({"$ref": "#/components/schemas/RetryConfig"})
}

fn boolean_schema() -> Value {
    json!({"type": "boolean"})
}

fn headers_schema() -> Value {
    json!({
        "type": "object",
        "description": "Custom request headers; the service's own (Content-Type, X-Webhook-*, webhook-*, ...) cannot be set.",
        "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
        "additionalProperties": {"type": "string", "maxLength": MAX_HEADER_VALUE, "pattern": "^[^\\r\\n\\x00]*$"},
    })
}

/// The OpenAPI `WebhookInput`'s properties: the server-owned fields (ignored), then the writable
/// ones with their JSON Schemas.
pub(crate) fn input_properties() -> Map<String, Value> {
    let mut properties = Map::new();
    for field in FIELDS.iter().filter(|f| !f.writable()) {
        properties.insert(field.name.into(), json!({"description": "Ignored"}));
    }
    for field in FIELDS {
        if let Writer::Client(schema) = field.writer {
            properties.insert(field.name.into(), schema());
        }
    }
    properties
}

/// The OpenAPI `Webhook` schema: a webhook as the API returns it.
pub(crate) fn output_schema() -> Value {
    let mut required = Vec::new();
    let mut properties = Map::new();
    for field in FIELDS {
        let (kind, nullable) = match field.output {
            Output::Always(kind) => {
                required.push(field.name);
                (kind, false)
            }
            Output::WhenSet(kind) => (kind, false),
            Output::Nullable(kind) => (kind, true),
            Output::Never => continue,
        };
        let mut schema = match kind {
            Type::Text => json!({"type": "string"}),
            Type::Integer => json!({"type": "integer"}),
            Type::Boolean => json!({"type": "boolean"}),
            Type::Object => json!({"type": "object"}),
            Type::Strings => json!({"type": "array", "items": {"type": "string"}}),
        };
        if let Value::Object(schema) = &mut schema {
            if nullable {
                schema.insert("nullable".into(), Value::Bool(true));
            }
            schema.insert("description".into(), Value::from(field.description));
        }
        properties.insert(field.name.into(), schema);
    }
    json!({"type": "object", "required": required, "properties": properties})
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
    use crate::webhook::model::stored::{
        disable_gone, masked, merge_writable, new_stored, reconnect, record_final_failure,
        record_success, rotate,
    };

    /// Whether `value` is what `output` says the API returns.
    fn admits(output: Output, value: &Value) -> bool {
        let (kind, nullable) = match output {
            Output::Always(kind) | Output::WhenSet(kind) => (kind, false),
            Output::Nullable(kind) => (kind, true),
            Output::Never => return false,
        };
        match (kind, value) {
            (_, Value::Null) => nullable,
            (Type::Text, Value::String(_)) => true,
            (Type::Integer, Value::Number(n)) => n.is_u64() || n.is_i64(),
            (Type::Boolean, Value::Bool(_)) => true,
            (Type::Object, Value::Object(_)) => true,
            (Type::Strings, Value::Array(items)) => items.iter().all(Value::is_string),
            _ => false,
        }
    }

    /// A webhook as the API returns it after each change the service makes: created (the whole
    /// secret), then updated, rotated, failed until disconnected, gone (410), succeeded and
    /// reconnected (masked, as lists, gets and updates show it).
    fn returned_webhooks() -> Result<Vec<Map<String, Value>>, ValidationError> {
        let input = json!({
            "url": "https://example.com/hook",
            "events": ["job.completed", "job.*"],
            "filters": {"job_types": ["a"]},
            "headers": {"X-Team": "a"},
            "retry_config": {"max_attempts": 3},
            "active": true,
            "static": false,
        });
        let input = input.as_object().cloned().unwrap_or_default();
        let secret = "whsec_first-secret-value".to_string();
        let mut stored = new_stored("wh_1_a", 1, &input, secret)?;
        let mut returned = vec![stored.clone()];
        merge_writable(&mut stored, &input, 2)?;
        returned.push(masked(stored.clone()));
        rotate(&mut stored, "whsec_second-secret-value", 60_000, 3);
        returned.push(masked(stored.clone()));
        for now in 4..7 {
            record_final_failure(&mut stored, false, 3, now);
        }
        disable_gone(&mut stored, 7);
        returned.push(masked(stored.clone()));
        assert!(record_success(&mut stored, 8));
        reconnect(&mut stored, 9);
        returned.push(masked(stored));
        Ok(returned)
    }

    #[test]
    fn every_field_the_api_returns_is_in_the_table_with_its_type() -> Result<(), ValidationError> {
        let mut seen = Vec::new();
        for webhook in returned_webhooks()? {
            for (key, value) in &webhook {
                let field = FIELDS.iter().find(|f| f.name == key);
                let Some(field) = field else {
                    panic!("the API returns {key}, which is not in FIELDS");
                };
                assert!(
                    admits(field.output, value),
                    "{key} is returned as {value}, not as FIELDS says: {:?}",
                    field.output
                );
                seen.push(field.name);
            }
            for field in FIELDS
                .iter()
                .filter(|f| matches!(f.output, Output::Always(_)))
            {
                assert!(
                    webhook.contains_key(field.name),
                    "{} is missing",
                    field.name
                );
            }
        }
        // A client's fields are returned as the client sent them; the service's must be set by
        // one of its changes to be returned.
        let returned_by_service = FIELDS
            .iter()
            .filter(|f| !f.writable() && f.output != Output::Never);
        for field in returned_by_service {
            assert!(
                seen.contains(&field.name),
                "{} is in FIELDS as returned, but no change sets it",
                field.name
            );
        }
        Ok(())
    }

    #[test]
    fn the_lists_follow_the_table() {
        assert_eq!(
            WRITABLE,
            [
                "url",
                "events",
                "secret",
                "filters",
                "headers",
                "retry_config",
                "active",
                "static"
            ]
        );
        assert_eq!(WRITABLE.len() + SERVER_OWNED.len(), FIELDS.len());
        assert_eq!(SERVER_OWNED[0], "id");
        let input = input_properties();
        assert_eq!(input.len(), FIELDS.len());
        for field in WRITABLE {
            assert_ne!(input[field], json!({"description": "Ignored"}), "{field}");
        }
        let output = output_schema();
        assert_eq!(output["required"], json!(["id", "url", "events"]));
        assert_eq!(output["properties"]["secret"]["nullable"], json!(true));
        assert!(output["properties"].get("has_secret").is_none());
    }
}
