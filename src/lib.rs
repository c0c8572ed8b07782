//! webhook-service: job-queue events published on Redis become signed, retried, observable HTTP
//! webhooks. A drop-in replacement for the EMP Job Queue's TypeScript webhook service.
//!
//! # Data flow
//!
//! ```text
//! Redis pub/sub ──► intake-pubsub ──► parse ─► dedupe ─► dispatcher (match, build body)
//!                                                          │ bounded channel
//!                                                          ▼
//!                           delivery-0..N ◄── endpoint gate ──► HTTP POST (ureq, SSRF guard)
//!                                ▲                 │ failure
//!                                │ bounded         ▼
//!                           retry-0..M ◄── delivery-scheduler (heap by due time)
//! webhooks:registry ──► webhook-registry (snapshot) ──► dispatcher, delivery threads, API
//! api-0..1 (tiny_http) reads the snapshot and the counters
//! ```
//!
//! # Threads
//!
//! | name | owns | wakes on |
//! |---|---|---|
//! | `intake-pubsub` | the subscriber connection; parse, dedupe, dispatch | a message, or 500 ms |
//! | `webhook-registry` | reloading `webhooks:registry` | `webhooks:changed`, or the refresh period |
//! | `delivery-N` | first attempts | the first-attempt channel |
//! | `retry-N` | retries | the retry channel |
//! | `delivery-scheduler` | retries not yet due, throttle flushes | the next due time, or 500 ms |
//! | `api-N` | HTTP requests | a request, or 500 ms |
//!
//! # Invariants
//!
//! - Architecture Invariant: data flows one way, Redis → intake → event → dispatcher → delivery →
//!   monitor. `event` knows no webhooks, `webhook::matching` no HTTP, `delivery` no `api`.
//! - Architecture Invariant: a delivery's body is built once, by the dispatcher; every attempt
//!   sends the same bytes with the same `event_id`.
//! - Architecture Invariant: no lock is held across Redis or HTTP I/O.
//! - Architecture Invariant: one webhook holds at most its in-flight limit of delivery threads;
//!   retries run on their own threads and never delay first attempts.
//! - Architecture Invariant: one bad message or one invalid webhook never stops the others.

#![deny(missing_docs)]

pub mod api;
pub mod app;
pub mod config;
pub mod delivery;
pub mod event;
pub mod intake;
pub mod keys;
pub mod logging;
pub mod monitor;
pub mod rand;
pub mod redis_conn;
pub mod time;
pub mod webhook;
