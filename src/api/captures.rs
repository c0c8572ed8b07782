//! Captured requests of the capture URLs (reference section 6): what a request looked like, kept
//! as bytes, and the monitor sessions' in-memory store under one memory budget.
//!
//! A capture keeps every header in arrival order, the query, and the body's first 16 KiB as the
//! bytes received, never a parsed JSON tree (a parsed array of small numbers is about 35 times
//! its text). JSON is written only when a capture is listed: a body that is valid JSON is written
//! as it came, anything else as a string, as the original shows them.
//!
//! The sessions' store counts what each capture holds. Beyond `WEBHOOK_CAPTURE_MAX_BYTES` for all
//! sessions together, the oldest captures (of any session) go; each session also keeps only its
//! newest 100, and sessions idle for an hour, or beyond 1000, are forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::request::Request;
use crate::json::{ObjectWriter, write_str};

/// Captured bodies are cut to this many bytes (capture URLs need no token).
pub(crate) const BODY_KEPT: usize = 16 * 1024;
/// Requests kept per session (the original's figure).
pub(crate) const REQUESTS_KEPT: usize = 100;
/// Sessions kept at once.
const MAX_SESSIONS: usize = 1000;
/// A session with no capture for this long is forgotten (the original's hour).
const IDLE: Duration = Duration::from_secs(3600);
/// What a capture costs beyond its text: the record, its `Arc`, its place in a queue.
const OVERHEAD: usize = 160;
/// What a session costs beyond its id: its entry in the map and its queue.
const SESSION_OVERHEAD: usize = 128;

/// What a session costs the budget before any capture: its id comes from the URL, up to the
/// 64 KiB a request head may have, so a thousand sessions could hold 64 MiB outside the budget.
fn session_cost(id: &str) -> usize {
    SESSION_OVERHEAD + id.len()
}

/// One captured request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Capture {
    /// `req_<ms>_<9 base36>`.
    pub(crate) id: String,
    /// When it arrived, ms since the epoch.
    pub(crate) timestamp: u64,
    method: String,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    body: Box<[u8]>,
    /// Whether `body` is JSON text (written as it is) rather than text (written as a string).
    body_is_json: bool,
    truncated: bool,
    ip: String,
}

impl Capture {
    /// The capture of `request`, its body cut to [`BODY_KEPT`] bytes.
    pub(crate) fn new(request: &Request) -> Capture {
        let body = request.body.bytes();
        let kept = &body[..body.len().min(BODY_KEPT)];
        let truncated = request.body_len.max(body.len()) > BODY_KEPT;
        // A cut body is text, even where its start happens to be JSON (a long number).
        let body_is_json =
            !truncated && serde_json::from_slice::<serde::de::IgnoredAny>(kept).is_ok();
        let kept = if body_is_json {
            kept.trim_ascii()
        } else {
            kept
        };
        Capture {
            id: format!(
                "req_{}_{}",
                crate::time::now_ms(),
                crate::webhook::ids::random_base36(9)
            ),
            timestamp: crate::time::now_ms(),
            method: request.method.clone(),
            headers: request.headers.clone(),
            query: request.query.0.clone(),
            body: kept.into(),
            body_is_json,
            truncated,
            ip: request.client_ip.clone(),
        }
    }

    /// The memory the capture holds, as the budget counts it.
    pub(crate) fn size(&self) -> usize {
        let pairs = |p: &[(String, String)]| -> usize {
            p.iter().map(|(k, v)| k.len() + v.len() + 48).sum()
        };
        OVERHEAD
            + self.id.len()
            + self.method.len()
            + self.ip.len()
            + self.body.len()
            + pairs(&self.headers)
            + pairs(&self.query)
    }

    /// The record as the original lists it: `{id, timestamp, method, headers, body, query,
    /// user_agent, ip}` and `body_truncated`. Headers are an object in arrival order; a header
    /// sent twice is one entry, its values joined with ", " (as Node joins them).
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let mut w = ObjectWriter::new(self.body.len() + 512);
        w.str("id", &self.id)
            .u64("timestamp", self.timestamp)
            .str("method", &self.method)
            .raw("headers", &object(&self.headers))
            .raw("body", &self.body_json())
            .raw("query", &object(&self.query))
            .str("user_agent", self.header("user-agent").unwrap_or(""))
            .str("ip", &self.ip)
            .bool("body_truncated", self.truncated);
        w.finish()
    }

    fn header(&self, name: &str) -> Option<&str> {
        super::request::header(&self.headers, name)
    }

    fn body_json(&self) -> Vec<u8> {
        if self.body_is_json {
            return self.body.to_vec();
        }
        let mut out = Vec::with_capacity(self.body.len() + 2);
        write_str(&mut out, &String::from_utf8_lossy(&self.body));
        out
    }
}

