//! Byte budgets: what one owner (an experiment, or a standalone task) may
//! make this host hold, charged before the bytes are allocated.
//!
//! Two kinds exist: variable bytes (values held between steps, see
//! [`super::Variable`]) and tensor bytes (what the ops of the owner's running
//! steps produce, held until the partition that made them ends). A charge
//! that would go over the limit fails with `resource-exhausted`, names the
//! limit, what asked and how many bytes, and charges nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Code, Error, Result};
use crate::graph::Node;
use crate::tensor::Tensor;

/// Per-variable bookkeeping the host holds beside a value (its slot, lock,
/// map entry and type), charged with its name so that many tiny variables
/// cost what they really do.
pub const VARIABLE_OVERHEAD: usize = 256;

/// Tensor bytes a standalone task (no experiment) lets its steps hold at
/// once: what an anonymous caller of a `--cluster` host can make it allocate.
pub const DEFAULT_TENSOR_BYTES: usize = 4 << 30;

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
        if bytes == 0 {
            return Ok(());
        }
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .map(drop)
            .map_err(|used| {
                Error::status(
                    Code::ResourceExhausted,
                    format!(
                        "{} limit: {what} needs {bytes} more bytes, but {} holds {used} of its {} bytes",
                        self.limit_name, self.owner, self.limit
                    ),
                )
            })
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
/// lengths (plus a word each).
pub fn byte_size(t: &Tensor) -> usize {
    match t {
        Tensor::String(a) => a.iter().map(|s| s.len() + 8).sum(),
        _ => t.len() * t.dtype().byte_width().unwrap_or(1),
    }
}

/// The tensor bytes one partition run holds, released when it ends (its
/// outputs then belong to whoever asked: a guest's memory, a variable, the
/// wire).
#[derive(Debug, Default)]
pub struct StepCharges {
    held: Vec<(Arc<ByteBudget>, usize)>,
}

impl StepCharges {
    /// Charges `bytes` that `node`'s outputs will take to `budget`.
    pub fn charge(&mut self, budget: &Arc<ByteBudget>, node: &Node, bytes: usize) -> Result<()> {
        struct Op<'a>(&'a Node);
        impl std::fmt::Display for Op<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "op '{}' ({}) for its outputs", self.0.name, self.0.op.name())
            }
        }
        budget.charge(&Op(node), bytes)?;
        match self.held.iter_mut().find(|(b, _)| Arc::ptr_eq(b, budget)) {
            Some((_, held)) => *held += bytes,
            None => self.held.push((budget.clone(), bytes)),
        }
        Ok(())
    }
}

impl Drop for StepCharges {
    fn drop(&mut self) {
        for (budget, bytes) in self.held.drain(..) {
            budget.release(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_past_the_limit_fail_naming_it_and_step_charges_release_on_drop() {
        let budget = Arc::new(ByteBudget::tensors("experiment 'm'", 100));
        let mut g = crate::graph::Graph::new();
        let id = g.add(crate::graph::NodeRequest::new(crate::graph::OpType::NoOp)).unwrap();
        let node = g.node(id).unwrap().clone();
        let mut step = StepCharges::default();
        step.charge(&budget, &node, 60).unwrap();
        let err = step.charge(&budget, &node, 60).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        let text = err.to_string();
        assert!(
            text.contains("tensor-bytes limit") && text.contains("(NoOp)") && text.contains("60 more bytes"),
            "{text}"
        );
        assert!(text.contains("experiment 'm' holds 60 of its 100 bytes"), "{text}");
        assert_eq!(budget.used(), 60, "a refused charge charges nothing");
        step.charge(&budget, &node, 40).unwrap();
        drop(step);
        assert_eq!(budget.used(), 0);
    }
}
