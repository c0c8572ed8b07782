//! What one API connection is doing, shared between its `api-conn` thread (which moves it from
//! phase to phase) and `api-accept` (which reads it to choose whom to evict, and evicts).

use std::net::{Shutdown as NetShutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Waiting for the first byte of a request.
    Idle = 0,
    /// Reading a request head.
    Head = 1,
    /// Reading a request body.
    Body = 2,
    /// Its request is with a handler: never evicted.
    Handler = 3,
    /// Writing a response, or draining a refused body before closing.
    Writing = 4,
    /// Evicted: its thread stops at its next step.
    Evicted = 5,
}

impl Phase {
    fn from_u8(n: u8) -> Phase {
        match n {
            0 => Phase::Idle,
            1 => Phase::Head,
            2 => Phase::Body,
            3 => Phase::Handler,
            4 => Phase::Writing,
            _ => Phase::Evicted,
        }
    }
}

/// One open connection, as the acceptor sees it.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The connection's socket: its thread reads and writes through `&TcpStream`, the acceptor
    /// shuts it down on eviction (one descriptor per connection).
    pub(super) socket: TcpStream,
    pub(super) phase: AtomicU8,
    /// When the phase began, in ms since `epoch`.
    pub(super) since_ms: AtomicU64,
    /// When the connection was accepted, in ms since `epoch`.
    pub(super) opened_ms: u64,
    /// Whether a response has been written on it: the client is a proven one.
    pub(super) answered: AtomicBool,
    pub(super) epoch: Instant,
}

/// The connection was evicted; its thread must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted;

impl Slot {
    /// The connection's socket.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Enters `phase`, unless the connection has been evicted.
    pub(crate) fn enter(&self, phase: Phase) -> Result<(), Evicted> {
        let mut current = self.phase.load(Ordering::Acquire);
        loop {
            if current == Phase::Evicted as u8 {
                return Err(Evicted);
            }
            match self.phase.compare_exchange_weak(
                current,
                phase as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        self.since_ms.store(now, Ordering::Release);
        Ok(())
    }

    /// Records that a response has been written on the connection.
    pub(crate) fn answered(&self) {
        self.answered.store(true, Ordering::Release);
    }

    /// Whether the acceptor evicted the connection.
    pub(crate) fn is_evicted(&self) -> bool {
        self.phase.load(Ordering::Acquire) == Phase::Evicted as u8
    }

    /// The phase and how long it has lasted, in ms.
    pub(super) fn state(&self, now_ms: u64) -> (Phase, u64) {
        let phase = Phase::from_u8(self.phase.load(Ordering::Acquire));
        let since = self.since_ms.load(Ordering::Acquire);
        (phase, now_ms.saturating_sub(since))
    }

    /// How long the connection has been open, in ms.
    pub(super) fn age(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.opened_ms)
    }

    /// Evicts the connection if it is still in `phase`: a connection that has just handed its
    /// request to a handler keeps its slot.
    pub(super) fn evict(&self, phase: Phase) -> bool {
        let evicted = self
            .phase
            .compare_exchange(
                phase as u8,
                Phase::Evicted as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if evicted {
            let _ = self.socket.shutdown(NetShutdown::Both);
        }
        evicted
    }
}
