//! `tf.Variable` and its companions as graph rewrites: the four nodes of a
//! variable, assign ops with `<op>/value` literals, the global initializer and
//! `report_uninitialized_variables`.

use crate::device::DeviceSpec;
use crate::error::Result;
use crate::tensor::{Tensor, TensorType};

use super::{AttrValue, Graph, NameRequest, NodeId, NodeRequest, OpType, Output};

/// A value given to an op: a literal (added as a Const) or an existing output.
#[derive(Clone, Debug)]
pub enum Operand {
    /// A literal tensor.
    Literal(Tensor),
    /// An existing output.
    Node(Output),
}

/// The nodes `tf.Variable` adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VariableNodes {
    /// `name`: the VariableV2 node; its output is the variable.
    pub var: NodeId,
    /// `name/Assign`: sets the initial value.
    pub initializer: NodeId,
    /// `name/read`: Identity of the value, for use by other ops.
    pub read: NodeId,
}

/// How to declare a variable.
#[derive(Clone, Debug, Default)]
pub struct VariableDecl {
    /// Base name (default `Variable`).
    pub name: Option<String>,
    /// Device request, merged over the current device scope.
    pub device: Option<DeviceSpec>,
    /// Whether it is trainable.
    pub trainable: bool,
}

impl Graph {
    fn operand(&mut self, operand: Operand, scope: &str) -> Result<Output> {
        match operand {
            Operand::Node(out) => {
                self.output_type(out)?;
                Ok(out)
            }
            Operand::Literal(t) => {
                let id = self.add(
                    NodeRequest::new(OpType::Const)
                        .named(NameRequest::Exact(format!("{scope}/value")))
                        .attr("value", AttrValue::Tensor(t)),
                )?;
                Ok(Output::of(id))
            }
        }
    }

    /// Declares a variable like `tf.Variable(initial, name=...)`: adds
    /// `name/initial_value` (for a literal), `name`, `name/Assign`, `name/read`.
    pub fn declare_variable(&mut self, initial: Operand, decl: VariableDecl) -> Result<VariableNodes> {
        let scope = self.unique_name(decl.name.as_deref().unwrap_or("Variable"));
        if let Some(d) = &decl.device {
            self.push_device_scope(d)?;
        }
        let result = self.declare_in_scope(&scope, initial, decl.trainable);
        if decl.device.is_some() {
            self.pop_device_scope()?;
        }
        let nodes = result?;
        self.variables.push(nodes);
        Ok(nodes)
    }

    fn declare_in_scope(&mut self, scope: &str, initial: Operand, trainable: bool) -> Result<VariableNodes> {
        let initial = match initial {
            Operand::Node(out) => out,
            Operand::Literal(t) => Output::of(
                self.add(
                    NodeRequest::new(OpType::Const)
                        .named(NameRequest::Exact(format!("{scope}/initial_value")))
                        .attr("value", AttrValue::Tensor(t)),
                )?,
            ),
        };
        let ty: TensorType = self.output_type(initial)?.clone();
        let known: Option<Vec<usize>> = ty.shape.iter().copied().collect();
        let Some(shape) = known else {
            return Err(crate::error::Error::invalid(format!(
                "variable '{scope}' needs an initial value of known shape, got {ty}"
            )));
        };
        let var = self.add(
            NodeRequest::new(OpType::VariableV2)
                .named(NameRequest::Exact(scope.to_string()))
                .attr("dtype", AttrValue::DType(ty.dtype))
                .attr("shape", AttrValue::Ints(shape.iter().map(|&d| d as i64).collect()))
                .attr("trainable", AttrValue::Bool(trainable)),
        )?;
        let initializer = self.add(
            NodeRequest::new(OpType::Assign)
                .named(NameRequest::Exact(format!("{scope}/Assign")))
                .inputs([Output::of(var), initial]),
        )?;
        let read = self.add(
            NodeRequest::new(OpType::Identity)
                .named(NameRequest::Exact(format!("{scope}/read")))
                .inputs([Output::of(var)]),
        )?;
        self.nodes[read as usize].colocate_with = Some(var);
        Ok(VariableNodes { var, initializer, read })
    }

    /// Adds `Assign`, `AssignAdd` or `AssignSub` on `var`, named like
    /// TensorFlow (`AssignAdd_1`, with a literal as `AssignAdd_1/value`).
    pub fn assign_op(&mut self, op: OpType, var: NodeId, value: Operand) -> Result<Output> {
        let scope = self.unique_name(op.name());
        let value = self.operand(value, &scope)?;
        let id = self.add(NodeRequest::new(op).named(NameRequest::Exact(scope)).inputs([Output::of(var), value]))?;
        Ok(Output::of(id))
    }

    /// `tf.global_variables_initializer()`: a NoOp `init` depending on every
    /// variable initializer declared so far.
    pub fn global_variables_initializer(&mut self) -> Result<NodeId> {
        let mut req = NodeRequest::new(OpType::NoOp).named(NameRequest::Unique("init".into()));
        req.control_inputs = self.variables.iter().map(|v| v.initializer).collect();
        self.add(req)
    }

