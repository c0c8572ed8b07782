//! Randomness: a fast per-thread generator for jitter, seeded from the operating system.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // When the OS cannot give randomness, fall back to the clock: jitter needs spread, not secrecy.
    getrandom::u64().unwrap_or_else(|_| crate::time::now_ms() ^ 0x9e37_79b9_7f4a_7c15) | 1
}

/// A uniform number in [0, 1) (xorshift64*; not for secrets).
pub(crate) fn unit() -> f64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    })
}
