//! Sentinel: a master, a replica and three sentinels; the master killed with SIGKILL mid-stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::receiver::Receiver;
use crate::support::redis::{add_event, durable_store, first_attempt};
use crate::support::service::Service;
use crate::support::topology::SentinelSet;
use crate::support::{try_wait_until, wait_until};
use crate::{register, webhook};

use super::{LONG, job, jobs_received, missing};

/// A producer as one following Sentinel writes: to the master the sentinels name, asking again
/// whenever a write fails, and counting a write only once a replica has it (or the master has
/// no replica left), so what it counts cannot vanish in the failover.
struct Producer {
    sentinel_ports: Vec<u16>,
    /// The master, and whether it had replicas when we connected.
    conn: Option<(::redis::Connection, bool)>,
}

impl Producer {
    fn master(&mut self) -> Option<&mut (::redis::Connection, bool)> {
        if self.conn.is_none() {
            self.conn = self.sentinel_ports.iter().find_map(|port| {
                let sentinel = ::redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
                let mut conn = sentinel
                    .get_connection_with_timeout(Duration::from_millis(300))
                    .ok()?;
                let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                let (host, master_port): (String, u16) = ::redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(crate::support::topology::MASTER)
                    .query(&mut conn)
                    .ok()?;
                let master = ::redis::Client::open(format!("redis://{host}:{master_port}")).ok()?;
                let mut conn = master
                    .get_connection_with_timeout(Duration::from_millis(300))
                    .ok()?;
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let role: Vec<::redis::Value> = ::redis::cmd("ROLE").query(&mut conn).ok()?;
                let has_replicas = match (role.first(), role.get(2)) {
                    (Some(::redis::Value::BulkString(r)), Some(::redis::Value::Array(list)))
                        if r == b"master" =>
                    {
                        !list.is_empty()
                    }
                    _ => return None,
                };
                Some((conn, has_replicas))
            });
        }
        self.conn.as_mut()
    }

