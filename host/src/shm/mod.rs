//! Shared memory between hosts on one machine: the data plane's shortcut
//! around TCP for tensors a master and a task exchange.
//!
//! A master (client) owns its segments: sealed memfds it maps and hands to
//! a co-located host over that host's abstract Unix socket (SCM_RIGHTS),
//! each with a random 128-bit key. A `RunPartition` call then names the key
//! and ranges of the segment instead of carrying the bytes: the master
//! writes the inputs there, the task reads them and writes its outputs into
//! ranges the master offered. The segment's Unix connection stays open for
//! as long as it lives; when it closes (the master dropped it, or died), the
//! host unmaps it. Guests never see any of it.
//!
//! A task delivering tensors straight to another task of the machine
//! ([`crate::exec::Route`]) is that task's master for the delivery: it
//! writes them into a segment and lends it ([`Lease::lent`]); the receiver
//! reads big floats in place for as long as it holds them ([`Loan`]) and
//! then says so on the segment's connection, and only then is the segment
//! used again.
//!
//! A host knows another is on its machine by the kernel's boot id in
//! `GetStatus`; hosts in different network namespaces cannot reach each
//! other's abstract sockets, and fall back to TCP. `WEFT_SHM=0` turns the
//! whole path off (a host then offers no socket, and a master uses none).

mod mapping;
mod pool;
mod registry;

pub use mapping::Mapping;
pub use pool::{Lease, Pool};
pub use registry::{Loan, Registry, registry};

use std::sync::OnceLock;

/// A segment key: random, known only to the master that made the segment
/// and the host it gave it to.
pub type Key = [u8; 16];

/// Offsets in a segment are aligned to this (a cache line).
pub const ALIGN: usize = 64;

/// Most bytes one segment may have.
pub const MAX_SEGMENT_BYTES: usize = 1 << 30;

/// `n` rounded up to [`ALIGN`].
pub fn aligned(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Whether shared memory is on in this process (`WEFT_SHM=0` turns it off).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("WEFT_SHM").map_or(true, |v| v != "0"))
}

/// This machine's boot id, if the kernel tells it.
pub fn boot_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_string())
    })
    .as_deref()
}

#[cfg(test)]
mod tests;
