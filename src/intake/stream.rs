//! The `intake-stream` thread: durable intake from a Redis Stream with a consumer group
//! (`WEBHOOK_EVENT_STREAM`; entry fields `channel` and `message`, meaning what a pub/sub message
//! on that channel means).
//!
//! An entry is acknowledged (XACK) only once its deliveries are recorded in Redis, so a crash or
//! an outage between reading and recording leaves it pending, to be read again. On start the
//! thread first re-reads its own pending entries. The consumer name is the instance id, so the
//! entries of a consumer whose instance heartbeat has stopped are taken over as soon as that is
//! seen (XPENDING + XCLAIM, checked every 2 s; the consumer is then deleted), and any entry left
//! pending for a minute is taken over regardless (XAUTOCLAIM, every 30 s). A deleted group
//! (NOGROUP) is recreated.
//! Errors back off exponentially; one warning per outage. After a Sentinel failover the reader
//! moves to the new master and first re-reads its pending entries there.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use redis::Commands;
use redis::streams::{
    StreamAutoClaimOptions, StreamClaimReply, StreamId, StreamInfoConsumer,
    StreamInfoConsumersReply, StreamPendingCountReply, StreamReadOptions, StreamReadReply,
};

use super::Intake;
use crate::redis_conn::RedisPool;
use crate::shutdown::Shutdown;
use crate::shutdown::{Backoff, Outage};
use crate::webhook::registry::Registry;

/// Entries read per call.
const COUNT: usize = 100;
/// How long one read blocks (ms).
const BLOCK_MS: usize = 500;
/// Pending this long, an entry of another consumer is taken over.
const CLAIM_IDLE_MS: u64 = 60_000;
/// How often to look for abandoned entries.
const CLAIM_EVERY: Duration = Duration::from_secs(30);
/// How often to look for consumers whose instance has stopped.
const DEAD_EVERY: Duration = Duration::from_secs(2);
/// An entry another survivor claimed less than this long ago is left to it (XCLAIM min-idle),
/// so two survivors never take the same entry.
const DEAD_CLAIM_IDLE_MS: u64 = 1_000;

/// Starts the stream reader.
pub(crate) fn spawn(
    redis: Arc<RedisPool>,
    registry: Arc<Registry>,
    intake: Arc<Intake>,
    stream: String,
    group: String,
    consumer: String,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("intake-stream".into())
        .spawn(move || {
            let reader = Reader {
                stream,
                group,
                consumer,
                intake,
            };
            let mut backoff = Backoff::default();
            let mut outage = Outage::default();
            while !shutdown.is_set() {
                let result = match registry.is_loaded() {
                    true => Ok(()),
                    false => registry.reload(&redis),
                }
                .and_then(|()| reader.run(&redis, &shutdown, &mut backoff, &mut outage));
                if shutdown.is_set() {
                    break;
                }
                match result {
                    Err(e) if outage.failed() => {
                        warn!(
                            "cannot read stream {}: {e}; retrying with backoff",
                            reader.stream
                        )
                    }
                    Err(e) => debug!("stream {} still unreadable: {e}", reader.stream),
                    Ok(()) => {}
                }
                let delay = backoff.next_delay();
                redis.sleep(&shutdown, delay);
            }
        })
}

struct Reader {
    stream: String,
    group: String,
    consumer: String,
    intake: Arc<Intake>,
}

impl Reader {
    fn run(
        &self,
        redis: &RedisPool,
        shutdown: &Shutdown,
        backoff: &mut Backoff,
        outage: &mut Outage,
    ) -> redis::RedisResult<()> {
        let mut dedicated = redis.dedicated(Duration::from_millis(BLOCK_MS as u64 + 5_000))?;
        let generation = dedicated.generation();
        let result = self.read_all(
            redis,
            generation,
            &mut dedicated.conn,
            shutdown,
            (backoff, outage),
        );
        if let Err(e) = &result {
            redis.failed(e, generation);
        }
        result
    }

