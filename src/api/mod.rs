//! The HTTP API, served by a fixed number of tiny_http threads over shared in-memory state.
//!
//! This module owns status codes, envelopes and headers; it reads `webhook` and `monitor`, and
//! never reaches into delivery threads.

pub mod server;
