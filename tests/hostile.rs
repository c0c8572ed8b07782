//! Hostile clients must neither crash nor wedge the API (issues #3 and #10): each test attacks
//! the real service over loopback, and checks, while the attack goes on, that `/health` answers a
//! new connection with 200 within 200 ms and that a webhook can be created and delivered to.
//! Attacks last a few seconds; each is bounded by count and time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::attack::{
    ATTACK_LIMIT, Attack, Baseline, Regulars, attack_alone, serves_others_meanwhile,
};
use crate::support::fds;
use crate::support::raw;
use crate::support::receiver::Receiver;
use crate::support::redis::RedisServer;
use crate::support::service::Service;
use crate::support::try_wait_until;
use crate::{SOON, call, setup};

fn connect(service: &Service) -> TcpStream {
    raw::connect(service.port)
}

/// Sends `head` and reads what comes back until the server closes or `limit` passes.
fn exchange(service: &Service, head: &[u8]) -> String {
    let mut stream = connect(service);
    let _ = stream.write_all(head);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// Asserts the service runs and answers /health within a second.
fn still_serving(service: &mut Service) {
    assert!(
        service.is_running(),
        "the service died:\n{}",
        service.log_text()
    );
    let started = Instant::now();
    let health = call(service, "GET", "/health", None, &[]);
    assert_eq!(health.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/health took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_huge_declared_content_length_gets_413() {
    let (_redis, mut service) = setup(&[]);
    let reply = exchange(
        &service,
        b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000000000\r\nConnection: close\r\n\r\n{\"url\":",
    );
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("Request body too large"), "{reply}");
    still_serving(&mut service);
}

#[test]
fn a_chunked_body_of_100_mib_gets_413_without_being_kept() {
    let (_redis, mut service) = setup(&[]);
    let mut stream = connect(&service);
    let _ = stream.write_all(b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = vec![b'a'; 64 * 1024];
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < 100 * 1024 * 1024 && started.elapsed() < Duration::from_secs(30) {
        let head = format!("{:x}\r\n", chunk.len());
        if stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&chunk))
            .and_then(|()| stream.write_all(b"\r\n"))
            .is_err()
        {
            break; // the server stopped reading: fine
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 413"),
        "after {sent} bytes: {reply}"
    );
    still_serving(&mut service);
}

#[test]
fn a_client_that_stalls_mid_header_is_dropped_and_blocks_nobody() {
    let (_redis, mut service) = setup(&[("WEBHOOK_API_IDLE_TIMEOUT_MS", "1000")]);
    let mut stalled = connect(&service);
    let _ = stalled.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Half: ");
    still_serving(&mut service);
    let started = Instant::now();
    let mut reply = Vec::new();
    let _ = stalled.read_to_end(&mut reply);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stalled connection was kept {:?}",
        started.elapsed()
    );
    still_serving(&mut service);
}

#[test]
fn a_one_mib_header_is_refused() {
    let (_redis, mut service) = setup(&[]);
    let mut head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let reply = exchange(&service, &head);
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "a 1 MiB header was answered with {}",
        reply.lines().next().unwrap_or("")
    );
    assert!(reply.contains("Request header fields too large"));
    still_serving(&mut service);
}

#[test]
fn connections_over_the_limit_evict_idle_ones_and_get_503_only_when_all_are_busy() {
    let hang = Receiver::start(|_, _| crate::support::receiver::Reply::Hang);
    let (_redis, mut service) = setup(&[
        ("WEBHOOK_API_MAX_CONNECTIONS", "8"),
        ("WEBHOOK_TIMEOUT_MS", "3000"),
    ]);
    // Eight idle connections fill the slots; a new one evicts the longest idle.
    let mut idle: Vec<TcpStream> = (0..8).map(|_| connect(&service)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let served = exchange(
        &service,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    let mut evicted = Vec::new();
    let _ = idle[0].read_to_end(&mut evicted);
    assert!(
        evicted.is_empty(),
        "the oldest idle connection is closed without a word"
    );
    drop(idle);
    // Eight test deliveries to a hanging target hold every slot with a request in a handler
    // (two run, the others wait for the slow lane): only then is a new connection refused.
    let body = json!({"url": hang.url("/hook"), "events": ["job.completed"]}).to_string();
    let created = call(&service, "POST", "/webhooks", Some(&body), &[]);
    let id = created.body["data"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    // The tests' own client (a kept-alive connection) was answered moments ago, so it keeps its
    // slot over a brand-new connection for a while: let that pass, so that it is the one evicted.
    std::thread::sleep(Duration::from_millis(400));
    let busy: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = connect(&service);
            let request = format!("POST /webhooks/{id}/test HTTP/1.1\r\nHost: x\r\n\r\n");
            let _ = stream.write_all(request.as_bytes());
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let refused = exchange(&service, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("Connection: close"), "{refused}");
    drop(busy);
    // The test deliveries time out; service resumes.
    let resumed = try_wait_until(SOON, || {
        let answer = exchange(
            &service,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        answer.starts_with("HTTP/1.1 200").then_some(())
    });
    assert!(resumed.is_some(), "the API did not resume");
    still_serving(&mut service);
}

#[test]
fn two_hundred_idle_connections_do_not_wedge_the_api() {
    let (_redis, mut service) = setup(&[]);
    let fixed = service.threads().unwrap_or(0);
    let idle: Vec<TcpStream> = (0..200).map(|_| connect(&service)).collect();
    std::thread::sleep(Duration::from_millis(300));
    still_serving(&mut service);
    let threads = service.threads().unwrap_or(0);
    // Bounded: one small thread per open connection, plus the fixed ones (and a few for the
    // requests of `still_serving`).
    assert!(
        threads <= fixed + 200 + 8,
        "{threads} threads with 200 idle connections"
    );
    drop(idle);
    still_serving(&mut service);
}

#[test]
fn regular_keep_alive_clients_are_never_evicted_for_slow_ones() {
    let _alone = attack_alone();
    fds::ensure(2048);
    let (_redis, service) = setup(&[]);
    let baseline = Baseline::take(&service);
    let attacks: [(&str, &'static [u8], u8); 2] = [
        (
            "slowloris",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            b'a',
        ),
        (
            "slow bodies",
            b"POST /webhook-monitor/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
            b' ',
        ),
    ];
    for (what, start, drip) in attacks {
        // 50 regular clients and 300 attackers: over the 256 connections allowed, so every new
        // attacker connection takes someone's slot. It must never be a regular client's.
        let regulars = Regulars::start(service.port, 50);
        let attack = Attack::drip(service.port, 300, start, drip);
        std::thread::sleep(Duration::from_secs(4));
        let opened = attack.opened.load(Ordering::Relaxed);
        drop(attack);
        let answered = regulars.stop();
        assert!(opened > 300, "{what}: the attack opened only {opened}");
        match answered {
            Ok(n) => assert!(n >= 500, "{what}: only {n} answers"),
            Err(failures) => panic!(
                "{what}: {} of 50 regular clients lost a request: {failures:#?}",
                failures.len()
            ),
        }
    }
    baseline.restored(&service, "after the attacks");
}

#[test]
fn three_hundred_slowloris_connections_keep_nobody_out() {
    let _alone = attack_alone();
    fds::ensure(2048);
    let (redis, mut service) = setup(&[]);
    let baseline = Baseline::take(&service);
    let attack = Attack::drip(
        service.port,
        300,
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        b'a',
    );
    std::thread::sleep(Duration::from_millis(1500));
    serves_others_meanwhile(&service, &redis, "slowloris");
    assert!(attack.opened.load(Ordering::Relaxed) >= 300);
    drop(attack);
    baseline.restored(&service, "after slowloris");
    still_serving(&mut service);
}

#[test]
fn eight_slow_body_uploads_hold_no_handler() {
    let _alone = attack_alone();
    let (redis, mut service) = setup(&[]);
    let baseline = Baseline::take(&service);
    let attack = Attack::drip(
        service.port,
        8,
        b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
        b' ',
    );
    std::thread::sleep(Duration::from_millis(1500));
    serves_others_meanwhile(&service, &redis, "slow bodies");
    drop(attack);
    baseline.restored(&service, "after slow bodies");
    still_serving(&mut service);
}

#[test]
fn clients_that_never_read_their_responses_keep_nobody_out() {
    let _alone = attack_alone();
    let (redis, mut service) = setup(&[]);
    let baseline = Baseline::take(&service);
    // Each pipelines large responses (the OpenAPI document, 50 KiB) and reads none: the server's
    // writes block once the socket buffers are full.
    let request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(400);
    let readers: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut stream = connect(&service);
            let _ = stream.set_nonblocking(true);
            let mut sent = 0;
            while sent < request.len() {
                match stream.write(&request[sent..]) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    serves_others_meanwhile(&service, &redis, "clients that never read");
    drop(readers);
    baseline.restored(&service, "after the clients that never read");
    still_serving(&mut service);
}

#[test]
fn a_connection_limit_over_the_open_file_limit_is_not_reached_by_idle_connections() {
    let _alone = attack_alone();
    fds::ensure(2048);
    // Allowed 1,024 connections, the process may open only 300 files: without care, 400 idle
    // connections exhaust its descriptors before its slots, and nothing is evicted.
    let redis = RedisServer::start();
    let service =
        Service::start_with_open_files(&redis, &[("WEBHOOK_API_MAX_CONNECTIONS", "1024")], 300);
    let idle: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", service.port)).ok())
        .collect();
    assert_eq!(idle.len(), 400);
    std::thread::sleep(Duration::from_millis(500));
    serves_others_meanwhile(
        &service,
        &redis,
        "idle connections past the open-file limit",
    );
    assert!(
        service.log_text().contains("may open only 300 files"),
        "the lower limit is not explained in the log"
    );
    drop(idle);
}

#[test]
fn a_thousand_idle_connections_keep_nobody_out() {
    let _alone = attack_alone();
    fds::ensure(2048);
    let (redis, mut service) = setup(&[]);
    let baseline = Baseline::take(&service);
    let fixed = service.threads().unwrap_or(0);
    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", service.port)).ok())
        .collect();
    assert_eq!(
        idle.len(),
        1000,
        "connections opened in {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(500));
    serves_others_meanwhile(&service, &redis, "idle connections");
    let threads = service.threads().unwrap_or(0);
    // One thread per kept connection (256 at the default limit) besides the fixed ones.
    assert!(
        threads <= fixed + 256 + 8,
        "{threads} threads, {fixed} before"
    );
    drop(idle);
    baseline.restored(&service, "after idle connections");
    still_serving(&mut service);
}

#[test]
fn unauthenticated_uploads_hold_no_more_than_a_capture_each() {
    let _alone = attack_alone();
    const CLIENTS: usize = 200;
    let (_redis, mut service) = setup(&[("WEBHOOK_API_TOKEN", "0123456789abcdef0123")]);
    let baseline = Baseline::take(&service);
    let before = service.rss_bytes().unwrap_or(0);
    // Public routes only: capture URLs, and /health with a body it has no use for. Each client
    // sends all of a 1 MiB body but its last byte, so that every body is in the server at once.
    let body = numbers(1024 * 1024 - 64);
    let mut uploads: Vec<TcpStream> = (0..CLIENTS)
        .map(|n| {
            let mut stream = connect(&service);
            let path = if n % 4 == 0 {
                "/health".to_string()
            } else {
                format!("/webhook-monitor/upload_{n}")
            };
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..body.len() - 1]);
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let held = service.rss_bytes().unwrap_or(0).saturating_sub(before);
    // Then each completes and is answered: 405 for /health, 200 for the captures.
    let mut statuses = std::collections::BTreeMap::new();
    for stream in &mut uploads {
        let _ = stream.write_all(&body[body.len() - 1..]);
        let mut buf = Vec::new();
        let status = raw::try_read_response(stream, &mut buf, false).map(|r| r.status);
        *statuses.entry(format!("{status:?}")).or_insert(0) += 1;
    }
    eprintln!("{CLIENTS} uploads of 1 MiB held {held} bytes of RSS; answers {statuses:?}");
    assert_eq!(
        statuses.get("Ok(200)"),
        Some(&(CLIENTS * 3 / 4)),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.get("Ok(405)"),
        Some(&(CLIENTS / 4)),
        "{statuses:?}"
    );
    assert!(
        held < 48 << 20,
        "{CLIENTS} unauthenticated uploads of 1 MiB made RSS grow by {held} bytes"
    );
    let listed = call(
        &service,
        "GET",
        "/webhook-monitor/upload_1/requests",
        None,
        &[("Authorization", "Bearer 0123456789abcdef0123")],
    );
    let capture = &listed.body["data"]["requests"][0];
    assert_eq!(capture["body_truncated"], true, "{}", listed.text);
    assert_eq!(capture["body"].as_str().map(str::len), Some(16 * 1024));
    assert_eq!(
        capture["headers"]["content-length"],
        body.len().to_string().as_str()
    );
    drop(uploads);
    baseline.restored(&service, "after the uploads");
    still_serving(&mut service);
}

#[test]
fn a_flood_of_a_test_receivers_capture_url_keeps_nobody_out() {
    let _alone = attack_alone();
    let (redis, mut service) = setup(&[]);
    let baseline = Baseline::take(&service);
    // A test receiver's capture URL needs no token: whoever was given it can flood it. Each
    // capture rewrites the receiver's record in Redis, so each costs the handler far more than
    // /health does.
    let created = call(&service, "POST", "/test-receivers", None, &[]);
    let id = created.body["data"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let body = numbers(16 * 1024);
    let mut request = format!(
        "POST /test-receivers/{id}/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let attack = Attack::flood(service.port, 16, request);
    std::thread::sleep(Duration::from_millis(1000));
    serves_others_meanwhile(&service, &redis, "test receiver flood");
    drop(attack);
    baseline.restored(&service, "after the flood");
    let listed = call(
        &service,
        "GET",
        &format!("/test-receivers/{id}/requests"),
        None,
        &[],
    );
    assert_eq!(listed.status, 200, "{}", listed.text);
    still_serving(&mut service);
}

#[test]
fn long_session_ids_count_against_the_capture_budget() {
    let _alone = attack_alone();
    const BUDGET: u64 = 1 << 20;
    let (_redis, mut service) = setup(&[("WEBHOOK_CAPTURE_MAX_BYTES", &BUDGET.to_string())]);
    let before = service.rss_bytes().unwrap_or(0);
    // Sessions named by 60 kB of URL each and sent a tiny body, on one connection: 18 MB of
    // names, for 1 MiB of captures.
    let mut stream = connect(&service);
    let mut buf = Vec::new();
    let long = "a".repeat(60_000);
    for n in 0..300 {
        let request = format!(
            "POST /webhook-monitor/{n}{long} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let _ = stream.write_all(request.as_bytes());
        let answer = raw::read_response(&mut stream, &mut buf, false);
        assert_eq!(answer.status, 200, "request {n}");
    }
    let grown = service.rss_bytes().unwrap_or(0).saturating_sub(before);
    eprintln!("300 sessions of 60 kB ids: RSS grew by {grown} bytes");
    assert!(
        grown < BUDGET + (8 << 20),
        "RSS grew by {grown} bytes for a capture budget of {BUDGET}"
    );
    let newest = call(
        &service,
        "GET",
        &format!("/webhook-monitor/299{long}/requests"),
        None,
        &[],
    );
    assert_eq!(newest.body["data"]["total_requests"], 1, "the newest stays");
    still_serving(&mut service);
}

/// A JSON array of small numbers, `bytes` long.
fn numbers(bytes: usize) -> Vec<u8> {
    let mut body = b"[1".to_vec();
    while body.len() < bytes - 3 {
        body.extend_from_slice(b",7");
    }
    body.push(b']');
    body
}

#[test]
fn a_capture_flood_stays_within_the_memory_budget() {
    let _alone = attack_alone();
    const BUDGET: u64 = 16 << 20;
    const SESSIONS: usize = 200;
    const REQUESTS: usize = 2000;
    let (redis, mut service) = setup(&[("WEBHOOK_CAPTURE_MAX_BYTES", &BUDGET.to_string())]);
    let before = service.rss_bytes().unwrap_or(0);
    let body = Arc::new(numbers(16 * 1024));
    let sent = Arc::new(AtomicUsize::new(0));
    let port = service.port;
    let senders: Vec<JoinHandle<Vec<String>>> = (0..4)
        .map(|t| {
            let (body, sent) = (body.clone(), sent.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                let mut failures = Vec::new();
                for n in (t..REQUESTS).step_by(4) {
                    let url = format!(
                        "http://127.0.0.1:{port}/webhook-monitor/flood_{}",
                        n % SESSIONS
                    );
                    let result = agent
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .send(&body[..]);
                    match result {
                        Ok(r) if r.status() == 200 => {}
                        other => failures.push(format!("{n}: {other:?}")),
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    // Meanwhile: others are served, and memory is sampled.
    let mut peak = before;
    let flood_started = Instant::now();
    while sent.load(Ordering::Relaxed) < REQUESTS / 4 && flood_started.elapsed() < ATTACK_LIMIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    serves_others_meanwhile(&service, &redis, "capture flood");
    while sent.load(Ordering::Relaxed) < REQUESTS && flood_started.elapsed() < ATTACK_LIMIT * 3 {
        peak = peak.max(service.rss_bytes().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    for sender in senders {
        let failures = sender.join().unwrap_or_default();
        assert!(failures.is_empty(), "{failures:?}");
    }
    peak = peak.max(service.rss_bytes().unwrap_or(0));
    eprintln!("capture flood: RSS {before} bytes before, {peak} at the peak");
    let limit = BUDGET + 30_000_000;
    assert!(
        peak < limit,
        "RSS peaked at {peak} bytes (from {before}) for a budget of {BUDGET}"
    );
    // The oldest went, the newest stayed: every session keeps its newest capture, and all
    // together what the budget holds.
    let mut kept = 0;
    for session in 0..SESSIONS {
        let listed = call(
            &service,
            "GET",
            &format!("/webhook-monitor/flood_{session}/requests?limit=1"),
            None,
            &[],
        );
        let total = listed.body["data"]["total_requests"].as_u64().unwrap_or(0);
        assert!(total >= 1, "session {session} lost its newest capture");
        kept += total;
    }
    let fits = BUDGET / (16 * 1024);
    assert!(
        kept <= fits && kept >= fits * 8 / 10,
        "{kept} captures kept; {fits} of 16 KiB fit the budget"
    );
    still_serving(&mut service);
}
