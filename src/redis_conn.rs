//! Redis connections: a small pool for commands, fresh connections for subscribers, and the
//! backoff every reconnect loop uses.

use std::time::Duration;

use parking_lot::Mutex;

/// Time allowed to connect to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for one command's reply.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle command connections kept.
const MAX_IDLE: usize = 8;

/// Connections for ordinary commands. A connection is taken out for one unit of work and put
/// back after it succeeds, so the lock is never held across Redis I/O; a connection that saw an
/// error is dropped, since its state is unknown.
pub struct RedisPool {
    client: redis::Client,
    idle: Mutex<Vec<redis::Connection>>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("idle", &self.idle.lock().len())
            .finish()
    }
}

impl RedisPool {
    /// A pool for `client`; connects lazily.
    pub fn new(client: redis::Client) -> RedisPool {
        RedisPool {
            client,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The client, for callers that need a dedicated connection (subscribers).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Runs `work` on a pooled connection.
    pub fn with<T>(
        &self,
        work: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let pooled = self.idle.lock().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => connect(&self.client, COMMAND_TIMEOUT)?,
        };
        let result = work(&mut conn);
        if result.is_ok() {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }
}

/// Opens a connection with bounded connect, read and write times (`read` of `None` blocks).
pub fn connect(client: &redis::Client, read: Duration) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(read))?;
    conn.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(conn)
}

/// Exponential backoff with jitter for reconnect loops: 100 ms doubling to 10 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(100),
            failures: 0,
        }
    }
}

impl Backoff {
    const MAX: Duration = Duration::from_secs(10);

    /// The wait before the next try (with ±25% jitter), growing each call.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(0.75 + 0.5 * crate::rand::unit())
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to the shortest wait, after a success.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}