    /// Adds a stream entry, retrying until it is safely written (bounded by `LONG`).
    fn add(&mut self, message: &str) {
        let deadline = Instant::now() + LONG;
        while Instant::now() < deadline {
            if self.try_add(message).is_some() {
                return;
            }
            self.conn = None;
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("could not add a stream entry for {LONG:?}");
    }

    fn try_add(&mut self, message: &str) -> Option<()> {
        let (conn, has_replicas) = self.master()?;
        add_event(conn, "complete_job", message).ok()?;
        if *has_replicas {
            let replicated: i64 = ::redis::cmd("WAIT").arg(1).arg(500).query(conn).ok()?;
            // Not on the replica: written again (a duplicate at worst, never a loss).
            (replicated >= 1).then_some(())?;
        }
        Some(())
    }

    /// Publishes on the current master; how many subscribers got it (0 on any error).
    fn publish(&mut self, message: &str) -> i64 {
        let published = self.master().and_then(|(conn, _)| {
            ::redis::cmd("PUBLISH")
                .arg("complete_job")
                .arg(message)
                .query(conn)
                .ok()
        });
        if published.is_none() {
            self.conn = None;
        }
        published.unwrap_or(0)
    }
}

/// A thread adding stream entries `job-stream-0..n` (10 ms apart) and, until `stop`, publishing
/// `job-before-<i>` beside each, counting those a subscriber got.
fn produce(
    sentinel_ports: &[u16],
    n: usize,
    stop: &Arc<AtomicBool>,
    published: &Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let (ports, stop, published) = (sentinel_ports.to_vec(), stop.clone(), published.clone());
    std::thread::spawn(move || {
        let mut producer = Producer {
            sentinel_ports: ports,
            conn: None,
        };
        for i in 0..n {
            producer.add(&job("stream", i));
            if !stop.load(Ordering::Relaxed) && producer.publish(&job("before", i)) > 0 {
                published.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

#[test]
fn a_sentinel_failover_loses_no_stream_event_and_pubsub_resumes() {
    let mut set = SentinelSet::start();
    let (old_port, new_port) = (set.master.port, set.replica.port);
    let service = Service::start(
        &set.master,
        &[
            ("REDIS_URL", &set.url()),
            ("WEBHOOK_EVENT_STREAM", "events"),
        ],
    );
    let health = service.health();
    assert_eq!(health["redis"]["mode"], "sentinel", "{health}");
    assert_eq!(health["redis"]["node"], format!("127.0.0.1:{old_port}"));
    assert_eq!(health["redis"]["failovers"], 0);
    let receiver = Receiver::ok();
    let mut hook = webhook(&receiver.url("/sentinel"), &["complete_job"]);
    hook["retry_config"] = json!({"max_attempts": 20, "initial_delay_ms": 100, "backoff_multiplier": 2, "max_delay_ms": 1000});
    register(&set.master, &service, "wh_1_sentinel", hook);

    // Stream entries and pub/sub messages flow while the master dies.
    let n = 400;
    let sentinel_ports: Vec<u16> = set.sentinels.iter().map(|s| s.port).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let published_before = Arc::new(AtomicUsize::new(0));
    let producer = produce(&sentinel_ports, n, &stop, &published_before);
    wait_until(LONG, "a quarter of the stream delivered", || {
        (jobs_received(&receiver).0.len() >= n / 4).then_some(())
    });
    set.master.kill();
    let killed = Instant::now();
    let switched = wait_until(LONG, "/health to show the new master", || {
        let health = service.try_health()?;
        (health["redis"]["node"] == format!("127.0.0.1:{new_port}")).then(|| killed.elapsed())
    });
    let mut new_master = set.replica.conn();
    let resumed = wait_until(LONG, "the subscriber on the new master", || {
        let counts: Vec<(String, u64)> = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("complete_job")
            .query(&mut new_master)
            .ok()?;
        (counts.first().map(|(_, n)| *n) == Some(1)).then(|| killed.elapsed())
    });
    stop.store(true, Ordering::Relaxed);
    assert!(producer.join().is_ok(), "the producer panicked");

    // Every stream entry is delivered: none lost in the failover.
    let delivered = try_wait_until(LONG, || {
        let (seen, _) = jobs_received(&receiver);
        missing(&seen, "stream", n).is_empty().then_some(())
    });
    let (seen, repeats) = jobs_received(&receiver);
    assert!(
        delivered.is_some(),
        "lost stream entries: {:?}",
        missing(&seen, "stream", n)
    );

    // Pub/sub resumes on the new master.
    let mut producer = Producer {
        sentinel_ports,
        conn: None,
    };
    // A master with an empty script cache: the scripts are loaded again on NOSCRIPT.
    let _: () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut new_master)
        .unwrap_or_else(|e| panic!("SCRIPT FLUSH: {e}"));
    let m = 50;
    for i in 0..m {
        assert!(
            producer.publish(&job("after", i)) > 0,
            "the subscriber left"
        );
    }
    wait_until(LONG, "every pub/sub event after the failover", || {
        missing(&jobs_received(&receiver).0, "after", m)
            .is_empty()
            .then_some(())
    });
    let stats: String = ::redis::cmd("INFO")
        .arg("all")
        .query(&mut new_master)
        .unwrap_or_default();
    assert!(
        stats.contains("errorstat_NOSCRIPT") && stats.contains("cmdstat_script|load"),
        "the scripts were not loaded again after SCRIPT FLUSH"
    );
    let health = service.health();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["redis"]["failovers"], 1, "{health}");
    assert!(service.log_text().contains(&format!(
        "moved from 127.0.0.1:{old_port} to 127.0.0.1:{new_port}"
    )));
    eprintln!(
        "sentinel failover: /health showed the new master {:.1} s after the SIGKILL, pub/sub resumed after {:.1} s; {n} stream entries delivered ({repeats} repeated), {} pub/sub messages published before the kill",
        switched.as_secs_f64(),
        resumed.as_secs_f64(),
        published_before.load(Ordering::Relaxed)
    );
}

/// A failover can cut the reply of a record script that did run (and reached the replica): the
/// writer tries again on the new master. Its own claim must not read as another instance's, or
/// the event's deliveries stay leased to it and are never queued.
#[test]
fn a_record_retried_after_a_lost_reply_is_still_this_instances() {
    let redis = crate::support::redis::RedisServer::start();
    let here = durable_store(&redis, "instance-a");
    let other = durable_store(&redis, "instance-b");
    let claim = webhook_service::keys::claim(&[7; 32]);
    let deliveries = [first_attempt("wh_1_r", "wh_2_retried")];
    let first = here.record(&claim, 60_000, &deliveries);
    assert!(matches!(first, Ok(Some(_))), "{first:?}");
    let again = here.record(&claim, 60_000, &deliveries);
    assert!(
        matches!((&first, &again), (Ok(Some(a)), Ok(Some(b))) if a == b),
        "the retry did not find its own claim, with its sequence: {first:?} then {again:?}"
    );
    let elsewhere = other.record(&claim, 60_000, &deliveries);
    assert!(matches!(elsewhere, Ok(None)), "{elsewhere:?}");
}

/// The same when part of the event went straight into the due set: the retry writes nothing
/// again (a delivery taken from the due set meanwhile is not put back, nor any record reset) and
/// says where each delivery is, so the writer queues only what is still its own.
#[test]
fn a_retried_record_with_deliveries_in_the_due_set_writes_nothing_twice() {
    use webhook_service::delivery::durable::{Claim, Recording, Stored};

    let redis = crate::support::redis::RedisServer::start();
    let here = durable_store(&redis, "instance-a");
    let deliveries = [
        first_attempt("wh_1_r", "wh_2_leased"),
        first_attempt("wh_1_r", "wh_2_due"),
    ];
    let due_ms = [None, Some(4_000_000_000_000)];
    let recording = [Recording {
        claim_key: webhook_service::keys::claim(&[8; 32]),
        claim_ttl_ms: 60_000,
        deliveries: &deliveries,
        due_ms: &due_ms,
    }];
    let record = || match here.record_many(&recording) {
        Ok(claims) => claims,
        Err(e) => panic!("record: {e}"),
    };
    let Some(Claim::Now(sequence)) = record().into_iter().next() else {
        panic!("not claimed here");
    };
    let mut conn = redis.conn();
    let count = |conn: &mut ::redis::Connection, command: &str, key: &str| -> u64 {
        ::redis::cmd(command)
            .arg(key)
            .query(conn)
            .unwrap_or_else(|e| panic!("{command} {key}: {e}"))
    };
    // Recorded as one value for the due set, not yet spread there (the writer's answer is lost:
    // it never spreads it).
    assert_eq!(count(&mut conn, "ZCARD", "webhooks:due"), 0);
    assert_eq!(count(&mut conn, "HLEN", "webhooks:deferring:instance-a"), 1);
    // The retry spreads it first, and finds it there.
    assert_eq!(
        record(),
        [Claim::Before(sequence, vec![Stored::Leased, Stored::Due])]
    );
    assert_eq!(count(&mut conn, "ZCARD", "webhooks:due"), 1);
    assert_eq!(count(&mut conn, "HLEN", "webhooks:deferring:instance-a"), 0);
    let spread: String = ::redis::cmd("HGET")
        .arg("webhooks:deliveries")
        .arg("wh_2_due")
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("HGET: {e}"));
    assert!(
        spread.ends_with(&format!(",\"sequence\":{sequence}}}")),
        "{spread}"
    );
    let score: Option<u64> = ::redis::cmd("ZSCORE")
        .arg("webhooks:due")
        .arg("wh_2_due")
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("ZSCORE: {e}"));
    assert_eq!(score, Some(4_000_000_000_000));
    // A poller takes the due one meanwhile: the retry does not put it back.
    let _: () = ::redis::cmd("ZREM")
        .arg("webhooks:due")
        .arg("wh_2_due")
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("ZREM: {e}"));
    assert_eq!(
        record(),
        [Claim::Before(sequence, vec![Stored::Leased, Stored::Gone])]
    );
    let in_due: u64 = ::redis::cmd("ZCARD")
        .arg("webhooks:due")
        .query(&mut conn)
        .unwrap_or(0);
    assert_eq!(in_due, 0, "the retry put a taken delivery back");
}

/// The connections to `server` other than its replication links, the sentinels' and ours.
fn service_connections(server: &crate::support::redis::RedisServer) -> Vec<String> {
    let list: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut server.conn())
        .unwrap_or_default();
    list.lines()
        .filter(|l| !l.contains("cmd=client|list") && !l.contains("name=sentinel-"))
        .filter(|l| {
            let flags = l
                .split(' ')
                .find_map(|f| f.strip_prefix("flags="))
                .unwrap_or("");
            !flags.contains('S') && !flags.contains('M')
        })
        .map(str::to_string)
        .collect()
}