    /// `tf.report_uninitialized_variables()`: a string vector of the names of
    /// this graph's variables that have no value yet. One
    /// `IsVariableInitialized` per variable runs where that variable lives;
    /// only booleans travel to the node that gathers the names.
    pub fn report_uninitialized_variables(&mut self) -> Result<Output> {
        let scope = self.push_name_scope("report_uninitialized_variables");
        let checks: Result<Vec<Output>> = self
            .variables
            .clone()
            .iter()
            .map(|v| {
                let req = NodeRequest::new(OpType::IsVariableInitialized)
                    .named(NameRequest::Unique("IsVariableInitialized".into()))
                    .inputs([Output::of(v.var)]);
                self.add(req).map(Output::of)
            })
            .collect();
        self.pop_name_scope()?;
        let names: Vec<String> = self.variables.iter().map(|v| self.nodes[v.var as usize].name.clone()).collect();
        let id = self.add(
            NodeRequest::new(OpType::ReportUninitializedVariables)
                .named(NameRequest::Exact(scope))
                .inputs(checks?)
                .attr("names", AttrValue::Tensor(Tensor::strings(&names))),
        )?;
        Ok(Output::of(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(g: &Graph) -> Vec<&str> {
        g.nodes().iter().map(|n| n.name.as_str()).collect()
    }

    fn var(g: &mut Graph, name: &str) -> VariableNodes {
        let decl = VariableDecl { name: Some(name.into()), ..Default::default() };
        g.declare_variable(Operand::Literal(Tensor::scalar_f32(0.0)), decl).unwrap()
    }

    #[test]
    fn variable_adds_tensorflows_four_nodes() {
        let mut g = Graph::new();
        var(&mut g, "var");
        assert_eq!(names(&g), ["var/initial_value", "var", "var/Assign", "var/read"]);
        let ops: Vec<&str> = g.nodes().iter().map(|n| n.op.name()).collect();
        assert_eq!(ops, ["Const", "VariableV2", "Assign", "Identity"]);
    }

    #[test]
    fn second_variable_of_same_name_is_var_1() {
        let mut g = Graph::new();
        var(&mut g, "var");
        let v = var(&mut g, "var");
        assert_eq!(g.node(v.var).unwrap().name, "var_1");
        assert_eq!(g.node(v.read).unwrap().name, "var_1/read");
    }

    #[test]
    fn assign_add_literals_are_named_after_the_op() {
        let mut g = Graph::new();
        let v = var(&mut g, "var");
        let one = || Operand::Literal(Tensor::scalar_f32(1.0));
        g.assign_op(OpType::AssignAdd, v.var, one()).unwrap();
        let second = g.assign_op(OpType::AssignAdd, v.var, one()).unwrap();
        assert_eq!(g.node(second.node).unwrap().name, "AssignAdd_1");
        assert!(g.find("AssignAdd_1/value").is_some());
        assert_eq!(g.node(second.node).unwrap().colocate_with, Some(v.var));
    }

    #[test]
    fn variables_take_the_device_scope_and_option() {
        let mut g = Graph::new();
        g.push_device_scope(&DeviceSpec::parse("/job:ps").unwrap()).unwrap();
        let decl = VariableDecl {
            name: Some("w".into()),
            device: Some(DeviceSpec::parse("/task:1").unwrap()),
            trainable: true,
        };
        let v = g.declare_variable(Operand::Literal(Tensor::scalar_f32(0.0)), decl).unwrap();
        for id in [v.var, v.initializer, v.read] {
            assert_eq!(g.node(id).unwrap().device.to_string(), "/job:ps/task:1");
        }
    }

    #[test]
    fn initializer_and_report_cover_all_variables() {
        let mut g = Graph::new();
        let a = var(&mut g, "a");
        let b = var(&mut g, "b");
        let init = g.global_variables_initializer().unwrap();
        assert_eq!(g.node(init).unwrap().name, "init");
        assert_eq!(g.node(init).unwrap().control_inputs, vec![a.initializer, b.initializer]);
        let report = g.report_uninitialized_variables().unwrap();
        let report_node = g.node(report.node).unwrap();
        assert_eq!(report_node.name, "report_uninitialized_variables");
        let checks: Vec<NodeId> = report_node.inputs.iter().map(|o| o.node).collect();
        assert_eq!(g.node(checks[0]).unwrap().name, "report_uninitialized_variables/IsVariableInitialized");
        assert_eq!(g.node(checks[1]).unwrap().colocate_with, Some(b.var));
        assert_eq!(g.node(checks[0]).unwrap().inputs, vec![Output::of(a.var)]);
        assert_eq!(g.global_variables_initializer().map(|i| g.node(i).unwrap().name.clone()).unwrap(), "init_1");
    }
}
