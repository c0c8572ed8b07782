//! The API's HTTP/1.x edge as clients see it on the wire (issue #10): pipelining, `Expect:
//! 100-continue`, chunked bodies, `HEAD`, HTTP/1.0, `Connection: close` wherever the server
//! closes, whole-head and whole-body deadlines, captured requests with every header, and test
//! deliveries to the service's own capture URL.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::raw::{self, Response, closes, read_response};
use crate::support::service::Service;
use crate::{call, setup};

fn connect(service: &Service) -> TcpStream {
    raw::connect(service.port)
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (_redis, service) = setup(&[]);
    let mut stream = connect(&service);
    let requests = concat!(
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /webhook-monitor/pipe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"n\":1}",
        "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /webhook-monitor/pipe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"n\r\n4\r\n\":2}\r\n0\r\n\r\n",
        "HEAD /webhook-monitor/pipe/requests HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /webhook-monitor/pipe/requests HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    stream
        .write_all(requests.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = Vec::new();
    let heads = [false, false, false, false, true, false];
    let answers: Vec<Response> = heads
        .iter()
        .map(|head| read_response(&mut stream, &mut buf, *head))
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 200, 404, 200, 200, 200]);
    assert_eq!(answers[0].json()["status"], "ok");
    assert_eq!(answers[2].json()["error"], "Endpoint not found");
    // HEAD: the length GET would send, and no body.
    let listed = &answers[5];
    assert_eq!(
        answers[4].header("content-length"),
        Some(listed.body.len().to_string().as_str())
    );
    let bodies: Vec<Value> = listed.json()["data"]["requests"]
        .as_array()
        .map(|r| r.iter().map(|c| c["body"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(bodies, [json!({"n": 2}), json!({"n": 1})], "newest first");
    assert_eq!(listed.header("connection"), Some("close"));
    for answer in &answers[..5] {
        assert_eq!(answer.header("connection"), None, "{}", answer.head);
    }
    assert!(buf.is_empty(), "bytes after the last response: {buf:?}");
    assert!(closes(&mut stream));
}

#[test]
fn fifty_pipelined_requests_with_bodies_are_answered_in_order_in_one_write() {
    let (_redis, service) = setup(&[]);
    let mut stream = connect(&service);
    let mut requests = Vec::new();
    for i in 0..50 {
        let body = format!("{{\"n\":{i}}}");
        let request = match i % 4 {
            0 => "GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            1 => format!(
                "POST /webhook-monitor/pipe50 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            2 => format!(
                "PUT /webhook-monitor/pipe50 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            ),
            _ => "GET /webhook-monitor/pipe50/requests?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                .to_string(),
        };
        requests.extend_from_slice(request.as_bytes());
    }
    stream
        .write_all(&requests)
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = Vec::new();
    for i in 0..50 {
        let answer = read_response(&mut stream, &mut buf, false);
        assert_eq!(answer.status, 200, "request {i}: {}", answer.head);
        match i % 4 {
            0 => assert_eq!(answer.json()["status"], "ok", "request {i}"),
            1 | 2 => assert_eq!(answer.json()["session_id"], "pipe50", "request {i}"),
            // The newest capture is the request just before: answered in order.
            _ => assert_eq!(
                answer.json()["data"]["requests"][0]["body"]["n"],
                i - 1,
                "request {i}"
            ),
        }
    }
    assert!(buf.is_empty(), "bytes after the last response: {buf:?}");
}

#[test]
fn expect_100_continue_gets_a_go_ahead_or_a_final_answer() {
    let token = "0123456789abcdef0123";
    let (_redis, service) = setup(&[("WEBHOOK_API_TOKEN", token)]);
    let body = r#"{"url":"http://127.0.0.1:9/","events":["job.completed"]}"#;
    let mut stream = connect(&service);
    let head = format!(
        "POST /webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let mut buf = Vec::new();
    let go_ahead = read_response(&mut stream, &mut buf, false);
    assert_eq!(go_ahead.status, 100, "{}", go_ahead.head);
    let _ = stream.write_all(body.as_bytes());
    let created = read_response(&mut stream, &mut buf, false);
    assert_eq!(created.status, 201, "{:?}", created.json());
    // Refused from its head: the final answer at once, no body expected, and the server closes.
    let mut refused = connect(&service);
    let head =
        "PUT /webhooks/x HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\nExpect: 100-continue\r\n\r\n";
    let _ = refused.write_all(head.as_bytes());
    let mut buf = Vec::new();
    let answer = read_response(&mut refused, &mut buf, false);
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closes(&mut refused));
    // Over the size limit: 413 at once, no go-ahead, nothing read.
    let mut too_large = connect(&service);
    let head = format!(
        "POST /webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n"
    );
    let _ = too_large.write_all(head.as_bytes());
    let mut buf = Vec::new();
    let answer = read_response(&mut too_large, &mut buf, false);
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closes(&mut too_large));
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let (_redis, service) = setup(&[]);
    let mut stream = connect(&service);
    let _ = stream.write_all(b"GET /health HTTP/1.0\r\n\r\n");
    let mut buf = Vec::new();
    let answer = read_response(&mut stream, &mut buf, false);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closes(&mut stream));
    let mut kept = connect(&service);
    for n in 0..3 {
        let _ = kept.write_all(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let answer = read_response(&mut kept, &mut buf, false);
        assert_eq!(answer.status, 200, "request {n}");
        assert_eq!(answer.header("connection"), Some("keep-alive"));
    }
    // `close` wins, whatever else the header says.
    let _ = kept.write_all(
        b"GET /health HTTP/1.0
Connection: keep-alive, close

",
    );
    let answer = read_response(&mut kept, &mut buf, false);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closes(&mut kept));
}

#[test]
fn responses_after_which_the_server_closes_say_so() {
    let (_redis, service) = setup(&[("WEBHOOK_MAX_BODY_BYTES", "4096")]);
    let cases: [&[u8]; 4] = [
        // A body over the limit, declared: refused before it is read.
        b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        // Over the limit, chunked: refused when the limit is passed.
        b"POST /webhooks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n",
        b"GET /health HTTP/1.1\r\nHost x\r\n\r\n",
        b"POST /webhooks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    ];
    let expected = [413, 413, 400, 501];
    for (request, status) in cases.iter().zip(expected) {
        let mut stream = connect(&service);
        let _ = stream.write_all(request);
        if status == 413 && request.ends_with(b"1001\r\n") {
            let _ = stream.write_all(&[b'a'; 0x1001]);
        }
        let mut buf = Vec::new();
        let answer = read_response(&mut stream, &mut buf, false);
        let text = String::from_utf8_lossy(request);
        assert_eq!(answer.status, status, "{text}");
        assert_eq!(answer.header("connection"), Some("close"), "{text}");
        assert_eq!(answer.json()["success"], false, "{text}");
        assert!(closes(&mut stream), "{text}");
    }
    // A small refused body is read and dropped: the connection carries on.
    let mut stream = connect(&service);
    let _ = stream.write_all(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut stream, &mut buf, false).status, 404);
    assert_eq!(read_response(&mut stream, &mut buf, false).status, 200);
}

#[test]
fn a_preflight_and_a_401_keep_the_connection_for_the_next_request() {
    let token = "0123456789abcdef0123";
    let (_redis, service) = setup(&[
        ("WEBHOOK_API_TOKEN", token),
        ("CORS_ORIGINS", "https://ui.example"),
    ]);
    let mut stream = connect(&service);
    let mut buf = Vec::new();
    let origin = "Origin: https://ui.example\r\n";
    let requests = [
        format!(
            "OPTIONS /webhooks HTTP/1.1\r\nHost: x\r\n{origin}Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n"
        ),
        format!("GET /webhooks HTTP/1.1\r\nHost: x\r\n{origin}\r\n"),
        format!(
            "POST /webhooks HTTP/1.1\r\nHost: x\r\n{origin}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        ),
        format!(
            "GET /webhooks HTTP/1.1\r\nHost: x\r\n{origin}Authorization: Bearer {token}\r\n\r\n"
        ),
    ];
    let expected = [204, 401, 401, 200];
    for (request, status) in requests.iter().zip(expected) {
        let _ = stream.write_all(request.as_bytes());
        let answer = read_response(&mut stream, &mut buf, false);
        assert_eq!(answer.status, status, "{request}");
        assert_eq!(answer.header("connection"), None, "{request}");
        assert_eq!(
            answer.header("access-control-allow-origin"),
            Some("https://ui.example"),
            "{request}"
        );
        if status == 204 {
            assert_eq!(answer.header("content-length"), None);
            assert!(answer.body.is_empty());
        }
    }
    assert!(buf.is_empty());
    assert_eq!(service.connections_used("/webhooks ").len(), 1);
}

/// How a one-request connection (`Connection: close`) fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum OneShot {
    /// A whole response.
    Answered(u16),
    /// The connection was refused: the server had stopped listening.
    Refused,
    /// Accepted, the request sent, then closed or reset with no response: a request lost.
    Lost,
}

fn one_shot(port: u16) -> OneShot {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return OneShot::Refused;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let sent = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = Vec::new();
    match (sent, raw::try_read_response(&mut stream, &mut buf, false)) {
        (Ok(()), Ok(answer)) => OneShot::Answered(answer.status),
        _ => OneShot::Lost,
    }
}

#[test]
fn sigterm_answers_every_request_it_read_and_exits_promptly() {
    let (_redis, mut service) = setup(&[]);
    let port = service.port;
    // Idle kept-alive connections, a slowloris, and a client that pipelines large responses
    // and reads none: none of them may hold the exit up.
    let mut idle = Vec::new();
    for _ in 0..50 {
        let mut stream = connect(&service);
        let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = Vec::new();
        assert_eq!(read_response(&mut stream, &mut buf, false).status, 200);
        idle.push(stream);
    }
    let mut slowloris = connect(&service);
    let _ = slowloris.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    let mut no_reader = connect(&service);
    let _ = no_reader.set_nonblocking(true);
    for _ in 0..300 {
        let _ = no_reader.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    // Clients making one request per connection, as probes and curl do, before, during and
    // after the stop: each is refused or answered, never accepted and dropped.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut seen = std::collections::BTreeMap::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(20)
                {
                    *seen.entry(one_shot(port)).or_insert(0usize) += 1;
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let stopped = service.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = std::collections::BTreeMap::new();
    for client in clients {
        for (outcome, n) in client.join().unwrap_or_default() {
            *seen.entry(outcome).or_insert(0) += n;
        }
    }
    let Some((code, took)) = stopped else {
        panic!("the service did not exit within 10 s of SIGTERM; clients saw {seen:?}");
    };
    eprintln!("exit {took:?} after SIGTERM; one-request clients: {seen:?}");
    assert_eq!(code, 0);
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    assert!(
        seen.get(&OneShot::Answered(200)).copied().unwrap_or(0) > 50,
        "{seen:?}"
    );
    assert_eq!(
        seen.get(&OneShot::Lost),
        None,
        "requests lost in the stop: {seen:?}"
    );
}

#[test]
fn heads_and_bodies_must_arrive_whole_before_their_deadlines() {
    let (_redis, service) = setup(&[
        ("WEBHOOK_API_HEAD_TIMEOUT_MS", "1000"),
        ("WEBHOOK_API_BODY_TIMEOUT_MS", "1000"),
    ]);
    let cases: [(&[u8], &str); 2] = [
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            "the request head",
        ),
        (
            b"POST /webhook-monitor/s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
            "the request body",
        ),
    ];
    for (start, what) in cases {
        let mut stream = connect(&service);
        let _ = stream.set_nonblocking(true);
        let _ = stream.write_all(start);
        // A byte every 100 ms: each read is quick, the whole is not.
        let started = Instant::now();
        let mut reply = Vec::new();
        while started.elapsed() < Duration::from_secs(6) {
            let _ = stream.write_all(b"a");
            std::thread::sleep(Duration::from_millis(100));
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        let took = started.elapsed();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 408"), "{what}: {reply}");
        assert!(
            reply.contains(&format!("{what} did not arrive in time")),
            "{reply}"
        );
        assert!(
            took < Duration::from_secs(4),
            "{what} was cut after {took:?}"
        );
    }
}

#[test]
fn captured_requests_keep_every_header_in_order() {
    let (_redis, service) = setup(&[]);
    let created = call(&service, "POST", "/test-receivers", None, &[]);
    let id = created.body["data"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut stream = connect(&service);
    let body = r#"{"probe":true}"#;
    let request = format!(
        "POST /test-receivers/{id}/webhook?q=1 HTTP/1.1\r\nHost: x\r\nX-Probe: p1\r\nUser-Agent: probe/1\r\nX-Forwarded-For: 6.6.6.6\r\nContent-Type: application/json\r\nX-Dup: a\r\nContent-Length: {}\r\nX-Dup: b\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(request.as_bytes());
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut stream, &mut buf, false).status, 200);
    let listed = call(
        &service,
        "GET",
        &format!("/test-receivers/{id}/requests"),
        None,
        &[],
    );
    let captured = &listed.body["data"]["requests"][0];
    let headers: Vec<(String, Value)> = captured["headers"]
        .as_object()
        .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let expected = [
        ("host", "x"),
        ("x-probe", "p1"),
        ("user-agent", "probe/1"),
        ("x-forwarded-for", "6.6.6.6"),
        ("content-type", "application/json"),
        ("x-dup", "a, b"),
        ("content-length", "14"),
        ("connection", "close"),
    ];
    let expected: Vec<(String, Value)> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    assert_eq!(headers, expected);
    assert_eq!(captured["body"], json!({"probe": true}));
    assert_eq!(captured["query"], json!({"q": "1"}));
    // The address the connection came from, not the header the client sent.
    assert_eq!(captured["ip"], "127.0.0.1");
    assert_eq!(captured["user_agent"], "probe/1");
}

#[test]
fn test_deliveries_to_the_services_own_monitor_url_all_succeed() {
    let (_redis, service) = setup(&[]);
    let events = [
        "job_submitted",
        "update_job_progress",
        "complete_job",
        "job_failed",
        "cancel_job",
        "worker_status",
        "workflow_submitted",
        "workflow_completed",
        "workflow_failed",
        "machine_status",
    ];
    let url = format!(
        "http://127.0.0.1:{}/webhook-monitor/self_test",
        service.port
    );
    let body = json!({"url": url, "events": events}).to_string();
    let created = call(&service, "POST", "/webhooks", Some(&body), &[]);
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["data"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    for round in 0..20 {
        let tested = call(&service, "POST", &format!("/webhooks/{id}/test"), None, &[]);
        assert_eq!(tested.status, 200);
        let results = tested.body["data"]["results"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let delivered = results.iter().filter(|r| r["delivered"] == true).count();
        assert_eq!(delivered, 10, "round {round}: {:?}", tested.body);
        assert_eq!(tested.body["success"], true);
    }
    let listed = call(
        &service,
        "GET",
        "/webhook-monitor/self_test/requests?limit=100",
        None,
        &[],
    );
    assert_eq!(
        listed.body["data"]["total_requests"], 100,
        "the newest 100 of 200"
    );
}
