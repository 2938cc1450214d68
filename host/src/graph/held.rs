//! What a graph costs the host that holds it: an estimate of each node's
//! bytes (the node, its name in the graph's indexes, its inputs, attributes
//! and their tensors), charged to the budget of the graph's owner before the
//! node is added and given back when the graph is dropped. Guests build
//! graphs on the host, so a graph's bytes count against the program's
//! memory limit like its own memory does.

use std::sync::Arc;

use super::{AttrValue, Node};
use crate::budget::{ByteBudget, byte_size};

/// Bytes of a node's fixed parts: the struct, its index entries and their
/// hash-table slots.
const NODE_OVERHEAD: usize = 256;
/// Bytes of one attribute's map entry beside its name and value.
const ATTR_OVERHEAD: usize = 64;
/// Bytes of an entry in the name counts, or of an open scope, beside its text.
pub(super) const ENTRY_OVERHEAD: usize = 64;

/// About what `node` takes on the host once added to a graph.
pub fn node_bytes(node: &Node) -> usize {
    node_copy_bytes(node)
        + node.attrs.0.values().map(|v| if let AttrValue::Tensor(t) = v { byte_size(t) } else { 0 }).sum::<usize>()
}

/// About what a copy of `node` takes (a plan's): all but its tensors'
/// elements, which copies share.
pub fn node_copy_bytes(node: &Node) -> usize {
    let attrs: usize = node
        .attrs
        .0
        .iter()
        .map(|(k, v)| {
            ATTR_OVERHEAD
                + k.len()
                + match v {
                    AttrValue::Str(s) => s.len(),
                    AttrValue::Ints(i) => i.len() * 8,
                    AttrValue::Tensor(t) => t.shape().len() * 8,
                    _ => 0,
                }
        })
        .sum();
    let outputs: usize = node.outputs.iter().map(|t| 32 + t.shape.len() * 16).sum();
    // The name is held twice: the node's, and the by-name index's key (its
    // name-count entry is charged when the name is chosen).
    NODE_OVERHEAD
        + 2 * node.name.len()
        + node.inputs.len() * 8
        + node.control_inputs.len() * 4
        + attrs
        + outputs
        + node.device.to_string().len()
}

/// The bytes a graph has charged to its owner's budget; released on drop.
#[derive(Debug)]
pub(super) struct GraphCharge {
    budget: Arc<ByteBudget>,
    held: usize,
}

impl GraphCharge {
    pub fn new(budget: Arc<ByteBudget>) -> Self {
        GraphCharge { budget, held: 0 }
    }

    /// Charges `node` before it is added; on error nothing is charged.
    pub fn charge(&mut self, node: &Node) -> crate::error::Result<()> {
        let bytes = node_bytes(node);
        self.budget.charge(&format_args!("graph node '{}' ({})", node.name, node.op.name()), bytes)?;
        self.held += bytes;
        Ok(())
    }

    pub fn held(&self) -> usize {
        self.held
    }

    /// Charges `bytes` more that the graph holds for `what` (a name, a
    /// scope); on error nothing is charged.
    pub fn charge_bytes(&mut self, what: &dyn std::fmt::Display, bytes: usize) -> crate::error::Result<()> {
        self.budget.charge(what, bytes)?;
        self.held += bytes;
        Ok(())
    }

    /// Gives back `bytes` the graph no longer holds (a popped scope).
    pub fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.budget.release(bytes);
        self.held -= bytes;
    }
}

