//! Duplicate suppression: a source event seen again within the window is not delivered again
//! (CONTRACT section 6; the original delivered every re-publish, reference B11).
//!
//! Memory is bounded: identities are kept as 128-bit hashes in arrival order, expired from the
//! front, and the oldest are dropped first when the cap is reached.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// Most identities remembered (about 40 bytes each).
const MAX_ENTRIES: usize = 500_000;

/// Identities seen within the window.
#[derive(Debug)]
pub(crate) struct Dedupe {
    window: Duration,
    seen: HashSet<u128, BuildHasherDefault<PrefixHasher>>,
    order: VecDeque<(Instant, u128)>,
}

impl Dedupe {
    /// Remembers identities for `window` (zero turns suppression off).
    pub(crate) fn new(window: Duration) -> Dedupe {
        Dedupe {
            window,
            seen: HashSet::default(),
            order: VecDeque::new(),
        }
    }

    /// Records `identity` at `now`; false if it was already seen within the window.
    pub(crate) fn first_time(&mut self, identity: &[u8; 32], now: Instant) -> bool {
        if self.window.is_zero() {
            return true;
        }
        while let Some((at, key)) = self.order.front() {
            if now.duration_since(*at) < self.window && self.order.len() < MAX_ENTRIES {
                break;
            }
            self.seen.remove(key);
            self.order.pop_front();
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&identity[..16]);
        let key = u128::from_le_bytes(key);
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back((now, key));
        true
    }

    /// Forgets `identity`: an event whose deliveries could not be recorded will be read again
    /// (a stream entry left pending) and must not be taken for a duplicate of itself then. Its
    /// old place in the arrival order stays, so it may expire early: the Redis claim still
    /// catches a duplicate from another instance.
    pub(crate) fn forget(&mut self, identity: &[u8; 32]) {
        let mut key = [0u8; 16];
        key.copy_from_slice(&identity[..16]);
        self.seen.remove(&u128::from_le_bytes(key));
    }
}

/// Identities are SHA-256 prefixes, already uniform: their low 64 bits are the hash (SipHash
/// over them cost as much as the rest of the check).
#[derive(Debug, Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_again_within_the_window_only() {
        let mut d = Dedupe::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let a = [1u8; 32];
        assert!(d.first_time(&a, t0));
        assert!(!d.first_time(&a, t0 + Duration::from_secs(5)));
        assert!(d.first_time(&[2u8; 32], t0 + Duration::from_secs(5)));
        assert!(d.first_time(&a, t0 + Duration::from_secs(11)));
        let b = [3u8; 32];
        assert!(d.first_time(&b, t0));
        d.forget(&b);
        assert!(
            d.first_time(&b, t0),
            "forgotten: seen for the first time again"
        );
        let mut off = Dedupe::new(Duration::ZERO);
        assert!(off.first_time(&a, t0) && off.first_time(&a, t0));
    }
}
