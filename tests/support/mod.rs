//! What the integration tests run against: a real `redis-server`, real HTTP receivers on
//! 127.0.0.1, and the real service binary as a child process.

#![allow(dead_code)]

pub mod attack;
pub mod fds;
pub mod raw;
pub mod receiver;
pub mod redis;
pub mod service;
pub mod topology;

use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (the OS picks it; the listener is closed again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    try_wait_until(timeout, check)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `check` until it returns `Some` (that value) or `timeout` passes (`None`).
pub fn try_wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
