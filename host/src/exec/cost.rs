//! Which partitions are cheap enough to run on the thread that received
//! them, as TensorFlow's executor runs inexpensive kernels inline and hands
//! the rest to its thread pool (`OpKernel::IsExpensive`).
//!
//! A task runs a partition from the network off its async threads, so that
//! a call whose caller went away stops at its next kernel; that hop costs
//! two thread wake-ups, a large share of a small call's round trip. A
//! partition whose work is bounded by its static types (a read or an update
//! of a small variable) runs in place instead: few nodes with few inputs in
//! all, every output known, numeric and small, no op that multiplies
//! matrices or touches files, and small inputs to the call. Its worst case
//! is some 64 × 256 passes over 256 KiB (tens of milliseconds), and the
//! caller's CPU allowance still applies between its kernels.

use super::PartitionDef;
use crate::graph::OpType;
use crate::tensor::Tensor;

/// Most nodes a partition run in place may have.
const MAX_INLINE_NODES: usize = 64;
/// Most inputs its nodes may have in all (AddN and Concat take any number).
const MAX_INLINE_NODE_INPUTS: usize = 256;
/// Most elements any one output of a node may have.
const MAX_INLINE_ELEMENTS: usize = 1 << 16;
/// Most bytes a call's inputs may have in all.
pub const MAX_INLINE_INPUT_BYTES: usize = 1 << 20;

/// Whether `op`'s work can exceed what its outputs' size says, or it waits
/// on something other than memory (files).
fn may_be_expensive(op: OpType) -> bool {
    matches!(
        op,
        OpType::MatMul
            | OpType::SaveV2
            | OpType::RestoreV2
            | OpType::CheckpointSteps
            | OpType::WriteScalarSummary
            | OpType::ReportUninitializedVariables
    )
}

impl PartitionDef {
    /// Whether every run of it is cheap given small inputs: few nodes with
    /// few inputs, each with fully known numeric outputs of at most
    /// [`MAX_INLINE_ELEMENTS`], none that may be expensive.
    pub fn is_cheap(&self) -> bool {
        self.nodes.len() <= MAX_INLINE_NODES
            && self.nodes.iter().map(|n| n.inputs.len()).sum::<usize>() <= MAX_INLINE_NODE_INPUTS
            && self.nodes.iter().all(|n| {
                !may_be_expensive(n.op)
                    && n.outputs.iter().all(|t| {
                        // Strings are as long as they like.
                        t.dtype != crate::tensor::DType::String
                            && t.shape
                                .iter()
                                .try_fold(1usize, |acc, d| acc.checked_mul((*d)?))
                                .is_some_and(|elements| elements <= MAX_INLINE_ELEMENTS)
                    })
            })
    }
}

/// Whether a call of a partition that [`PartitionDef::is_cheap`] with these
/// inputs runs in place.
pub fn inputs_are_small(inputs: &[Tensor]) -> bool {
    inputs.iter().map(Tensor::byte_length).sum::<usize>() <= MAX_INLINE_INPUT_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{AttrValue, Graph, NodeRequest, Operand, Output, VariableDecl};
    use crate::tensor::DType;

    fn partition(g: &Graph) -> PartitionDef {
        PartitionDef { nodes: g.nodes().to_vec(), inputs: Vec::new(), input_types: Vec::new(), outputs: Vec::new() }
    }

    fn variable(g: &mut Graph, name: &str, shape: &[usize]) -> Output {
        let decl = VariableDecl { name: Some(name.into()), device: None, trainable: false };
        let v = g.declare_variable(Operand::Literal(Tensor::zeros(DType::F32, shape)), decl).unwrap();
        Output::of(v.read)
    }

    fn constant(g: &mut Graph, v: f32) {
        g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(Tensor::scalar_f32(v)))).unwrap();
    }

    #[test]
    fn small_reads_and_updates_are_cheap_and_big_or_unknown_or_matmul_ones_are_not() {
        let mut g = Graph::new();
        variable(&mut g, "small", &[1024]);
        assert!(partition(&g).is_cheap(), "a 1024-element variable");

        let mut g = Graph::new();
        variable(&mut g, "big", &[1024, 1024]);
        assert!(!partition(&g).is_cheap(), "a 4 MiB variable");

        let mut g = Graph::new();
        let x = variable(&mut g, "x", &[8, 8]);
        g.add(NodeRequest::new(OpType::MatMul).inputs([x, x])).unwrap();
        assert!(!partition(&g).is_cheap(), "MatMul may cost more than its output says");

        let mut g = Graph::new();
        g.add(
            NodeRequest::new(OpType::Placeholder)
                .attr("dtype", AttrValue::DType(DType::F32))
                .attr("shape", AttrValue::Ints(vec![-1])),
        )
        .unwrap();
        assert!(!partition(&g).is_cheap(), "a shape known only at run time");

        let mut g = Graph::new();
        for i in 0..=MAX_INLINE_NODES {
            constant(&mut g, i as f32);
        }
        assert!(!partition(&g).is_cheap(), "too many nodes");

        let addn = |n: usize| {
            let mut g = Graph::new();
            let one = NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(Tensor::scalar_f32(1.0)));
            let x = Output::of(g.add(one).unwrap());
            g.add(NodeRequest::new(OpType::AddN).inputs(vec![x; n])).unwrap();
            partition(&g)
        };
        assert!(addn(MAX_INLINE_NODE_INPUTS).is_cheap(), "at the limit of inputs in all");
        assert!(!addn(MAX_INLINE_NODE_INPUTS + 1).is_cheap(), "past it");

        let mut g = Graph::new();
        g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(Tensor::strings(&["a"])))).unwrap();
        assert!(!partition(&g).is_cheap(), "strings");

        assert!(inputs_are_small(&[Tensor::zeros(DType::F32, &[1024])]));
        assert!(!inputs_are_small(&[Tensor::zeros(DType::F32, &[512, 1024])]));
    }
}
