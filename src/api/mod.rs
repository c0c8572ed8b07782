//! The HTTP API (CONTRACT sections 4 and 6), served by tiny_http threads over shared in-memory
//! state and Redis.
//!
//! This module owns status codes, envelopes, CORS and auth; it reads `webhook` and `monitor`,
//! writes webhooks through `webhook::store`, and reaches delivery only through the shared
//! delivery context (test deliveries).

pub mod auth;
pub mod cors;
pub mod front;
pub mod handlers;
pub mod openapi;
pub mod reply;
pub mod router;
pub mod server;
