//! Partitions from the network are checked before a task keeps them, the
//! way a guest-built graph is checked as each node is added: every input is
//! an earlier node's output or one of the partition's typed inputs, every
//! attribute is one the op's catalogue entry declares, variable references
//! point at variables of the same partition, and each node's output types
//! are what this host's inference says (never what the sender claims).
//! Each step's inputs are then checked against the partition's input types.

use std::collections::HashMap;

use super::PartitionDef;
use crate::error::{Error, Result};
use crate::graph::{NodeId, OpType, Output, catalogue};
use crate::tensor::{Tensor, TensorType};

/// Nodes one partition may have.
pub const MAX_PARTITION_NODES: usize = 1 << 20;

impl PartitionDef {
    /// This partition, checked, with each node's output types as inferred
    /// here. Errors name the node at fault.
    pub fn checked(mut self) -> Result<PartitionDef> {
        if self.nodes.len() > MAX_PARTITION_NODES {
            return Err(Error::invalid(format!(
                "the partition has {} nodes; at most {MAX_PARTITION_NODES} are allowed",
                self.nodes.len()
            )));
        }
        if self.input_types.len() != self.inputs.len() {
            return Err(Error::invalid(format!(
                "the partition has {} inputs but {} input types",
                self.inputs.len(),
                self.input_types.len()
            )));
        }
        let mut types: HashMap<Output, TensorType> = HashMap::with_capacity(self.inputs.len());
        for (&input, ty) in self.inputs.iter().zip(&self.input_types) {
            if types.insert(input, ty.clone()).is_some() {
                return Err(Error::invalid(format!(
                    "the partition lists input (output {} of node {}) twice",
                    input.index, input.node
                )));
            }
        }
        let boundary: std::collections::HashSet<NodeId> = self.inputs.iter().map(|o| o.node).collect();
        let mut ops: HashMap<NodeId, OpType> = HashMap::with_capacity(self.nodes.len());
        for node in &mut self.nodes {
            let at_fault =
                |why: String| Error::invalid(format!("partition node '{}' ({}): {why}", node.name, node.op.name()));
            if ops.contains_key(&node.id) || boundary.contains(&node.id) {
                return Err(at_fault(format!("id {} is used twice", node.id)));
            }
            let mut input_types = Vec::with_capacity(node.inputs.len());
            for (i, input) in node.inputs.iter().enumerate() {
                match types.get(input) {
                    Some(ty) => input_types.push(ty.clone()),
                    None => {
                        return Err(at_fault(format!(
                            "input {i} (output {} of node {}) is neither an earlier node's output in the \
                             partition nor one of its inputs",
                            input.index, input.node
                        )));
                    }
                }
            }
            catalogue::check_attrs(node.op, &node.name, &node.attrs)?;
            let refs = node.op.variable_ref_inputs(node.inputs.len());
            if node.inputs.len() < refs {
                return Err(at_fault(format!("inputs 0..{refs} must be variables, got {}", node.inputs.len())));
            }
            if let Some(i) = node.inputs[..refs].iter().position(|o| ops.get(&o.node) != Some(&OpType::VariableV2)) {
                return Err(at_fault(format!("input {i} must be a variable of the same partition")));
            }
            node.outputs = node.infer_outputs(&input_types)?;
            for (k, ty) in node.outputs.iter().enumerate() {
                types.insert(Output { node: node.id, index: k as u32 }, ty.clone());
            }
            ops.insert(node.id, node.op);
        }
        if let Some(out) = self.outputs.iter().find(|o| !ops.contains_key(&o.node) || !types.contains_key(o)) {
            return Err(Error::invalid(format!(
                "the partition returns output {} of node {}, which none of its nodes has",
                out.index, out.node
            )));
        }
        Ok(self)
    }

