//! The test process's open-file limit. Tests that hold a thousand sockets need more descriptors
//! than some machines allow by default (a soft limit of 1024 is common); this raises the soft
//! limit of this process only, up to its hard limit, with util-linux's `prlimit`. Nothing global
//! changes, and a service started afterwards inherits the raised limit.

use std::process::Command;
use std::sync::Mutex;

/// (soft, hard) `RLIMIT_NOFILE` of this process, from /proc.
fn limits() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap_or(u64::MAX));
    Some((numbers.next()?, numbers.next()?))
}

/// Makes sure this process may open at least `needed` files, raising its soft limit if it must;
/// panics, saying why, if the hard limit is lower.
pub fn ensure(needed: u64) {
    static RAISING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = RAISING.lock();
    let Some((soft, hard)) = limits() else {
        return;
    };
    if soft >= needed {
        return;
    }
    assert!(
        hard >= needed,
        "this test holds {needed} sockets, but the open-file hard limit is {hard}"
    );
    let raised = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status();
    let after = limits().map_or(0, |(soft, _)| soft);
    assert!(
        after >= needed,
        "this test holds {needed} sockets; the open-file limit is {soft} and could not be raised ({raised:?})"
    );
    eprintln!("note: raised this test process's open-file limit from {soft} to {after}");
}
