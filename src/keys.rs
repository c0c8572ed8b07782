//! Every Redis key and channel this service reads or writes, with its shape.
//!
//! | key | type | shape | shared with the original |
//! |---|---|---|---|
//! | `webhooks:registry` | hash | field = webhook id, value = webhook JSON | yes |
//! | `webhooks:active` | set | ids of webhooks with `active: true` | yes |
//! | `webhooks:stats:<id>` | hash | per-attempt and per-event counters, last times, response times | yes |
//! | `webhooks:attempts:<id>` | list | attempt records (JSON), newest first, 100 kept | yes |
//! | `webhooks:delivery_log` | list | log entries (JSON), newest first, 1000 kept | yes |
//! | `webhooks:latencies:<id>` | list | response times in ms, newest first, 1000 kept (for p95) | no |
//! | `webhook_test_receiver:<id>` | string | test receiver JSON with its captured requests, 24 h TTL | yes |
//! | `webhook_test_receivers:active` | set | test receiver ids | yes |
//! | `webhooks:changed` | channel | a webhook id, published after a change | no |
//! | `webhooks:deliveries` | hash | field = delivery id, value = delivery record (JSON) | no |
//! | `webhooks:due` | sorted set | delivery ids, scored by due time (ms) | no |
//! | `webhooks:leased:<instance>` | set | delivery ids one instance holds | no |
//! | `webhooks:instances` | set | instance ids | no |
//! | `webhooks:instance:<instance>` | string | an instance's heartbeat, with a TTL | no |
//! | `webhooks:sequence` | string | the counter of event sequence numbers | no |
//! | `webhooks:claim:<hash>` | string | the instance that claimed an event identity, with a TTL | no |
//! | `webhooks:dead_letters` | hash | field = delivery id, value = dead letter (JSON) | no |
//! | `webhooks:dead_letters:by_time` | sorted set | dead-letter ids, scored by failure time | no |
//!
//! No other file names a key: a key is added here, with its row in this table.

/// Hash of webhook configurations.
pub(crate) const REGISTRY: &str = "webhooks:registry";
/// Set of active webhook ids.
pub(crate) const ACTIVE: &str = "webhooks:active";
/// Global delivery log.
pub(crate) const DELIVERY_LOG: &str = "webhooks:delivery_log";
/// Set of test receiver ids.
pub(crate) const TEST_RECEIVERS: &str = "webhook_test_receivers:active";
/// Channel on which writers announce a webhook change, so every instance reloads at once.
pub(crate) const CHANGED_CHANNEL: &str = "webhooks:changed";

/// Attempts kept per webhook.
pub(crate) const ATTEMPTS_KEPT: isize = 100;
/// Entries kept in the global delivery log.
pub(crate) const LOG_KEPT: isize = 1000;
/// Response times kept per webhook.
pub(crate) const LATENCIES_KEPT: isize = 1000;

/// Stats hash of a webhook.
pub(crate) fn stats(id: &str) -> String {
    format!("webhooks:stats:{id}")
}

/// Attempt history of a webhook.
pub(crate) fn attempts(id: &str) -> String {
    format!("webhooks:attempts:{id}")
}

/// Recent response times of a webhook.
pub(crate) fn latencies(id: &str) -> String {
    format!("webhooks:latencies:{id}")
}

/// A test receiver.
pub(crate) fn test_receiver(id: &str) -> String {
    format!("webhook_test_receiver:{id}")
}

/// The hash of delivery records.
pub(crate) const DELIVERIES: &str = "webhooks:deliveries";
/// The sorted set of due ids.
pub(crate) const DUE: &str = "webhooks:due";
/// The set of instance ids.
pub(crate) const INSTANCES: &str = "webhooks:instances";
/// The counter of event sequence numbers.
pub(crate) const SEQUENCE: &str = "webhooks:sequence";
/// The hash of dead letters.
pub(crate) const DEAD_LETTERS: &str = "webhooks:dead_letters";
/// Dead-letter ids by failure time.
pub(crate) const DEAD_LETTERS_BY_TIME: &str = "webhooks:dead_letters:by_time";

/// Leases of one instance.
pub(crate) fn leased(instance: &str) -> String {
    format!("webhooks:leased:{instance}")
}

/// Deliveries one instance has recorded straight into the due set and not yet spread there
/// (one field per event; see `delivery::durable`).
pub(crate) fn deferring(instance: &str) -> String {
    format!("webhooks:deferring:{instance}")
}

/// Heartbeat of one instance.
pub(crate) fn heartbeat(instance: &str) -> String {
    format!("webhooks:instance:{instance}")
}

/// Claim of one event identity.
pub fn claim(identity: &[u8; 32]) -> String {
    let mut key = String::with_capacity(16 + 32);
    key.push_str("webhooks:claim:");
    for b in &identity[..16] {
        key.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    key
}