impl Drop for GraphCharge {
    fn drop(&mut self) {
        self.budget.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::graph::{Graph, NodeRequest, OpType};
    use crate::tensor::Tensor;

    fn constant(len: usize) -> NodeRequest {
        NodeRequest::new(OpType::Const)
            .attr("value", AttrValue::Tensor(Tensor::from_f32(&[len], vec![0.0; len]).unwrap()))
    }

    #[test]
    fn a_charged_graph_refuses_a_node_past_its_budget_and_gives_everything_back_when_dropped() {
        let budget = Arc::new(ByteBudget::memory("program 'p'", 10_000));
        let mut g = Graph::charged_to(budget.clone());
        g.add(constant(1000)).unwrap();
        let first = g.charged_bytes();
        assert!((4001..4600).contains(&first), "a 4000-byte constant costs {first}");
        assert_eq!(budget.used(), first);
        g.add(constant(1000)).unwrap();
        let err = g.add(constant(1000)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        let text = err.to_string();
        assert!(text.contains("memory limit: graph node 'Const_2' (Const)"), "{text}");
        assert!(text.contains("program 'p' holds"), "{text}");
        assert_eq!(g.nodes().len(), 2, "the refused node is not added");
        assert_eq!(budget.used(), g.charged_bytes(), "nor charged");
        assert!(g.charged_bytes() < 2 * first + 200, "two nodes and the refused one's name");
        // Small nodes still fit.
        g.add(NodeRequest::new(OpType::NoOp)).unwrap();
        drop(g);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn names_and_scopes_are_charged_too_so_refused_adds_and_scope_loops_stay_bounded() {
        let budget = Arc::new(ByteBudget::memory("program 'p'", 64 << 10));
        let mut g = Graph::charged_to(budget.clone());
        // Distinct scopes, pushed and popped: each leaves a charged name.
        for i in 0..10_000 {
            g.push_name_scope(&format!("scope{i}"));
            g.pop_name_scope().unwrap();
        }
        assert!(budget.used() <= 64 << 10);
        // Adds refused for want of budget, with ever new names.
        for i in 0..1000 {
            let long = format!("{}{i}", "n".repeat(1000));
            let _ = g.add(NodeRequest::new(OpType::NoOp).named(crate::graph::NameRequest::Unique(long)));
        }
        assert!(budget.used() <= 64 << 10, "{}", budget.used());
        let err = g.push_control_dependencies(vec![]).unwrap_err();
        assert!(err.to_string().contains("memory limit"), "{err}");
        drop(g);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn each_pop_undoes_its_own_push_when_the_budget_comes_and_goes() {
        let budget = Arc::new(ByteBudget::memory("program 'p'", 4096));
        let mut g = Graph::charged_to(budget.clone());
        budget.charge(&"a guest memory", 4000).unwrap();
        g.push_name_scope("a");
        budget.release(4000);
        assert_eq!(g.push_name_scope("b"), "b", "not entered, a is not a scope");
        g.pop_name_scope().unwrap();
        let id = g.add(NodeRequest::new(OpType::NoOp)).unwrap();
        assert_eq!(g.node(id).unwrap().name, "NoOp", "b's pop left b");
        g.pop_name_scope().unwrap();
        assert!(g.pop_name_scope().is_err());
    }

    #[test]
    fn scopes_nest_at_most_their_depth_and_pop_in_step() {
        let mut g = Graph::new();
        for _ in 0..crate::graph::MAX_SCOPE_DEPTH + 5 {
            g.push_name_scope("s");
        }
        for _ in 0..crate::graph::MAX_SCOPE_DEPTH + 5 {
            g.pop_name_scope().unwrap();
        }
        assert!(g.pop_name_scope().is_err());
        let spec = crate::device::DeviceSpec::parse("/job:ps").unwrap();
        for _ in 0..crate::graph::MAX_SCOPE_DEPTH {
            g.push_device_scope(&spec).unwrap();
        }
        assert!(g.push_device_scope(&spec).unwrap_err().to_string().contains("at most 1024 device scopes"));
    }

    #[test]
    fn many_small_nodes_cost_their_bookkeeping() {
        let mut g = Graph::new();
        let id = g.add(NodeRequest::new(OpType::NoOp)).unwrap();
        let bytes = node_bytes(g.node(id).unwrap());
        assert!((NODE_OVERHEAD..NODE_OVERHEAD + 64).contains(&bytes), "{bytes}");
        assert_eq!(g.charged_bytes(), 0, "an uncharged graph charges nothing");
    }
}
