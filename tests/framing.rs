//! RFC 9112 corners on the wire (issue #10): framing the server refuses rather than guesses at
//! (request smuggling), lenient forms it serves, the keep-alive hint, and how path values decode.
//! Each case is sent byte for byte on a connection of its own, with a request after it that
//! shows whether the server kept its framing.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::raw::{self, closes, read_response};
use crate::support::service::Service;
use crate::{call, setup};

fn connect(service: &Service) -> TcpStream {
    raw::connect(service.port)
}

/// Requests the server must refuse (RFC 9112), each followed on its connection by a `GET
/// /health` the server must never answer: framing it cannot be sure of is never guessed, since a
/// proxy in front may have guessed otherwise (request smuggling). 400, or 501 for a transfer
/// coding it does not know.
const AMBIGUOUS: [(&str, &[u8]); 14] = [
    (
        "a header folded onto a second line (obs-fold)",
        b"POST /webhook-monitor/s HTTP/1.1
Host: x
Content-Length:
 2

{}",
    ),
    (
        "white space between a header name and its colon",
        b"POST /webhook-monitor/s HTTP/1.1
Host: x
Transfer-Encoding : chunked

0

",
    ),
    ("an HTTP/1.1 request without Host", b"GET /health HTTP/1.1\r\n\r\n"),
    (
        "two Host headers",
        b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ),
    (
        "Content-Length with a no-break space",
        b"POST /webhook-monitor/s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\xc2\xa0\r\n\r\n{}",
    ),
    (
        "Transfer-Encoding with a no-break space",
        b"POST /webhook-monitor/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\xc2\xa0\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding in HTTP/1.0",
        b"POST /webhook-monitor/s HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "a chunk size with a sign",
        b"POST /webhook-monitor/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\n{}\r\n0\r\n\r\n",
    ),
    (
        "a chunk size after a space",
        b"POST /webhook-monitor/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 2\r\n{}\r\n0\r\n\r\n",
    ),
    (
        "a chunk size in 0x form",
        b"POST /webhook-monitor/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
    ),
    (
        "a chunk line ended by a bare LF",
        b"POST /webhook-monitor/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n",
    ),
    (
        "chunk data ended by a bare LF",
        b"POST /webhook-monitor/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\n0\r\n\r\n",
    ),
    (
        "a bare CR in a chunk extension",
        b"POST /webhook-monitor/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;a\rb\r\n{}\r\n0\r\n\r\n",
    ),
    (
        "both Content-Length and Transfer-Encoding",
        b"POST /webhook-monitor/s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
];

#[test]
fn ambiguous_framing_is_refused_and_nothing_after_it_is_read() {
    let (_redis, service) = setup(&[]);
    for (what, request) in AMBIGUOUS {
        let mut stream = connect(&service);
        let mut bytes = request.to_vec();
        bytes.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = stream.write_all(&bytes);
        let mut buf = Vec::new();
        let answer = read_response(&mut stream, &mut buf, false);
        let status = if what.starts_with("Transfer-Encoding with") {
            501
        } else {
            400
        };
        assert_eq!(answer.status, status, "{what}: {}", answer.head);
        assert_eq!(answer.header("connection"), Some("close"), "{what}");
        assert_eq!(answer.json()["success"], false, "{what}");
        assert!(
            buf.is_empty() && closes(&mut stream),
            "{what}: the server read on: {}",
            String::from_utf8_lossy(&buf)
        );
    }
    // Nothing was captured from those bodies.
    let listed = call(&service, "GET", "/webhook-monitor/s/requests", None, &[]);
    assert_eq!(listed.body["data"]["total_requests"], 0, "{}", listed.text);
}

#[test]
fn lenient_but_unambiguous_forms_are_served() {
    let (_redis, service) = setup(&[]);
    let cases: [(&str, &[u8], u16); 7] = [
        (
            "chunk extensions, trailers and white space before a chunk extension",
            b"POST /webhook-monitor/ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n2 ;a=b;c=\"d e\"\r\n{}\r\n0;z\r\nX-Trailer: t\r\n\r\n",
            200,
        ),
        (
            "a Content-Length sent twice, the same",
            b"POST /webhook-monitor/ok HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
            200,
        ),
        (
            "lines ended by a bare LF in the head (RFC 9112 2.2)",
            b"GET /health HTTP/1.1\nHost: x\n\n",
            200,
        ),
        (
            "an absolute-form target",
            b"GET http://x/health?full=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            200,
        ),
        (
            "HTTP/1.0 without Host",
            b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            200,
        ),
        (
            "a header value with bytes that are not ASCII",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n",
            200,
        ),
        (
            "OPTIONS for the whole server",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            204,
        ),
    ];
    for (what, request, status) in cases {
        let mut stream = connect(&service);
        let mut bytes = request.to_vec();
        bytes.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(&bytes);
        let mut buf = Vec::new();
        let answer = read_response(&mut stream, &mut buf, false);
        assert_eq!(answer.status, status, "{what}: {}", answer.head);
        assert_ne!(answer.header("connection"), Some("close"), "{what}");
        if status == 204 {
            assert!(
                answer.header("allow").is_some_and(|a| a.contains("GET")),
                "{}",
                answer.head
            );
        }
        let next = read_response(&mut stream, &mut buf, false);
        assert_eq!(next.status, 200, "{what}: the request after it");
        assert!(closes(&mut stream), "{what}");
    }
    let listed = call(&service, "GET", "/webhook-monitor/ok/requests", None, &[]);
    assert_eq!(listed.body["data"]["total_requests"], 2, "{}", listed.text);
}

#[test]
fn the_keep_alive_hint_never_promises_more_than_the_idle_timeout() {
    for (idle_ms, hint) in [("500", None), ("2500", Some("timeout=2"))] {
        let (_redis, service) = setup(&[("WEBHOOK_API_IDLE_TIMEOUT_MS", idle_ms)]);
        let mut stream = connect(&service);
        let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = Vec::new();
        let answer = read_response(&mut stream, &mut buf, false);
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("keep-alive"), hint, "idle {idle_ms} ms");
        assert_eq!(answer.header("connection"), None);
        // Idle past the timeout: closed without a word (no 408 between requests).
        let started = Instant::now();
        assert!(closes(&mut stream), "idle {idle_ms} ms");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}

#[test]
fn path_values_decode_as_the_original_decodes_them() {
    let (_redis, service) = setup(&[]);
    // decodeURIComponent: `+` stays `+` in a path (it is a space only in a query).
    let captured = call(
        &service,
        "POST",
        "/webhook-monitor/a+b%20c%E2%9C%93?q=x+y",
        Some("{}"),
        &[],
    );
    assert_eq!(
        captured.body["session_id"], "a+b c\u{2713}",
        "{}",
        captured.text
    );
    let listed = call(
        &service,
        "GET",
        "/webhook-monitor/a+b%20c%E2%9C%93/requests",
        None,
        &[],
    );
    assert_eq!(listed.body["data"]["requests"][0]["query"]["q"], "x y");
    // A control character is in no id, and would end up in log lines.
    for path in [
        "/webhook-monitor/a%0Ab",
        "/webhooks/x%0D%0AERROR",
        "/webhooks/%+a",
    ] {
        let answer = call(&service, "POST", path, Some("{}"), &[]);
        assert_eq!(answer.status, 404, "{path}: {}", answer.text);
    }
}