/// A failover where the old master stays up and becomes a replica (`SENTINEL FAILOVER`): no
/// connection of the service may stay on it (writes there would fail with READONLY), and events
/// keep flowing through the new master.
#[test]
fn after_a_graceful_failover_no_connection_stays_on_the_old_master() {
    let set = SentinelSet::start();
    let (old_port, new_port) = (set.master.port, set.replica.port);
    let service = Service::start(
        &set.master,
        &[
            ("REDIS_URL", &set.url()),
            ("WEBHOOK_EVENT_STREAM", "events"),
        ],
    );
    let receiver = Receiver::ok();
    register(
        &set.master,
        &service,
        "wh_1_graceful",
        webhook(&receiver.url("/graceful"), &["complete_job"]),
    );
    let mut producer = Producer {
        sentinel_ports: set.sentinels.iter().map(|s| s.port).collect(),
        conn: None,
    };
    producer.add(&job("first", 0));
    receiver.wait_for(1, LONG);
    assert!(!service_connections(&set.master).is_empty());
    let _: () = ::redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(crate::support::topology::MASTER)
        .query(&mut set.sentinels[0].conn())
        .unwrap_or_else(|e| panic!("SENTINEL FAILOVER: {e}"));
    wait_until(LONG, "the sentinels to name the replica", || {
        (set.master_port() == Some(new_port)).then_some(())
    });
    wait_until(LONG, "/health to show the new master", || {
        let health = service.try_health()?;
        (health["redis"]["node"] == format!("127.0.0.1:{new_port}")).then_some(())
    });
    // Every thread left the old master (which answers, as a replica).
    let left = try_wait_until(LONG, || {
        service_connections(&set.master).is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "connections still on the old master {old_port}: {:#?}",
        service_connections(&set.master)
    );
    producer.conn = None;
    let n = 20;
    for i in 0..n {
        producer.add(&job("moved", i));
    }
    wait_until(LONG, "the stream on the new master", || {
        missing(&jobs_received(&receiver).0, "moved", n)
            .is_empty()
            .then_some(())
    });
    wait_until(LONG, "the subscriber on the new master", || {
        (producer.publish(&job("moved-p", 0)) > 0).then_some(())
    });
    wait_until(LONG, "a pub/sub event through the new master", || {
        jobs_received(&receiver)
            .0
            .contains("job-moved-p-0")
            .then_some(())
    });
}
