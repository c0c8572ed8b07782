//! Webhook management: create, list, get, update, delete, reconnect, secret and rotation.
//!
//! The field rules and the stored form are `webhook::model`'s, the writes `webhook::store`'s:
//! this file reads requests and answers them. Every writable field is validated (reference B8);
//! server-owned fields sent back by a client (the monitor UI sends the whole object) are
//! ignored; a secret sent back in its masked form leaves the secret unchanged.

use log::{error, info};
use serde_json::{Map, Value, json};

use super::super::reply::Reply;
use super::super::request::{Body, Query};
use super::super::state::Shared;
use crate::time::now_ms;
use crate::webhook::ids;
use crate::webhook::model::{
    self, DEFAULT_GRACE_MS, EventNames, MAX_GRACE_MS, SERVER_OWNED, ValidationError, WRITABLE,
    Webhook, valid_secret,
};
use crate::webhook::store::{self, StoreError, Updated};

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
    let stored = match model::new_stored(&id, now, &input, secret) {
        Ok(stored) => stored,
        Err(e) => return invalid(&e),
    };
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
    let result = store::update_fields(&shared.redis, &id, &input, now);
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
    let result = store::reconnect(&shared.redis, &id);
    match result {
        Ok(Updated::Missing) => Reply::webhook_not_found(),
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
    let data = model::secrets(&webhook, now_ms());
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
        None => DEFAULT_GRACE_MS,
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
    let result = store::rotate_secret(&shared.redis, &id, &new_secret, grace, now);
    match result {
        Ok(Updated::Missing) => Reply::webhook_not_found(),
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
pub(crate) fn view(webhook: Map<String, Value>) -> Value {
    Value::Object(model::masked(webhook))
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
