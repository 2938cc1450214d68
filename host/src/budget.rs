//! Byte budgets: what one owner (an experiment, a standalone task, a
//! program) may make this host hold, charged before the bytes are allocated.
//!
//! Three kinds exist: variable bytes (values held between steps, see
//! [`crate::exec::Variable`]), tensor bytes (what the ops of the owner's
//! running steps produce, held until the partition that made them ends) and
//! a program's memory (its linear memories and tables, and what the host
//! holds for it, such as its graphs). A charge that would go over the limit
//! fails with `resource-exhausted`, names the limit, what asked and how many
//! bytes, and charges nothing.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Code, Error, Result};
use crate::tensor::Tensor;

/// A limit on the bytes one owner holds of one kind, shared by every
/// device of that owner on this host.
#[derive(Debug)]
pub struct ByteBudget {
    limit_name: &'static str,
    owner: String,
    limit: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    /// A budget of `limit` bytes for the variables of `owner`.
    pub fn new(owner: impl Into<String>, limit: usize) -> Self {
        Self::named("variable-bytes", owner, limit)
    }

    /// A budget of `limit` bytes for the tensors of `owner`'s running steps.
    pub fn tensors(owner: impl Into<String>, limit: usize) -> Self {
        Self::named("tensor-bytes", owner, limit)
    }

    /// A budget of `limit` bytes for everything program `owner` holds: its
    /// memories and tables, and what the host keeps for it.
    pub fn memory(owner: impl Into<String>, limit: usize) -> Self {
        Self::named("memory", owner, limit)
    }

    fn named(limit_name: &'static str, owner: impl Into<String>, limit: usize) -> Self {
        ByteBudget { limit_name, owner: owner.into(), limit, used: AtomicUsize::new(0) }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes` more for `what`, or fails with `resource-exhausted`
    /// charging nothing.
    pub fn charge(&self, what: &dyn std::fmt::Display, bytes: usize) -> Result<()> {
        self.try_charge(bytes).map_err(|used| {
            Error::status(
                Code::ResourceExhausted,
                format!(
                    "{} limit: {what} needs {bytes} more bytes, but {} holds {used} of its {} bytes",
                    self.limit_name, self.owner, self.limit
                ),
            )
        })
    }

    /// Charges `bytes` more if they fit; else charges nothing and says how
    /// many bytes were held.
    pub fn try_charge(&self, bytes: usize) -> std::result::Result<(), usize> {
        if bytes == 0 {
            return Ok(());
        }
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .map(drop)
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Gives back `bytes` charged earlier.
    pub fn release(&self, bytes: usize) {
        // Saturating: a bookkeeping slip must not wrap into "always full".
        let _ = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| Some(used.saturating_sub(bytes)));
    }

    /// Moves the charge for `what` from `old` to `new` bytes.
    pub fn recharge(&self, what: &dyn std::fmt::Display, old: usize, new: usize) -> Result<()> {
        if new <= old {
            self.release(old - new);
            Ok(())
        } else {
            self.charge(what, new - old)
        }
    }
}

/// Bytes a value holds: elements times their width, or for strings their
/// lengths plus each element's own struct.
pub fn byte_size(t: &Tensor) -> usize {
    match t {
        Tensor::String(a) => a.iter().map(|s| s.len() + std::mem::size_of_val(s)).sum(),
        _ => t.len() * t.dtype().byte_width().unwrap_or(1),
    }
}
