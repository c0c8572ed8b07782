//! Redis connections: every connection of every thread is made here, so TLS, ACL credentials and
//! Sentinel failover are handled once. A small pool serves commands; subscribers and stream
//! readers take dedicated connections from the same place; reconnect loops share [`crate::shutdown::Backoff`].
//!
//! # Failover
//!
//! In Sentinel mode the pool keeps the master it last found. An error that says the node is gone
//! or no longer master (a dropped connection, a refused connect, `READONLY`, `MASTERDOWN`, ...)
//! marks it suspect and drops the idle connections; the next connection asks the sentinels
//! again. When the master has changed, the generation in [`RedisStatus`] moves on: idle
//! connections of an older generation are dropped, dedicated ones see [`RedisPool::is_current`]
//! turn false for theirs, and reconnect loops sleeping in [`RedisPool::sleep`] wake at once. Lua scripts
//! are run with `EVALSHA` and loaded again on `NOSCRIPT` (by `redis::Script`), so a new master
//! with an empty script cache is no trouble.

mod sentinel;
pub(crate) mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::Mutex;

use crate::config::target::{Target, TargetError};
pub(crate) use status::RedisStatus;

use crate::shutdown::Shutdown;

/// Time allowed to connect to Redis (TCP, TLS handshake and AUTH).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for one command's reply.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle command connections kept.
const MAX_IDLE: usize = 8;

/// A connection and the generation of the node it was made to.
struct Idle {
    conn: redis::Connection,
    generation: u64,
}

/// The master found through Sentinel, and its generation.
#[derive(Clone)]
struct Master {
    client: redis::Client,
    generation: u64,
}

/// Connections for ordinary commands, and the one place connections are made. A connection is
/// taken out for one unit of work and put back after it succeeds, so the lock is never held
/// across Redis I/O; a connection that saw an error is dropped, since its state is unknown.
pub struct RedisPool {
    target: Target,
    idle: Mutex<Vec<Idle>>,
    /// Sentinel mode: the master last found (`None` before the first lookup).
    master: Mutex<Option<Master>>,
    /// Sentinel mode: the master seemed gone; look it up again before the next connection.
    suspect: AtomicBool,
    /// The sentinels to ask, the last one that answered first.
    sentinel_order: Mutex<Vec<usize>>,
    status: Arc<RedisStatus>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("target", &self.target)
            .field("idle", &self.idle.lock().len())
            .finish_non_exhaustive()
    }
}

/// A dedicated connection (a subscriber, a stream reader) and the node generation it belongs to.
pub(crate) struct Dedicated {
    /// The connection.
    pub(crate) conn: redis::Connection,
    generation: u64,
}

impl Dedicated {
    /// The generation of the node it was made to (see [`RedisPool::is_current`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

impl RedisPool {
    /// A pool for `target`; connects lazily.
    pub fn new(target: Target) -> RedisPool {
        // One crypto provider for every rustls user in the process (Redis and ureq agree on it).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let node = match target.standalone() {
            Some((node, _)) => node.clone(),
            None => String::new(),
        };
        let master_name = target
            .sentinels()
            .map(|s| s.master_name.clone())
            .unwrap_or_default();
        let order = (0..target.sentinels().map_or(0, |s| s.nodes.len())).collect();
        let status = RedisStatus::new(target.mode(), target.tls(), &master_name, node);
        RedisPool {
            target,
            idle: Mutex::new(Vec::new()),
            master: Mutex::new(None),
            suspect: AtomicBool::new(false),
            sentinel_order: Mutex::new(order),
            status: Arc::new(status),
        }
    }

    /// What `/health` and `/metrics` show about Redis.
    pub(crate) fn status(&self) -> &RedisStatus {
        &self.status
    }

    /// Runs `work` on a pooled connection.
    pub(crate) fn with<T>(
        &self,
        work: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let current = self.status.generation();
        let pooled = {
            let mut idle = self.idle.lock();
            // Connections to a node that is no longer the master are of no use.
            idle.retain(|c| c.generation == current);
            idle.pop()
        };
        let Idle {
            mut conn,
            generation,
        } = match pooled {
            Some(idle) => idle,
            None => {
                let (conn, generation) = self.open(COMMAND_TIMEOUT)?;
                Idle { conn, generation }
            }
        };
        let result = work(&mut conn);
        match &result {
            Ok(_) => {
                let mut idle = self.idle.lock();
                if idle.len() < MAX_IDLE {
                    idle.push(Idle { conn, generation });
                }
            }
            Err(e) => self.failed(e, generation),
        }
        result
    }

    /// A connection of its own, with replies awaited for `read` (a subscriber, a stream reader).
    pub(crate) fn dedicated(&self, read: Duration) -> redis::RedisResult<Dedicated> {
        let (conn, generation) = self.open(read)?;
        Ok(Dedicated { conn, generation })
    }

    /// Whether a connection of `generation` still talks to the current node (false after a
    /// failover).
    pub(crate) fn is_current(&self, generation: u64) -> bool {
        generation == self.status.generation()
    }

    /// Reports an error met on a connection of generation `generation`. One that says the node
    /// is gone or is no longer master drops the idle connections and, with Sentinel, makes the
    /// next connection look the master up again.
    pub(crate) fn failed(&self, error: &redis::RedisError, generation: u64) {
        if !node_error(error) {
            return;
        }
        self.idle.lock().clear();
        if self.target.sentinels().is_some() && generation == self.status.generation() {
            self.suspect.store(true, Ordering::Release);
        }
    }

