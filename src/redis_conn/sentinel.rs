//! Finding the master through Sentinel, as the Sentinel client specification describes: ask each
//! sentinel in turn for the master's address (`SENTINEL GET-MASTER-ADDR-BY-NAME`), connect to
//! it, check that it calls itself master (`ROLE`), and move the sentinel that answered to the
//! front of the list.
//!
//! Our own rather than the redis crate's blocking `Sentinel`: that one connects and reads without
//! time limits, so one black-holed sentinel would hang the thread that is trying to fail over.
//! Here every connection has a connect and a read limit, and a sentinel that does not answer is
//! skipped.

use std::time::Duration;

use log::debug;
use parking_lot::Mutex;

use super::{CONNECT_TIMEOUT, Target};
use crate::config::target::Sentinels;

/// Time allowed for a sentinel's or a candidate master's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A master found: its `host:port`, a client for it, and the connection the check was made on.
pub(crate) struct Found {
    pub(crate) node: String,
    pub(crate) client: redis::Client,
    pub(crate) conn: redis::Connection,
}

/// Asks the sentinels, in `order` (indexes into `sentinels.nodes`, the last one that answered
/// first), for the current master of `target`.
pub(crate) fn find_master(
    target: &Target,
    sentinels: &Sentinels,
    order: &Mutex<Vec<usize>>,
) -> redis::RedisResult<Found> {
    let tried: Vec<usize> = order.lock().clone();
    let mut last_error = None;
    for index in tried {
        let Some((name, client)) = sentinels.nodes.get(index) else {
            continue;
        };
        match ask(target, &sentinels.master_name, client) {
            Ok(found) => {
                let mut order = order.lock();
                order.retain(|i| *i != index);
                order.insert(0, index);
                return Ok(found);
            }
            Err(e) => {
                debug!(
                    "sentinel {name} gave no usable master for {}: {e}",
                    sentinels.master_name
                );
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "no sentinel is configured",
        ))
    }))
}

/// One sentinel's answer, checked on the master it names.
fn ask(target: &Target, master_name: &str, sentinel: &redis::Client) -> redis::RedisResult<Found> {
    let mut conn = super::connect(sentinel, REPLY_TIMEOUT).map_err(from_sentinel)?;
    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(master_name)
        .query(&mut conn)
        .map_err(from_sentinel)?;
    drop(conn);
    let Some((host, port)) = addr else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "this sentinel does not know the master name",
        )));
    };
    let node = format!("{host}:{port}");
    let client = target.node_client(&host, port)?;
    let mut conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(REPLY_TIMEOUT))?;
    conn.set_write_timeout(Some(REPLY_TIMEOUT))?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn)?;
    let is_master = matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master");
    if !is_master {
        // A sentinel's view lags a failover by a moment: the caller asks again after a backoff.
        return Err(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "the node a sentinel names is not a master (yet)",
            node,
        )));
    }
    Ok(Found { node, client, conn })
}

/// A sentinel's refusal of our credentials or of the command, told apart from the master's (the
/// sentinels have settings of their own).
fn from_sentinel(error: redis::RedisError) -> redis::RedisError {
    let refused = error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
    if !refused {
        return error;
    }
    redis::RedisError::from((
        redis::ErrorKind::AuthenticationFailed,
        SENTINEL_REFUSED,
        error.to_string(),
    ))
}

/// The description of a sentinel's refusal.
pub(crate) const SENTINEL_REFUSED: &str = "a sentinel refused REDIS_SENTINEL_USERNAME/REDIS_SENTINEL_PASSWORD or SENTINEL GET-MASTER-ADDR-BY-NAME";
