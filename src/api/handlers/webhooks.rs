//! Webhook management: create, list, get, update, delete, reconnect, secret and rotation.
//!
//! Stored exactly as the original stores a webhook (key order `id, created_at, updated_at,
//! consecutive_failures, disconnected, retry_config, url, events, active, secret, filters`, then
//! ours), so the original can read what we write. Every writable field is validated (reference
//! B8); server-owned fields sent back by a client (the monitor UI sends the whole object) are
//! ignored; a secret sent back in its masked form leaves the secret unchanged.

use log::{error, info};
use serde_json::{Map, Value, json};

use super::super::reply::Reply;
use super::super::request::{Body, Query};
use super::super::state::Shared;
use crate::time::now_ms;
use crate::webhook::ids;
use crate::webhook::model::{EventNames, RetryPolicy, ValidationError, Webhook};
use crate::webhook::store::{self, StoreError, Updated};

/// Fields a client may set.
const WRITABLE: [&str; 8] = [
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
const SERVER_OWNED: [&str; 12] = [
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

/// The longest secret accepted.
const MAX_SECRET: usize = 512;
/// The shortest secret accepted.
const MIN_SECRET: usize = 8;
/// Longest rotation grace period: 7 days.
const MAX_GRACE_MS: u64 = 7 * 86_400_000;

/// `POST /webhooks`.
pub(crate) fn create(shared: &Shared, body: &Body) -> Reply {
    let input = match object_body(body) {
        Ok(input) => input,
        Err(reply) => return reply,
    };
    let now = now_ms();
    let id = ids::webhook_id(now);
    let secret = match input.get("secret") {
        None | Some(Value::Null) => match ids::secret() {
            Ok(s) => s,
            Err(e) => {
                error!("cannot generate a secret for a new webhook: {e}");
                return Reply::internal("could not generate a secret");
            }
        },
        Some(Value::String(s)) if s.is_empty() => match ids::secret() {
            Ok(s) => s,
            Err(e) => {
                error!("cannot generate a secret for a new webhook: {e}");
                return Reply::internal("could not generate a secret");
            }
        },
        Some(v) => match valid_secret(v) {
            Ok(s) => s,
            Err(e) => return invalid(&e),
        },
    };
    let retry =
        match RetryPolicy::default().merged(input.get("retry_config").unwrap_or(&Value::Null)) {
            Ok(policy) => policy,
            Err(e) => return invalid(&e),
        };
    let mut stored = Map::new();
    stored.insert("id".into(), Value::from(id.as_str()));
    stored.insert("created_at".into(), Value::from(now));
    stored.insert("updated_at".into(), Value::from(now));
    stored.insert("consecutive_failures".into(), Value::from(0));
    stored.insert("disconnected".into(), Value::Bool(false));
    stored.insert("retry_config".into(), retry.to_json());
    // Absent fields stay absent, so validation says "is required".
    for field in ["url", "events"] {
        if let Some(value) = input.get(field) {
            stored.insert(field.into(), value.clone());
        }
    }
    stored.insert(
        "active".into(),
        input.get("active").cloned().unwrap_or(Value::Bool(true)),
    );
    stored.insert("secret".into(), Value::from(secret));
    stored.insert(
        "filters".into(),
        input.get("filters").cloned().unwrap_or(json!({})),
    );
    stored.insert(
        "headers".into(),
        input.get("headers").cloned().unwrap_or(json!({})),
    );
    stored.insert(
        "static".into(),
        input.get("static").cloned().unwrap_or(Value::Bool(false)),
    );
    if let Err(e) = Webhook::from_json(&id, &Value::Object(stored.clone()), EventNames::Strict) {
        return invalid(&e);
    }
    if let Err(e) = store::insert(&shared.redis, &id, &stored) {
        return store_failed("create a webhook", &e);
    }
    shared.registry.reload_after_write(&shared.redis, &id);
    info!("webhook {id} created for {:?}", stored.get("events"));
    // The only response that shows the whole secret, besides GET /webhooks/:id/secret.
    Reply::data(201, Value::Object(stored))
}

/// `GET /webhooks`.
pub(crate) fn list(shared: &Shared) -> Reply {
    match store::list(&shared.redis) {
        Ok(webhooks) => {
            let count = webhooks.len();
            let data: Vec<Value> = webhooks.into_iter().map(view).collect();
            Reply::data_with(200, Value::from(data), &[("count", Value::from(count))])
        }
        Err(e) => store_failed("list webhooks", &e),
    }
}

/// `GET /webhooks/:id`.
pub(crate) fn get(shared: &Shared, id: &str) -> Reply {
    match store::get(&shared.redis, id) {
        Ok(Some(webhook)) => Reply::data(200, view(webhook)),
        Ok(None) => Reply::webhook_not_found(),
        Err(e) => store_failed("read a webhook", &e),
    }
}

/// `PUT /webhooks/:id`: the fields given replace the stored ones; the result must validate.
pub(crate) fn update(shared: &Shared, id: &str, body: &Body) -> Reply {
    let input = match object_body(body) {
        Ok(input) => input,
        Err(reply) => return reply,
    };
    let id = id.to_string();
    let now = now_ms();
    let result = store::update(
        &shared.redis,
        &id,
        |stored| -> Result<bool, ValidationError> {
            for field in WRITABLE {
                let Some(value) = input.get(field) else {
                    continue;
                };
                match field {
                    "secret" => {
                        let current = stored.get("secret").and_then(Value::as_str).unwrap_or("");
                        match value {
                            // The masked form, sent back unchanged by an edit form: keep the secret.
                            Value::String(s) if !current.is_empty() && *s == ids::mask(current) => {
                            }
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
            Webhook::from_json(&id, &Value::Object(stored.clone()), EventNames::Strict)?;
            Ok(true)
        },
    );
    match result {
        Ok(Ok(Updated::Missing)) => Reply::webhook_not_found(),
        Ok(Ok(_)) => {
            shared.registry.reload_after_write(&shared.redis, &id);
            info!("webhook {id} updated");
            get(shared, &id)
        }
        Ok(Err(e)) => invalid(&e),
        Err(e) => store_failed("update a webhook", &e),
    }
}

/// `DELETE /webhooks/:id`.
pub(crate) fn delete(shared: &Shared, id: &str) -> Reply {
    match store::delete(&shared.redis, id) {
        Ok(true) => {
            shared.registry.reload_after_write(&shared.redis, id);
            info!("webhook {id} deleted");
            Reply::message("Webhook deleted successfully")
        }
        Ok(false) => Reply::webhook_not_found(),
        Err(e) => store_failed("delete a webhook", &e),
    }
}

/// `POST /webhooks/:id/reconnect`: clears `disconnected` and the failure count.
pub(crate) fn reconnect(shared: &Shared, id: &str) -> Reply {
    let id = id.to_string();
    let result = store::update(&shared.redis, &id, |w| {
        w.insert("disconnected".into(), Value::Bool(false));
        w.insert("consecutive_failures".into(), Value::from(0));
        w.insert("updated_at".into(), Value::from(now_ms()));
        Ok::<bool, std::convert::Infallible>(true)
    });
    match result {
        Ok(Ok(Updated::Missing)) => Reply::webhook_not_found(),
        Ok(_) => {
            shared.registry.reload_after_write(&shared.redis, &id);
            info!("webhook {id} reconnected");
            Reply::message(format!("Webhook {id} reconnected successfully"))
        }
        Err(e) => store_failed("reconnect a webhook", &e),
    }
}

/// `GET /webhooks/:id/secret`: the whole secret, and the previous one while it still signs.
pub(crate) fn secret(shared: &Shared, id: &str) -> Reply {
    let webhook = match store::get(&shared.redis, id) {
        Ok(Some(w)) => w,
        Ok(None) => return Reply::webhook_not_found(),
        Err(e) => return store_failed("read a webhook", &e),
    };
    let mut data = Map::new();
    data.insert(
        "secret".into(),
        webhook.get("secret").cloned().unwrap_or(Value::Null),
    );
    let expires = webhook.get("previous_expires_at").and_then(Value::as_u64);
    if let (Some(previous), Some(expires)) = (webhook.get("previous_secret"), expires)
        && expires > now_ms()
    {
        data.insert("previous_secret".into(), previous.clone());
        data.insert("previous_expires_at".into(), Value::from(expires));
    }
    Reply::data(200, Value::Object(data))
}

/// `POST /webhooks/:id/secret/rotate` (JSON body or query: `secret?`, `grace_period_ms?`).
pub(crate) fn rotate(shared: &Shared, id: &str, query: &Query, body: &Body) -> Reply {
    let body = match body.json() {
        Ok(Value::Null) if body.is_empty() => Map::new(),
        Ok(Value::Object(map)) => map,
        Ok(_) => return Reply::error(400, "request body must be a JSON object"),
        Err(reply) => return reply,
    };
    for key in body.keys() {
        if key != "secret" && key != "grace_period_ms" {
            return Reply::error(400, format!("{key} is not a rotation field"));
        }
    }
    let new_secret = match body
        .get("secret")
        .cloned()
        .or_else(|| query.get("secret").map(Value::from))
    {
        None => match ids::secret() {
            Ok(s) => s,
            Err(e) => {
                error!("cannot generate a secret: {e}");
                return Reply::internal("could not generate a secret");
            }
        },
        Some(v) => match valid_secret(&v) {
            Ok(s) => s,
            Err(e) => return invalid(&e),
        },
    };
    let grace = match body.get("grace_period_ms").cloned().or_else(|| {
        query
            .get("grace_period_ms")
            .map(|q| q.parse::<u64>().map(Value::from).unwrap_or(Value::from(q)))
    }) {
        None => 86_400_000,
        Some(v) => match v.as_u64().filter(|g| *g <= MAX_GRACE_MS) {
            Some(g) => g,
            None => {
                return invalid(&ValidationError::new(
                    "grace_period_ms",
                    &format!("must be a whole number from 0 to {MAX_GRACE_MS}"),
                ));
            }
        },
    };
    let now = now_ms();
    let expires_at = now + grace;
    let id = id.to_string();
    let result = store::update(&shared.redis, &id, |w| {
        let old = w
            .get("secret")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if grace > 0 && !old.is_empty() && old != new_secret {
            w.insert("previous_secret".into(), Value::from(old));
            w.insert("previous_expires_at".into(), Value::from(expires_at));
        } else {
            w.shift_remove("previous_secret");
            w.shift_remove("previous_expires_at");
        }
        w.insert("secret".into(), Value::from(new_secret.as_str()));
        w.insert("updated_at".into(), Value::from(now));
        Ok::<bool, std::convert::Infallible>(true)
    });
    match result {
        Ok(Ok(Updated::Missing)) => Reply::webhook_not_found(),
        Ok(_) => {
            shared.registry.reload_after_write(&shared.redis, &id);
            info!("webhook {id}: secret rotated, the previous one signs for {grace} ms more");
            Reply::data(
                200,
                json!({"secret": new_secret, "previous_expires_at": expires_at}),
            )
        }
        Err(e) => store_failed("rotate a secret", &e),
    }
}

/// A stored webhook as list and get show it: the secret masked, the previous one hidden.
pub(crate) fn view(mut webhook: Map<String, Value>) -> Value {
    if let Some(Value::String(secret)) = webhook.get("secret") {
        let masked = ids::mask(secret);
        webhook.insert("secret".into(), Value::from(masked));
    }
    if let Some(Value::String(previous)) = webhook.get("previous_secret") {
        let masked = ids::mask(previous);
        webhook.insert("previous_secret".into(), Value::from(masked));
    }
    Value::Object(webhook)
}

/// The body as an object with only known fields (400 otherwise).
fn object_body(body: &Body) -> Result<Map<String, Value>, Reply> {
    let input = match body.json()? {
        Value::Object(map) => map,
        _ => return Err(Reply::error(400, "request body must be a JSON object")),
    };
    if let Some(key) = input
        .keys()
        .find(|k| !WRITABLE.contains(&k.as_str()) && !SERVER_OWNED.contains(&k.as_str()))
    {
        return Err(invalid(&ValidationError::new(
            key,
            "is not a webhook field",
        )));
    }
    // null is not a value of any writable field; leave a field out to keep it as it is.
    if let Some(key) = WRITABLE
        .iter()
        .find(|k| input.get(**k) == Some(&Value::Null))
    {
        return Err(invalid(&ValidationError::new(key, "must not be null")));
    }
    Ok(input)
}

fn valid_secret(value: &Value) -> Result<String, ValidationError> {
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

/// 400 naming the field.
pub(crate) fn invalid(e: &ValidationError) -> Reply {
    Reply::envelope(
        400,
        json!({"success": false, "error": e.to_string(), "field": e.field}),
    )
}

/// 503 when Redis is away, 500 otherwise; the detail is logged.
pub(crate) fn store_failed(what: &str, e: &StoreError) -> Reply {
    error!("could not {what}: {e}");
    match e {
        StoreError::Redis(_) => Reply::unavailable(),
        _ => Reply::internal(&format!("could not {what}")),
    }
}
