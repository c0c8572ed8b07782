//! Every Redis key and channel this service reads or writes, with its shape.
//!
//! | key | type | shape | shared with the original |
//! |---|---|---|---|
//! | `webhooks:registry` | hash | field = webhook id, value = webhook JSON | yes |
//! | `webhooks:active` | set | ids of webhooks with `active: true` | yes |
//! | `webhooks:stats:<id>` | hash | per-attempt and per-event counters | yes |
//! | `webhooks:attempts:<id>` | list | attempt records, newest first, 100 kept | yes |
//! | `webhooks:delivery_log` | list | log entries, newest first, 1000 kept | yes |
//! | `webhooks:changed` | channel | a webhook id, published after a change | no |

/// Hash of webhook configurations.
pub const REGISTRY: &str = "webhooks:registry";
/// Set of active webhook ids.
pub const ACTIVE: &str = "webhooks:active";
/// Channel on which writers announce a webhook change, so every instance reloads at once.
pub const CHANGED_CHANNEL: &str = "webhooks:changed";
