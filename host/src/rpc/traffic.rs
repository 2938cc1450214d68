//! Tensor bytes a master moved: in all ([`Traffic`], what the tests and
//! benchmarks read), and per peer task and direction ([`PeerCounters`],
//! what a host's `/metrics` shows as `weft_peer_bytes_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::exec::PeerTraffic;

/// Tensor bytes a master moved to and from its peers, by path.
#[derive(Debug, Default)]
pub struct Traffic {
    shared: AtomicU64,
    streamed: AtomicU64,
    pub(super) in_process: AtomicU64,
}

impl Traffic {
    /// Bytes through shared memory, both directions.
    pub fn shared_bytes(&self) -> u64 {
        self.shared.load(Ordering::Relaxed)
    }

    /// Calls to tasks of this process, which moved no bytes at all.
    pub fn in_process_calls(&self) -> u64 {
        self.in_process.load(Ordering::Relaxed)
    }

    /// Bytes in gRPC messages, both directions.
    pub fn streamed_bytes(&self) -> u64 {
        self.streamed.load(Ordering::Relaxed)
    }
}

/// Which way tensor bytes went, seen from the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// To the peer: a partition's inputs, or a delivery.
    Sent,
    /// From the peer: a partition's outputs.
    Received,
}

/// One peer's bytes, by direction and path, also added to the master's
/// [`Traffic`].
#[derive(Debug)]
pub struct PeerCounters {
    total: Arc<Traffic>,
    /// `[sent, received]` through gRPC messages.
    streamed: [AtomicU64; 2],
    /// `[sent, received]` through shared memory.
    shared: [AtomicU64; 2],
}

impl PeerCounters {
    /// Counters adding to `total` as well.
    pub fn new(total: Arc<Traffic>) -> Self {
        PeerCounters { total, streamed: Default::default(), shared: Default::default() }
    }

    /// Counts `shared` bytes through shared memory and `streamed` in gRPC
    /// messages, going `direction`.
    pub fn add(&self, direction: Direction, shared: u64, streamed: u64) {
        let i = direction as usize;
        self.shared[i].fetch_add(shared, Ordering::Relaxed);
        self.streamed[i].fetch_add(streamed, Ordering::Relaxed);
        self.total.shared.fetch_add(shared, Ordering::Relaxed);
        self.total.streamed.fetch_add(streamed, Ordering::Relaxed);
    }

    /// Calls to a task of this process (no bytes moved).
    pub fn add_in_process_call(&self) {
        self.total.in_process.fetch_add(1, Ordering::Relaxed);
    }

    /// What they hold, for `task` at `address`.
    pub fn report(&self, task: String, address: String) -> PeerTraffic {
        let get = |a: &[AtomicU64; 2], d: Direction| a[d as usize].load(Ordering::Relaxed);
        PeerTraffic {
            task,
            address,
            sent_streamed: get(&self.streamed, Direction::Sent),
            sent_shared: get(&self.shared, Direction::Sent),
            received_streamed: get(&self.streamed, Direction::Received),
            received_shared: get(&self.shared, Direction::Received),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_bytes_add_to_its_masters_totals() {
        let total = Arc::new(Traffic::default());
        let (a, b) = (PeerCounters::new(total.clone()), PeerCounters::new(total.clone()));
        a.add(Direction::Sent, 0, 100);
        a.add(Direction::Received, 7, 0);
        b.add(Direction::Received, 0, 5);
        b.add_in_process_call();
        assert_eq!((total.streamed_bytes(), total.shared_bytes(), total.in_process_calls()), (105, 7, 1));
        let r = a.report("/job:ps/task:0".into(), "h:1".into());
        assert_eq!((r.sent_streamed, r.sent_shared, r.received_streamed, r.received_shared), (100, 0, 0, 7));
        let r = b.report("/job:ps/task:1".into(), "h:2".into());
        assert_eq!((r.sent_streamed, r.received_streamed), (0, 5));
    }
}