    /// A reconnect loop's wait: up to `delay`, less if the process stops or the master moves
    /// (then there is somewhere to reconnect to now).
    pub(crate) fn sleep(&self, shutdown: &Shutdown, delay: Duration) {
        let generation = self.status.generation();
        let deadline = Instant::now() + delay;
        while !shutdown.is_set() && self.status.generation() == generation {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Checks at start-up that Redis accepts this service: a certificate or credentials it
    /// refuses are a configuration error, named by its setting; an unreachable Redis is not
    /// (it is retried with backoff).
    pub(crate) fn check(&self) -> Result<(), TargetError> {
        match self.open(COMMAND_TIMEOUT) {
            Ok(_) => Ok(()),
            Err(e) => match refusal(&e, &self.target) {
                Some(refused) => Err(refused),
                None => {
                    warn!(
                        "Redis ({}) is not reachable yet: {e}; starting anyway and retrying with backoff",
                        self.target.describe()
                    );
                    Ok(())
                }
            },
        }
    }

    /// A new connection to the current node, and that node's generation.
    fn open(&self, read: Duration) -> redis::RedisResult<(redis::Connection, u64)> {
        let Some(sentinels) = self.target.sentinels() else {
            let generation = self.status.generation();
            let client = match self.target.standalone() {
                Some((_, client)) => client,
                None => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "no Redis configured",
                    )));
                }
            };
            return Ok((connect(client, read)?, generation));
        };
        let known = self.master.lock().clone();
        if let Some(master) = known
            && !self.suspect.load(Ordering::Acquire)
        {
            return match connect(&master.client, read) {
                Ok(conn) => Ok((conn, master.generation)),
                Err(e) => {
                    self.failed(&e, master.generation);
                    Err(e)
                }
            };
        }
        let found = sentinel::find_master(&self.target, sentinels, &self.sentinel_order)?;
        self.suspect.store(false, Ordering::Release);
        if let Some(previous) = self.status.set_node(&found.node) {
            self.idle.lock().clear();
            if previous.is_empty() {
                info!(
                    "Sentinel names {} as master {}",
                    found.node, sentinels.master_name
                );
            } else {
                warn!(
                    "Redis master {} moved from {previous} to {} (Sentinel failover); every connection follows",
                    sentinels.master_name, found.node
                );
            }
        }
        let generation = self.status.generation();
        *self.master.lock() = Some(Master {
            client: found.client,
            generation,
        });
        let conn = found.conn;
        conn.set_read_timeout(Some(read))?;
        conn.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        Ok((conn, generation))
    }
}

/// Opens a connection with bounded connect, read and write times.
fn connect(client: &redis::Client, read: Duration) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(read))?;
    conn.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(conn)
}

/// Whether `error` says the node is gone or is no longer the master: its connections are useless
/// and, with Sentinel, the master must be looked up again.
fn node_error(error: &redis::RedisError) -> bool {
    if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
        return true;
    }
    matches!(
        error.code(),
        Some("READONLY" | "MASTERDOWN" | "LOADING" | "UNBLOCKED" | "TRYAGAIN")
    )
}

/// The setting to blame when Redis refuses this service: the credentials, the CA we trust, the
/// server's name or certificate, or our client certificate. `None` for anything else (an outage,
/// retried with backoff).
fn refusal(error: &redis::RedisError, target: &Target) -> Option<TargetError> {
    use rustls::{AlertDescription, CertificateError};
    let url = target.url_variable();
    let fault = |variable: &'static str, rule: String| Some(TargetError { variable, rule });
    if error.to_string().contains(sentinel::SENTINEL_REFUSED) {
        return fault("REDIS_SENTINEL_PASSWORD", error.to_string());
    }
    if error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
    {
        return fault(
            url,
            format!("Redis refused the user and password of the URL: {error}"),
        );
    }
    match tls_error(error)? {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => fault(
            url,
            format!(
                "the Redis server's certificate is not valid for the host name in the URL ({error}); use a name the certificate holds"
            ),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => fault(
            url,
            format!("the Redis server's certificate is outside its validity period ({error})"),
        ),
        rustls::Error::InvalidCertificate(_) => fault(
            "REDIS_TLS_CA_FILE",
            format!(
                "the Redis server's certificate is not trusted ({error}); set REDIS_TLS_CA_FILE to the CA that signed it (unset, Mozilla's roots are trusted)"
            ),
        ),
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied,
        ) => fault(
            "REDIS_TLS_CERT_FILE",
            format!(
                "the Redis server refused our client certificate ({error}); set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE to a certificate its CA signed"
            ),
        ),
        other => fault(url, format!("the TLS handshake with Redis failed: {other}")),
    }
}

/// The rustls error under a Redis error, if the TLS handshake failed.
fn tls_error(error: &redis::RedisError) -> Option<rustls::Error> {
    use std::error::Error;
    let source = error.source()?;
    // The crate keeps its cause behind an `Arc`; an I/O error carries rustls' inside.
    let inner: &(dyn Error + 'static) = match source.downcast_ref::<Arc<dyn Error + Send + Sync>>()
    {
        Some(shared) => &**shared,
        None => source,
    };
    if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
        return Some(tls.clone());
    }
    let io = inner.downcast_ref::<std::io::Error>()?;
    io.get_ref()?.downcast_ref::<rustls::Error>().cloned()
}