    /// Whether `values` fit the partition's input types, in order.
    pub fn check_inputs(&self, values: &[Tensor]) -> Result<()> {
        if values.len() != self.input_types.len() {
            return Err(Error::invalid(format!(
                "the partition takes {} inputs, got {}",
                self.input_types.len(),
                values.len()
            )));
        }
        match self.input_types.iter().zip(values).position(|(ty, v)| !ty.accepts(v)) {
            None => Ok(()),
            Some(i) => Err(Error::invalid(format!(
                "input {i} of the partition (output {} of node {}) must be {}, got {}",
                self.inputs[i].index,
                self.inputs[i].node,
                self.input_types[i],
                values[i].tensor_type()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{AttrValue, Graph, NodeRequest};
    use crate::tensor::DType;

    /// `v += x` with `v` a variable of the partition and `x` its input.
    fn assign_add() -> PartitionDef {
        let mut g = Graph::new();
        let x = g
            .add(
                NodeRequest::new(OpType::Placeholder)
                    .attr("dtype", AttrValue::DType(DType::F32))
                    .attr("shape", AttrValue::Ints(vec![2])),
            )
            .unwrap();
        let v = g
            .add(
                NodeRequest::new(OpType::VariableV2)
                    .attr("dtype", AttrValue::DType(DType::F32))
                    .attr("shape", AttrValue::Ints(vec![2])),
            )
            .unwrap();
        let add = g.add(NodeRequest::new(OpType::AssignAdd).inputs([Output::of(v), Output::of(x)])).unwrap();
        PartitionDef {
            nodes: vec![g.node(v).unwrap().clone(), g.node(add).unwrap().clone()],
            inputs: vec![Output::of(x)],
            input_types: vec![TensorType::known(DType::F32, &[2])],
            outputs: vec![Output::of(add)],
        }
    }

    #[test]
    fn output_types_are_inferred_here_whatever_the_sender_claims() {
        let mut def = assign_add();
        def.nodes[1].outputs = vec![TensorType::known(DType::F64, &[1 << 20])];
        let checked = def.checked().unwrap();
        assert_eq!(checked.nodes[1].outputs, vec![TensorType::known(DType::F32, &[2])]);
    }

    #[test]
    fn each_malformed_partition_is_refused_naming_the_node() {
        let refuse = |change: &dyn Fn(&mut PartitionDef), needle: &str| {
            let mut def = assign_add();
            change(&mut def);
            let err = def.checked().unwrap_err().to_string();
            assert!(err.contains(needle), "missing '{needle}' in {err}");
        };
        refuse(&|d| d.input_types.clear(), "1 inputs but 0 input types");
        refuse(&|d| d.nodes[1].id = d.nodes[0].id, "id 1 is used twice");
        refuse(&|d| d.nodes.swap(0, 1), "input 0 (output 0 of node 1) is neither");
        refuse(&|d| d.nodes[0].op = OpType::Identity, "Identity 'VariableV2': unknown attr 'dtype'");
        refuse(&|d| d.outputs[0].index = 3, "returns output 3 of node 2");
        refuse(&|d| d.input_types[0] = TensorType::known(DType::F32, &[3]), "AssignAdd");
        refuse(&|d| d.nodes[1].inputs.swap(0, 1), "input 0 must be a variable of the same partition");
        refuse(
            &|d| {
                d.inputs.push(d.inputs[0]);
                d.input_types.push(d.input_types[0].clone());
            },
            "lists input",
        );
    }

    #[test]
    fn step_inputs_must_fit_the_input_types() {
        let def = assign_add().checked().unwrap();
        def.check_inputs(&[Tensor::from_f32(&[2], vec![1.0, 2.0]).unwrap()]).unwrap();
        let err = def.check_inputs(&[Tensor::from_f32(&[3], vec![0.0; 3]).unwrap()]).unwrap_err().to_string();
        assert!(err.contains("input 0 of the partition (output 0 of node 0) must be f32[2], got f32[3]"), "{err}");
        assert!(def.check_inputs(&[]).unwrap_err().to_string().contains("takes 1 inputs, got 0"));
    }
}