    /// Reads until shutdown, an error, or a failover (then the caller reconnects).
    fn read_all(
        &self,
        redis: &RedisPool,
        generation: u64,
        conn: &mut redis::Connection,
        shutdown: &Shutdown,
        (backoff, outage): (&mut Backoff, &mut Outage),
    ) -> redis::RedisResult<()> {
        self.ensure_group(conn)?;
        if outage.recovered() {
            info!("reading stream {} again", self.stream);
        } else {
            info!(
                "reading stream {} as {} in group {}",
                self.stream, self.consumer, self.group
            );
        }
        backoff.reset();
        // Our own entries read before a crash or an outage, not yet acknowledged.
        self.read(conn, "0")?;
        let mut last_claim: Option<Instant> = None;
        let mut last_dead_check = Instant::now();
        while !shutdown.is_set() {
            if !redis.is_current(generation) {
                info!(
                    "the Redis master moved; reading stream {} there",
                    self.stream
                );
                return Ok(());
            }
            if last_claim.is_none_or(|at| at.elapsed() >= CLAIM_EVERY) {
                self.take_over(conn)?;
                last_claim = Some(Instant::now());
            }
            if last_dead_check.elapsed() >= DEAD_EVERY {
                self.take_over_dead(conn)?;
                last_dead_check = Instant::now();
            }
            match self.read(conn, ">") {
                Ok(()) => {}
                Err(e) if e.code() == Some("NOGROUP") => {
                    warn!(
                        "consumer group {} on {} disappeared; recreating it",
                        self.group, self.stream
                    );
                    self.ensure_group(conn)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn ensure_group(&self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        let created: redis::RedisResult<()> =
            conn.xgroup_create_mkstream(&self.stream, &self.group, "0");
        match created {
            Ok(()) => {
                info!("created consumer group {} on {}", self.group, self.stream);
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads from `id` ("0": our pending entries; ">": new ones) and handles what comes.
    fn read(&self, conn: &mut redis::Connection, id: &str) -> redis::RedisResult<()> {
        loop {
            let mut options = StreamReadOptions::default()
                .group(&self.group, &self.consumer)
                .count(COUNT);
            if id == ">" {
                options = options.block(BLOCK_MS);
            }
            let reply: Option<StreamReadReply> =
                conn.xread_options(&[&self.stream], &[id], &options)?;
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            let n = entries.len();
            self.handle(conn, entries)?;
            // New entries: one read per call. Pending ones: until none is left.
            if id == ">" || n == 0 {
                return Ok(());
            }
        }
    }

    /// Takes over entries another consumer left pending.
    fn take_over(&self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        let mut start = "0-0".to_string();
        for _ in 0..100 {
            let reply: redis::streams::StreamAutoClaimReply = conn.xautoclaim_options(
                &self.stream,
                &self.group,
                &self.consumer,
                CLAIM_IDLE_MS,
                &start,
                StreamAutoClaimOptions::default().count(COUNT),
            )?;
            if !reply.claimed.is_empty() {
                info!(
                    "took over {} stream entries left pending by another consumer",
                    reply.claimed.len()
                );
            }
            self.handle(conn, reply.claimed)?;
            if reply.next_stream_id == "0-0" {
                break;
            }
            start = reply.next_stream_id;
        }
        Ok(())
    }

    /// Takes over the pending entries of consumers whose instance heartbeat has stopped, and
    /// deletes those consumers once nothing is pending for them.
    fn take_over_dead(&self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        let info: StreamInfoConsumersReply = conn.xinfo_consumers(&self.stream, &self.group)?;
        let others: Vec<StreamInfoConsumer> = info
            .consumers
            .into_iter()
            .filter(|c| c.name != self.consumer)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = others.iter().map(|c| c.name.clone()).collect();
        let alive = match self.intake.dispatcher.durable.alive(&names) {
            Ok(alive) => alive,
            Err(e) => {
                debug!("{e}; not looking for stopped stream consumers now");
                return Ok(());
            }
        };
        for (consumer, alive) in others.into_iter().zip(alive) {
            if !alive {
                self.take_over_consumer(conn, &consumer.name)?;
            }
        }
        Ok(())
    }

    /// Claims and handles what the stopped `consumer` left pending, then deletes it once nothing
    /// is pending for it.
    fn take_over_consumer(
        &self,
        conn: &mut redis::Connection,
        consumer: &str,
    ) -> redis::RedisResult<()> {
        let pending = |conn: &mut redis::Connection, count: usize| {
            conn.xpending_consumer_count::<_, _, _, _, _, _, StreamPendingCountReply>(
                &self.stream,
                &self.group,
                "-",
                "+",
                count,
                consumer,
            )
        };
        let mut taken = 0;
        // Bounded: at most 100 rounds of COUNT entries per check.
        for _ in 0..100 {
            let ids: Vec<String> = pending(conn, COUNT)?
                .ids
                .into_iter()
                .map(|p| p.id)
                .collect();
            if ids.is_empty() {
                break;
            }
            let claimed: StreamClaimReply = conn.xclaim(
                &self.stream,
                &self.group,
                &self.consumer,
                DEAD_CLAIM_IDLE_MS,
                &ids,
            )?;
            if claimed.ids.is_empty() {
                // Another survivor is taking them: leave the rest to it.
                break;
            }
            taken += claimed.ids.len();
            self.handle(conn, claimed.ids)?;
        }
        if taken > 0 {
            warn!(
                "stream consumer {consumer} stopped (no instance heartbeat); took over {taken} entries it left pending on {}",
                self.stream
            );
        }
        if pending(conn, 1)?.ids.is_empty() {
            let _: usize = conn.xgroup_delconsumer(&self.stream, &self.group, consumer)?;
            debug!("deleted stopped stream consumer {consumer}");
        }
        Ok(())
    }

    /// Processes entries and acknowledges those whose deliveries are safely recorded.
    fn handle(
        &self,
        conn: &mut redis::Connection,
        entries: Vec<StreamId>,
    ) -> redis::RedisResult<()> {
        let mut done = Vec::with_capacity(entries.len());
        let mut unrecorded = None;
        let source = format!("stream:{}", self.stream);
        for entry in &entries {
            let channel: Option<String> = entry.get("channel");
            let message: Option<Vec<u8>> = entry.get("message");
            let safe = match (channel, message) {
                (Some(channel), Some(message)) => {
                    self.intake.process(&source, &channel, &message, true)
                }
                _ => {
                    self.intake.malformed_entry(&source, &entry.id);
                    true
                }
            };
            if !safe {
                // Not acknowledged: it stays pending, and so do the entries after it (each would
                // wait out the same failed recording, and a job's events keep their order).
                unrecorded = Some(entry.id.as_str());
                break;
            }
            done.push(entry.id.as_str());
        }
        if !done.is_empty() {
            conn.xack::<_, _, _, ()>(&self.stream, &self.group, &done)?;
        }
        match unrecorded {
            // Reconnecting (after the backoff) reads the pending entries again first.
            Some(id) => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "deliveries could not be recorded; the entry and those after it stay pending",
                format!("entry {id} of {}", self.stream),
            ))),
            None => Ok(()),
        }
    }
}
