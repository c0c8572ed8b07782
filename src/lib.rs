//! webhook-service: job-queue events published on Redis become signed, retried, observable HTTP
//! webhooks. A drop-in replacement for the EMP Job Queue's TypeScript webhook service.
//!
//! # Data flow
//!
//! ```text
//! Redis pub/sub ─► intake-pubsub: parse, dedupe, match, build bodies ─► intake-record: claim +
//!                                                  record a batch in Redis (one round trip), queue
//! Redis Stream  ─► intake-stream: the same, recorded before XACK ──────────────────────┘
//!                                 per-job lines (one first attempt of a job at a time, in order)
//!                                                          │ bounded channel (full: wait in Redis;
//!                                                          │ endpoint backed up: recorded as due)
//!                                                          ▼
//!                 first-attempt seats ◄── endpoint gate ──► HTTP POST (ureq, SSRF guard)
//!   webhooks:due ─► delivery-poller ─► retry seats │ slow seats (slow endpoints, in turn)
//!        ▲                                         │ outcome: done, retry, hand-back ─► delivery-
//!        │                                         │ gave up ─► dead letters   completer: one
//!        └───────────────── back as due ───────────────────────────────────── round trip a batch
//! webhooks:registry ─► webhook-registry (snapshot) ─► dispatcher, delivery threads, API
//! clients ─► api-accept ─► api-conn (one per connection: reads requests whole, writes replies)
//!                                    ─► api-0..3 (handlers), api-slow-0..1 (test deliveries),
//!                                       api-capture-0 (capture URLs)
//!                                  api ─► DeliveryHandle ─► figures, dead letters, test jobs
//! ```
//!
//! `app` owns every thread it starts (each named, each listed below, each joined). A stop (SIGTERM, SIGINT) sets a first flag that stops
//! intake, the poller and the scheduler, then joins the threads in data-flow order, all within
//! `WEBHOOK_SHUTDOWN_TIMEOUT_MS`: intake, the record stage (its queue recorded), the poller and
//! the scheduler, the delivery threads (attempts in flight finish; what is queued or parked goes
//! back to `webhooks:due`; they end when their channels close), then the settlements are
//! written, the remaining leases released, and a second flag stops the completer, the recorder,
//! the heartbeat, the registry and the API; the DNS lookup threads end with their lookups and
//! are joined last. The API serves normally until that flag; then it
//! stops listening, answers every request it has read (with `Connection: close`), closes the
//! connections between requests and those slow for over a second, and its handler threads end
//! with the last connection.
//!
//! # Layers
//!
//! Lowest first; a module imports only from its own layer and those below, and no two
//! top-level modules import each other (`scripts/check-layers` checks both, in CI):
//!
//! 1. leaves, which know nothing of the service: `time`, `rand`, `keys` (every Redis key),
//!    `shutdown` (the stop flag, backoff, outage warnings, looping threads), `outcome` (attempt
//!    classes), `net` (IP networks), `json` (JavaScript-compatible JSON), `logging`
//! 2. `config`: the settings, read and validated once (the Redis target among them)
//! 3. `redis_conn`: every Redis connection
//! 4. `event`: source messages to events and `data`
//! 5. `webhook`: webhooks, their rules, storage and matching
//! 6. `monitor`: counters, figures and delivery history
//! 7. `delivery`: dispatch, the pool, the gate, retries, the durable store
//! 8. `intake`: reading Redis into the dispatcher
//! 9. `api`: the HTTP API, which reaches delivery only through `delivery::handle`
//! 10. `app`: wiring, threads, shutdown
//!
//! # Threads
//!
//! | name | owns | wakes on |
//! |---|---|---|
//! | `intake-pubsub` | the subscriber connection; parse, dedupe, dispatch | a message, or 500 ms |
//! | `intake-stream` | the stream consumer (when configured); taking over stopped consumers' entries | entries, or 500 ms |
//! | `intake-record` | claiming and recording pub/sub events in batches, then queueing (a delivery whose endpoint is backed up is recorded for the due set instead, and spread there once intake is idle); other instances' events until their grace passes (and the list of live instances, re-read every second) | prepared events, or the next grace to end |
//! | `webhook-registry` | reloading `webhooks:registry` | `webhooks:changed`, or the refresh period |
//! | `delivery-N` | attempts, on a seat the gate gives: one of the first-attempt seats (reads the first-attempt channel), the retry seats (reads the retry channel: retries and deliveries taken back from Redis; and the job channel: test attempts of `POST /webhooks/:id/test`) or the slow seats (runs slow endpoints' attempts in turn); one thread per seat | its channel, or the gate |
//! | `delivery-dns` (one per host name being resolved, at most 32) | resolving a webhook host name for the SSRF guard: a lookup has no time limit of its own and cannot be interrupted, so the attempt waits at most its budget and the thread ends with its lookup (joined as later ones start, and by the stop); a name already being resolved shares the lookup; answers are cached 30 s, and an expired one is used for up to 10 min while a new lookup runs | started per lookup |
//! | `delivery-watch` | moving attempts that run long from first-attempt and retry seats to slow seats (memory only: a hanging Redis cannot hold it up) | 50 ms |
//! | `delivery-lines` | per-job lines whose head did not come back from Redis: the next goes on (its record read back when it was kept as an id) | 50 ms |
//! | `delivery-poller` | leasing what is due in `webhooks:due`; dead-letter retention | the next due time, or 250 ms |
//! | `delivery-heartbeat` | this instance's heartbeat; taking over dead instances | a quarter of the instance TTL |
//! | `delivery-completer` | forgetting delivered ids, putting retries and hand-backs back as due, in batches | settlements (gathered for 2 ms) |
//! | `delivery-scheduler` | progress-throttle flushes; retries while Redis is away | the next due time, or 500 ms |
//! | `monitor-recorder` | delivery history and stats in Redis, in batches | attempt records (gathered for 5 ms) |
//! | `api-accept` | accepting API connections; at the limit, evicting an idle or slow one; at the stop, closing them | a connection |
//! | `api-conn` (one per connection) | reading each request whole under deadlines, writing its reply | the client's bytes |
//! | `api-N` | API handlers, until the last connection has ended; `api-0` wakes `api-accept` at the stop | a complete request (`api-0`: or 100 ms) |
//! | `api-slow-N` | handlers that wait on something outside (test deliveries), until the last connection has ended | a complete request |
//! | `api-capture-0` | the capture URLs' handlers (public; a test receiver's capture rewrites its record in Redis), until the last connection has ended | a complete request |
//!
//! Every Redis connection is made by [`redis_conn::RedisPool`] (TLS, ACL users, Sentinel): after a
//! failover every thread's next connection goes to the new master, and dedicated connections
//! (subscriber, stream reader) see theirs go stale. With several instances, each pub/sub event
//! has an owner among the live instances ([`intake::share`]), which claims it first.
//!
//! # Invariants
//!
//! - Architecture Invariant: data flows one way, Redis → intake → event → dispatcher → delivery →
//!   monitor. `event` knows no webhooks, `webhook::matching` no HTTP, `delivery` no `api`.
//! - Architecture Invariant: no module imports from a layer above its own, and no two
//!   top-level modules import each other (see Layers; `scripts/check-layers` fails CI otherwise).
//! - Architecture Invariant: every thread is named, listed in the table above, started at
//!   start-up (a failed spawn is a start-up error, never a thread per request), and joined at
//!   the stop; the one exception to start-up is `delivery-dns`, a thread per host name being
//!   resolved (at most 32), since a lookup cannot be interrupted; loops that repeat a step until the stop are started by
//!   `shutdown::spawn_loop`, and a failing dependency is warned about once per outage
//!   (`shutdown::Outage`).
//! - Architecture Invariant: one owner per rule: every Redis key is named in `keys`, every
//!   webhook field rule in `webhook::model` (the API and the OpenAPI document read them there),
//!   every write of a stored webhook in `webhook::store`, every figure of `/health` and
//!   `/metrics` in `monitor::FIGURES`, every route in one row of `api::routes`.
//! - Architecture Invariant: a delivery's body is built once, by the dispatcher; every attempt
//!   sends the same bytes with the same `event_id`.
//! - Architecture Invariant: a delivery is recorded in Redis before it is queued, and every
//!   recorded delivery is in exactly one place: leased by one instance, due, or dead.
//! - Architecture Invariant: no lock is held across Redis or HTTP I/O.
//! - Architecture Invariant: one webhook holds at most its in-flight limit of delivery threads.
//!   First-attempt and retry seats are held only by quick attempts, by probes of new endpoints
//!   (at most half the first-attempt seats), or, when more endpoints turn slow at once than there
//!   are slow seats, by attempts that stalled; a slow endpoint's attempts run on slow seats, in
//!   turn with the other slow endpoints. Retries have seats of their own.
//! - Architecture Invariant: the first attempts of one job's events to one webhook start one at a
//!   time, in source order (sequence order); no `job.progress` is sent after its job's terminal
//!   event (within one instance).
//! - Architecture Invariant: one bad message or one invalid webhook never stops the others.
//! - Architecture Invariant: the API reaches delivery only through `delivery::handle`; no
//!   handler sees the pool, the gate, the durable store or a channel, and no API thread makes
//!   an HTTP attempt.
//! - Architecture Invariant: once the API has answered a webhook write, this instance matches
//!   events against it (the registry is re-read before the answer).
//! - Architecture Invariant: an API handler thread never waits on a client: it is given a
//!   request read whole and its reply is written by the connection's own thread.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod api;
pub mod app;
pub mod config;
pub mod delivery;
pub mod event;
mod intake;
pub mod json;
pub mod keys;
pub mod logging;
mod monitor;
mod net;
mod outcome;
mod rand;
pub mod redis_conn;
mod shutdown;
pub mod time;
pub mod webhook;
