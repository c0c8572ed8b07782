//! Redis as production runs it (issue #12): TLS and mutual TLS, a user limited by ACL, Sentinel
//! failover, several instances on one Redis. Every Redis process, certificate and receiver is
//! made by the test on 127.0.0.1; every loop is bounded.

mod acl;
mod scale;
mod sentinel;
mod tls;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_port;
use crate::support::receiver::Receiver;

/// Long enough for anything that involves a failover or thousands of events on a loaded machine.
const LONG: Duration = Duration::from_secs(60);

/// `complete_job` messages for `job-<prefix>-<i>`.
fn job(prefix: &str, i: usize) -> String {
    format!(r#"{{"job_id":"job-{prefix}-{i}","worker_id":"w1","result":{{}},"timestamp":{i}}}"#)
}

/// The job ids whose deliveries `receiver` got, and how many requests repeated one.
fn jobs_received(receiver: &Receiver) -> (HashSet<String>, usize) {
    let mut seen = HashSet::new();
    let mut repeats = 0;
    for request in receiver.requests() {
        if let Some(id) = request.json()["data"]["job_id"].as_str()
            && !seen.insert(id.to_string())
        {
            repeats += 1;
        }
    }
    (seen, repeats)
}

/// Ids `job-<prefix>-0..n` missing from `seen`.
fn missing(seen: &HashSet<String>, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("job-{prefix}-{i}"))
        .filter(|id| !seen.contains(id))
        .collect()
}

/// Runs the service binary with exactly `env` and expects it to stop by itself within 20 s;
/// returns its exit code and what it wrote to stderr.
fn start_and_expect_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_webhook-service"))
        .env_clear()
        .env("WEBHOOK_SERVICE_PORT", free_port().to_string())
        .env("WEBHOOK_SERVICE_HOST", "127.0.0.1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the service: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (code, stderr)
}