/// `pairs` as a JSON object of strings; a repeated name is one entry, values joined by ", ".
fn object(pairs: &[(String, String)]) -> Vec<u8> {
    let mut merged: Vec<(&str, String)> = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        match merged.iter_mut().find(|(n, _)| n == name) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    let mut w = ObjectWriter::new(64);
    for (name, value) in &merged {
        w.str(name, value);
    }
    w.finish()
}

/// The monitor sessions' captures, newest first per session, under one memory budget.
#[derive(Debug)]
pub(crate) struct Sessions {
    inner: Mutex<Store>,
}

#[derive(Debug)]
struct Store {
    sessions: HashMap<String, Session>,
    /// What every capture held counts, against `budget`.
    bytes: usize,
    budget: usize,
    /// Orders captures across sessions, oldest lowest.
    next_seq: u64,
}

#[derive(Debug)]
struct Session {
    last: Instant,
    /// Newest first, each with its sequence number.
    captures: VecDeque<(u64, Arc<Capture>)>,
}

impl Sessions {
    /// An empty store that keeps at most `budget` bytes of captures.
    pub(crate) fn new(budget: usize) -> Sessions {
        Sessions {
            inner: Mutex::new(Store {
                sessions: HashMap::new(),
                bytes: 0,
                budget,
                next_seq: 0,
            }),
        }
    }

    /// Keeps `capture` as `session`'s newest, then drops what is over the limits.
    pub(crate) fn record(&self, session: &str, capture: Capture) {
        let size = capture.size();
        let mut store = self.inner.lock();
        if !store.sessions.contains_key(session) {
            store.forget_idle_sessions();
            store.bytes += session_cost(session);
        }
        let seq = store.next_seq;
        store.next_seq += 1;
        store.bytes += size;
        let entry = store
            .sessions
            .entry(session.to_string())
            .or_insert_with(|| Session {
                last: Instant::now(),
                captures: VecDeque::new(),
            });
        entry.last = Instant::now();
        entry.captures.push_front((seq, Arc::new(capture)));
        let mut freed = 0;
        while entry.captures.len() > REQUESTS_KEPT {
            if let Some((_, old)) = entry.captures.pop_back() {
                freed += old.size();
            }
        }
        store.bytes -= freed;
        while store.bytes > store.budget && store.drop_oldest() {}
    }

    /// `session`'s total count and its newest `limit` captures.
    pub(crate) fn list(&self, session: &str, limit: usize) -> (usize, Vec<Arc<Capture>>) {
        let store = self.inner.lock();
        match store.sessions.get(session) {
            Some(s) => (
                s.captures.len(),
                s.captures
                    .iter()
                    .take(limit)
                    .map(|(_, c)| c.clone())
                    .collect(),
            ),
            None => (0, Vec::new()),
        }
    }

    /// Forgets `session`; returns how many captures it had.
    pub(crate) fn clear(&self, session: &str) -> usize {
        let mut store = self.inner.lock();
        let Some(removed) = store.sessions.remove(session) else {
            return 0;
        };
        let freed: usize = removed.captures.iter().map(|(_, c)| c.size()).sum();
        store.bytes -= freed + session_cost(session);
        removed.captures.len()
    }

