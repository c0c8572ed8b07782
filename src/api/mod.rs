//! The HTTP API (CONTRACT sections 4 and 6): its own HTTP/1.x server on blocking threads, over
//! the API's state ([`state::Shared`], built by `app`) and Redis.
//!
//! This module owns the wire (framing, deadlines, connection limits), status codes, envelopes,
//! CORS, auth and the captured requests; it reads `webhook` and `monitor`, writes webhooks
//! through `webhook::store`, and reaches delivery only through `delivery::handle`.
//!
//! Files: `front` (accepting and bounding connections), `conn` (one connection's requests),
//! `slot` (what a connection is doing), `wire` (HTTP/1.x framing, no I/O), `server` (the
//! request pipeline), `threads` (listener and handler threads),
//! `routes` (the route table: one row per route), `router` (its macro, and matching a
//! request against it), `request`/`reply` (what handlers take and give), `handlers/*`,
//! `captures` (captured requests under a memory budget), `openapi`, `cors`, `auth`, `state`.

pub(crate) mod auth;
mod captures;
mod conn;
pub(crate) mod cors;
mod front;
pub(crate) mod handlers;
pub(crate) mod openapi;
pub(crate) mod reply;
mod request;
mod router;
mod routes;
pub(crate) mod server;
mod slot;
pub(crate) mod state;
pub(crate) mod threads;
mod wire;
