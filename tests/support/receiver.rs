//! A real HTTP/1.1 receiver on 127.0.0.1 that records every request byte for byte and answers
//! as the test tells it: a status, a hang, or a closed connection. Keep-alive is supported.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::wait_until;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Captured {
    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the receiver does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status, extra headers and body.
    Status(u16, Vec<(String, String)>, String),
    /// Read the request, then never answer (until the receiver is dropped).
    Hang,
    /// Read the request, then close the connection without a word.
    Close,
    /// Answer 200 after this long.
    Slow(Duration),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status(200, Vec::new(), "{\"ok\":true}".into())
    }

    pub fn status(code: u16) -> Reply {
        Reply::Status(code, Vec::new(), String::new())
    }
}

type Behaviour = dyn Fn(&Captured, usize) -> Reply + Send + Sync;

/// A running receiver.
pub struct Receiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Captured>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub fn ok() -> Receiver {
        Receiver::start(|_, _| Reply::ok())
    }

    /// A receiver that answers 200 after `slow` for `first` from its first request on, then
    /// at once: an endpoint that backs up, then recovers.
    pub fn slow_at_first(first: Duration, slow: Duration) -> Receiver {
        let first_request = Mutex::new(None::<std::time::Instant>);
        Receiver::start(move |_, _| {
            let started = first_request
                .lock()
                .map(|mut at| *at.get_or_insert_with(std::time::Instant::now))
                .unwrap_or_else(|_| std::time::Instant::now());
            if started.elapsed() < first {
                Reply::Slow(slow)
            } else {
                Reply::ok()
            }
        })
    }

    /// A receiver whose answer to the `n`-th request (0-based, all paths together) is
    /// `behaviour(request, n)`.
    pub fn start(
        behaviour: impl Fn(&Captured, usize) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let (r, s) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, s, b) = (r.clone(), s.clone(), behaviour.clone());
                        std::thread::spawn(move || serve(stream, r, s, b));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Receiver {
            port,
            requests,
            stop,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Captured> {
        wait_until(
            timeout,
            &format!("{n} requests at port {}", self.port),
            || {
                let all = self.requests();
                (all.len() >= n).then_some(all)
            },
        )
    }

    /// How many distinct `X-Event-ID`s arrived, and how many requests repeated one.
    pub fn distinct_events(&self) -> (usize, usize) {
        let all = self.requests();
        let mut ids: Vec<String> = all
            .iter()
            .filter_map(|r| r.header("x-event-id").map(str::to_string))
            .collect();
        let total = ids.len();
        ids.sort();
        ids.dedup();
        (ids.len(), total - ids.len())
    }

    /// Requests whose path is `path`.
    pub fn on(&self, path: &str) -> Vec<Captured> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: TcpStream,
    requests: Arc<Mutex<Vec<Captured>>>,
    stop: Arc<AtomicBool>,
    behaviour: Arc<Behaviour>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let idle_deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) && Instant::now() < idle_deadline {
        let captured = match read_request(&mut reader, &stop) {
            Some(c) => c,
            None => return,
        };
        let n = {
            let mut all = match requests.lock() {
                Ok(a) => a,
                Err(_) => return,
            };
            all.push(captured.clone());
            all.len() - 1
        };
        match behaviour(&captured, n) {
            Reply::Status(code, headers, body) => {
                let mut head = format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\n", body.len());
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                head.push_str(&body);
                if writer.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Slow(pause) => {
                std::thread::sleep(pause);
                let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if writer.write_all(ok.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Hang => {
                let until = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Reply::Close => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Reads one request; `None` on EOF, error or stop.
fn read_request(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<Captured> {
    let mut line = String::new();
    if read_line_blocking(reader, &mut line, stop)? == 0 {
        return None;
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if read_line_blocking(reader, &mut h, stop)? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        if name == "content-length" {
            length = value.parse().ok()?;
        }
        headers.push((name, value));
    }
    let mut body = vec![0u8; length];
    let mut filled = 0;
    while filled < body.len() {
        match reader.read(&mut body[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    Some(Captured {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}

fn read_line_blocking(
    reader: &mut BufReader<TcpStream>,
    line: &mut String,
    stop: &AtomicBool,
) -> Option<usize> {
    loop {
        match reader.read_line(line) {
            Ok(n) => return Some(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}