    /// The bytes the captures hold, as the budget counts them.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

impl Store {
    fn forget_idle_sessions(&mut self) {
        let mut freed = 0;
        self.sessions.retain(|id, s| {
            let keep = s.last.elapsed() < IDLE;
            if !keep {
                freed += session_cost(id) + s.captures.iter().map(|(_, c)| c.size()).sum::<usize>();
            }
            keep
        });
        while self.sessions.len() >= MAX_SESSIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(id, _)| id.clone());
            let Some(id) = oldest else {
                break;
            };
            match self.sessions.remove(&id) {
                Some(s) => {
                    freed +=
                        session_cost(&id) + s.captures.iter().map(|(_, c)| c.size()).sum::<usize>();
                }
                None => break,
            }
        }
        self.bytes -= freed;
    }

    /// Drops the oldest capture of all sessions; `false` if there is none.
    fn drop_oldest(&mut self) -> bool {
        let oldest = self
            .sessions
            .iter()
            .filter_map(|(id, s)| s.captures.back().map(|(seq, _)| (*seq, id)))
            .min()
            .map(|(_, id)| id.clone());
        let Some(id) = oldest else {
            return false;
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            return false;
        };
        if let Some((_, capture)) = session.captures.pop_back() {
            self.bytes -= capture.size();
        }
        if session.captures.is_empty() {
            self.sessions.remove(&id);
            self.bytes -= session_cost(&id);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::{Body, Query};

    fn request(body: &[u8], headers: &[(&str, &str)]) -> Request {
        Request {
            method: "POST".into(),
            path: "/webhook-monitor/s".into(),
            query: Query(vec![("a".into(), "1".into())]),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Body(body.to_vec()),
            body_len: body.len(),
            client_ip: "127.0.0.1".into(),
        }
    }

    fn json(capture: &Capture) -> serde_json::Value {
        serde_json::from_slice(&capture.to_json()).unwrap_or_default()
    }

    #[test]
    fn captures_keep_every_header_in_order_and_the_body_as_sent() {
        let headers = [
            ("user-agent", "probe/1"),
            ("x-probe", "p1"),
            ("accept", "*/*"),
            ("x-probe", "p2"),
        ];
        let record = json(&Capture::new(&request(b" {\"n\": [1, 2.0]} ", &headers)));
        let names: Vec<&String> = record["headers"]
            .as_object()
            .map(|h| h.keys().collect())
            .unwrap_or_default();
        assert_eq!(names, ["user-agent", "x-probe", "accept"]);
        assert_eq!(record["headers"]["x-probe"], "p1, p2");
        assert_eq!(record["body"], serde_json::json!({"n": [1, 2.0]}));
        assert_eq!(record["user_agent"], "probe/1");
        assert_eq!(record["query"]["a"], "1");
        assert_eq!(record["body_truncated"], false);
        let text = json(&Capture::new(&request(b"not json \xff", &[])));
        assert_eq!(text["body"], "not json \u{fffd}");
        let big = vec![b'7'; BODY_KEPT + 1];
        let cut = json(&Capture::new(&request(&big, &[])));
        assert_eq!(cut["body"].as_str().map(str::len), Some(BODY_KEPT));
        assert_eq!(cut["body_truncated"], true);
    }

    #[test]
    fn the_budget_drops_the_oldest_captures_of_any_session() {
        let body = vec![b'1'; 10_000];
        let one = Capture::new(&request(&body, &[])).size();
        let sessions = Sessions::new(one * 25);
        for n in 0..40 {
            sessions.record(&format!("s{}", n % 4), Capture::new(&request(&body, &[])));
        }
        assert!(sessions.bytes() <= one * 25, "{}", sessions.bytes());
        let kept: usize = (0..4).map(|s| sessions.list(&format!("s{s}"), 100).0).sum();
        assert!((24..=25).contains(&kept), "{kept}");
        // The oldest went: every session kept its newest.
        let (total, newest) = sessions.list("s3", 1);
        assert!(total >= 5);
        assert_eq!(newest.len(), 1);
        assert_eq!(sessions.clear("s3"), total);
        assert_eq!(sessions.list("s3", 10).0, 0);
    }

    #[test]
    fn a_session_keeps_its_newest_hundred() {
        let sessions = Sessions::new(1 << 30);
        for n in 0..150 {
            sessions.record("s", Capture::new(&request(format!("{n}").as_bytes(), &[])));
        }
        let (total, newest) = sessions.list("s", 1);
        assert_eq!(total, REQUESTS_KEPT);
        assert_eq!(json(&newest[0])["body"], 149);
        let sizes: usize = sessions.list("s", 100).1.iter().map(|c| c.size()).sum();
        assert_eq!(sessions.bytes(), sizes + session_cost("s"));
        sessions.clear("s");
        assert_eq!(sessions.bytes(), 0);
    }

    #[test]
    fn session_ids_count_against_the_budget() {
        let budget = 1 << 20;
        let sessions = Sessions::new(budget);
        let long = "a".repeat(60_000);
        for n in 0..100 {
            sessions.record(&format!("{n}{long}"), Capture::new(&request(b"{}", &[])));
        }
        assert!(sessions.bytes() <= budget, "{}", sessions.bytes());
        let kept = (0..100)
            .filter(|n| sessions.list(&format!("{n}{long}"), 1).0 > 0)
            .count();
        assert!(
            (10..=17).contains(&kept),
            "{kept} sessions of 60 kB ids kept"
        );
        assert_eq!(
            sessions.list(&format!("99{long}"), 1).0,
            1,
            "the newest stays"
        );
    }
}
