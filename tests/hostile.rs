//! Hostile clients must neither crash nor wedge the API (issue #3): each test attacks the real
//! service over loopback, then checks that it is still running and still answers others.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::service::Service;
use crate::{call, setup};

fn connect(service: &Service) -> TcpStream {
    let stream =
        TcpStream::connect(("127.0.0.1", service.port)).unwrap_or_else(|e| panic!("connect: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    stream
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
fn connections_over_the_limit_get_503_and_idle_ones_are_closed() {
    let (_redis, mut service) = setup(&[
        ("WEBHOOK_API_MAX_CONNECTIONS", "8"),
        ("WEBHOOK_API_IDLE_TIMEOUT_MS", "500"),
    ]);
    let idle: Vec<TcpStream> = (0..8).map(|_| connect(&service)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let refused = exchange(&service, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    // The idle ones are closed after their timeout, and service resumes.
    std::thread::sleep(Duration::from_millis(800));
    still_serving(&mut service);
    drop(idle);
}

#[test]
fn two_hundred_idle_connections_do_not_wedge_the_api() {
    let (_redis, mut service) = setup(&[]);
    let idle: Vec<TcpStream> = (0..200).map(|_| connect(&service)).collect();
    std::thread::sleep(Duration::from_millis(300));
    still_serving(&mut service);
    let threads = service.threads().unwrap_or(0);
    // Bounded: three per open connection (two relays, one tiny_http) plus the fixed ones.
    assert!(
        threads <= 3 * 200 + 40,
        "{threads} threads with 200 idle connections"
    );
    drop(idle);
    still_serving(&mut service);
}
