//! The one HTTP client of the process: a ureq `Agent` with keep-alive, no redirects, a time limit
//! per attempt, no proxy from the environment, and the SSRF guard as its resolver.

use std::time::Duration;

use ureq::Agent;
use ureq::config::AutoHeaderValue;
use ureq::unversioned::transport::DefaultConnector;

use super::ssrf::{Cidr, GuardedResolver};

/// The `User-Agent` of every delivery (the original's).
pub const USER_AGENT: &str = "EMP-Job-Queue-Webhook/1.0";

/// Builds the delivery client.
///
/// `connections` bounds the idle keep-alive connections kept per host; it should be at least the
/// number of delivery threads so that a busy endpoint never reconnects. `own_port` is the API
/// port, whose capture URLs on loopback are always allowed.
pub fn agent(
    timeout: Duration,
    connections: usize,
    allowed: Vec<Cidr>,
    own_port: Option<u16>,
) -> Agent {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
        .user_agent(AutoHeaderValue::Provided(std::sync::Arc::new(
            USER_AGENT.to_string(),
        )))
        .accept_encoding(AutoHeaderValue::None)
        .max_idle_connections(connections.max(16) * 4)
        .max_idle_connections_per_host(connections.max(1))
        .max_idle_age(Duration::from_secs(30))
        .build();
    Agent::with_parts(
        config,
        DefaultConnector::new(),
        GuardedResolver::new(allowed, own_port),
    )
}
