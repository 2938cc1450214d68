//! What steps and variables charge to their owner's byte budgets
//! ([`crate::budget`]): one partition run's tensor charges, and the
//! bookkeeping a variable costs beside its value.

use std::sync::Arc;

pub use crate::budget::ByteBudget;
use crate::error::Result;
use crate::graph::Node;

/// Per-variable bookkeeping the host holds beside a value (its slot, lock,
/// map entry and type), charged with its name so that many tiny variables
/// cost what they really do.
pub const VARIABLE_OVERHEAD: usize = 256;

/// Tensor bytes a standalone task (no experiment) lets its steps hold at
/// once: what an anonymous caller of a `--cluster` host can make it allocate.
pub const DEFAULT_TENSOR_BYTES: usize = 4 << 30;

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
        self.charge_for(budget, &Op(node), bytes)
    }

    /// Charges `bytes` that `what` will take to `budget`.
    pub fn charge_for(&mut self, budget: &Arc<ByteBudget>, what: &dyn std::fmt::Display, bytes: usize) -> Result<()> {
        budget.charge(what, bytes)?;
        match self.held.iter_mut().find(|(b, _)| Arc::ptr_eq(b, budget)) {
            Some((_, held)) => *held += bytes,
            None => self.held.push((budget.clone(), bytes)),
        }
        Ok(())
    }

    /// Takes over what `other` holds (released when this is dropped).
    pub fn absorb(&mut self, mut other: StepCharges) {
        for (budget, bytes) in other.held.drain(..) {
            match self.held.iter_mut().find(|(b, _)| Arc::ptr_eq(b, &budget)) {
                Some((_, held)) => *held += bytes,
                None => self.held.push((budget, bytes)),
            }
        }
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
    use crate::error::Code;

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
