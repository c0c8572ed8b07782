//! Webhooks: their stored form and validation ([`model`]), the in-memory snapshot that matching
//! runs against ([`matching`], pure), loading it from Redis ([`registry`]) and the few writes the
//! delivery path makes to a webhook ([`store`]).

pub mod ids;
pub mod matching;
pub mod model;
pub(crate) mod registry;
pub(crate) mod store;
