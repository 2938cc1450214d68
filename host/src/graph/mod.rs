//! Graphs under construction: nodes, TensorFlow-style unique names, name,
//! device and control-dependency scopes, and validation on every add.
//!
//! Pure data: no tokio, no wasmtime. The executor reads graphs; guests build
//! them through the WIT `graph` interface.

pub mod catalogue;
mod gradients;
mod held;
mod infer;
mod infer_array;
mod infer_train;
mod op;
mod variables;

use std::collections::HashMap;

pub use gradients::{GradCtx, GradFn};
pub use held::{node_bytes, node_copy_bytes};
pub use infer::{broadcast, reduction_axes, reshape_target};
pub use op::{AttrValue, Attrs, OpType};
pub use variables::{Operand, VariableDecl, VariableNodes};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::tensor::TensorType;

/// A node's index in its graph.
pub type NodeId = u32;

/// One output of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Output {
    /// The node.
    pub node: NodeId,
    /// Which output.
    pub index: u32,
}

impl Output {
    /// Output 0 of `node`.
    pub fn of(node: NodeId) -> Self {
        Output { node, index: 0 }
    }
}

/// How a new node's name is chosen.
#[derive(Clone, Debug)]
pub enum NameRequest {
    /// The op type as the base name.
    Default,
    /// A base name: prefixed with the name scope and made unique (`add_1`).
    Unique(String),
    /// A full name used as is; it must not be taken.
    Exact(String),
}

/// A request to add one node.
#[derive(Clone, Debug)]
pub struct NodeRequest {
    /// Op type.
    pub op: OpType,
    /// Name.
    pub name: NameRequest,
    /// Data inputs.
    pub inputs: Vec<Output>,
    /// Control inputs.
    pub control_inputs: Vec<NodeId>,
    /// Attributes.
    pub attrs: Attrs,
    /// Device request, merged over the current device scope.
    pub device: Option<DeviceSpec>,
}

impl NodeRequest {
    /// A request for `op` with no inputs or attributes.
    pub fn new(op: OpType) -> Self {
        NodeRequest {
            op,
            name: NameRequest::Default,
            inputs: Vec::new(),
            control_inputs: Vec::new(),
            attrs: Attrs::default(),
            device: None,
        }
    }

    /// Sets the name request.
    pub fn named(mut self, name: NameRequest) -> Self {
        self.name = name;
        self
    }

    /// Sets the data inputs.
    pub fn inputs(mut self, inputs: impl IntoIterator<Item = Output>) -> Self {
        self.inputs = inputs.into_iter().collect();
        self
    }

    /// Sets one attribute.
    pub fn attr(mut self, name: &str, value: AttrValue) -> Self {
        self.attrs.set(name, value);
        self
    }
}

/// A node of a graph.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Its unique name.
    pub name: String,
    /// Its op.
    pub op: OpType,
    /// Data inputs.
    pub inputs: Vec<Output>,
    /// Nodes that must run first.
    pub control_inputs: Vec<NodeId>,
    /// Attributes.
    pub attrs: Attrs,
    /// The requested (possibly partial) device, scopes merged in.
    pub device: DeviceSpec,
    /// The variable this node reads or writes; it is placed with it.
    pub colocate_with: Option<NodeId>,
    /// Static output types.
    pub outputs: Vec<TensorType>,
}

impl Node {
    /// Its output types for inputs of the given (at run time, concrete)
    /// types, by the same inference that checked it when it was added: what
    /// its kernel will allocate, known before it runs.
    pub fn infer_outputs(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let infer = |input_names: &[String]| {
            infer::infer(&infer::InferCtx { name: &self.name, op: self.op, inputs, input_names, attrs: &self.attrs })
        };
        // Empty names cost no allocation; an error is worked out again with
        // names that say which input it was about.
        infer(&vec![String::new(); inputs.len()]).or_else(|_| {
            let names: Vec<String> =
                self.inputs.iter().map(|o| format!("output {} of node {}", o.index, o.node)).collect();
            infer(&names)
        })
    }
}

/// A graph under construction.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    by_name: HashMap<String, NodeId>,
    name_counts: HashMap<String, usize>,
    name_scopes: Vec<String>,
    device_scopes: Vec<DeviceSpec>,
    control_scopes: Vec<Vec<NodeId>>,
    variables: Vec<VariableNodes>,
    /// Every open name-scope push, in order, as runs: whether those pushes
    /// entered a scope (past [`MAX_SCOPE_DEPTH`] or the budget they do not),
    /// and how many, so each pop undoes its own push.
    name_scope_pushes: Vec<(bool, usize)>,
    /// What its nodes cost its owner, when they are charged.
    charge: Option<held::GraphCharge>,
}

/// Scopes of each kind (name, device, control dependencies) open at once.
pub const MAX_SCOPE_DEPTH: usize = 1024;

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty graph whose nodes are charged to `budget` as they are added
    /// (see [`node_bytes`]) and given back when it is dropped.
    pub fn charged_to(budget: std::sync::Arc<crate::budget::ByteBudget>) -> Self {
        Graph { charge: Some(held::GraphCharge::new(budget)), ..Self::default() }
    }

    /// Bytes its nodes have charged to its budget (0 if it has none).
    pub fn charged_bytes(&self) -> usize {
        self.charge.as_ref().map_or(0, held::GraphCharge::held)
    }

    /// Grows with every node added; sessions re-plan when it changes.
    pub fn version(&self) -> u64 {
        self.nodes.len() as u64
    }

    /// All nodes in the order they were added.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A node by id; `not-found` if there is none.
    pub fn node(&self, id: NodeId) -> Result<&Node> {
        self.nodes
            .get(id as usize)
            .ok_or_else(|| Error::not_found(format!("graph has no node with id {id} ({} nodes)", self.nodes.len())))
    }

    /// A node's id by name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// The static type of an output; `not-found` names the node and index.
    pub fn output_type(&self, out: Output) -> Result<&TensorType> {
        let node = self.node(out.node)?;
        node.outputs.get(out.index as usize).ok_or_else(|| {
            Error::not_found(format!(
                "node '{}' ({}) has {} output(s), not output {}",
                node.name,
                node.op.name(),
                node.outputs.len(),
                out.index
            ))
        })
    }

    /// Variables declared in this graph, in order.
    pub fn variables(&self) -> &[VariableNodes] {
        &self.variables
    }

    fn scoped(&self, base: &str) -> String {
        match self.name_scopes.last() {
            Some(scope) => format!("{scope}/{base}"),
            None => base.to_string(),
        }
    }

    /// TensorFlow's `unique_name`: `name`, then `name_1`, `name_2`, ...,
    /// under the current name scope. Marks the result as used, charging the
    /// name's entry; past the graph's budget the name is returned unmarked
    /// (what then uses it fails on the same budget).
    pub fn unique_name(&mut self, base: &str) -> String {
        let full = self.scoped(base);
        let used = self.name_counts.get(&full).copied().unwrap_or(0);
        let candidate = if used == 0 {
            full.clone()
        } else {
            let mut i = used;
            loop {
                let candidate = format!("{full}_{i}");
                i += 1;
                if !self.name_counts.contains_key(&candidate) {
                    break candidate;
                }
            }
        };
        let new_entries = [&full, &candidate].iter().filter(|n| !self.name_counts.contains_key(n.as_str())).count();
        let entries: usize = if used == 0 { 1 } else { new_entries };
        let bytes = entries * (held::ENTRY_OVERHEAD + candidate.len().max(full.len()));
        if self.charge_bytes(&format_args!("the name '{candidate}'"), bytes).is_err() {
            return candidate;
        }
        self.name_counts.insert(full.clone(), used + 1);
        if used > 0 {
            self.name_counts.insert(candidate.clone(), 1);
        }
        candidate
    }

    /// Charges `bytes` the graph holds for `what` to its budget, if it has one.
    fn charge_bytes(&mut self, what: &dyn std::fmt::Display, bytes: usize) -> Result<()> {
        match &mut self.charge {
            Some(c) => c.charge_bytes(what, bytes),
            None => Ok(()),
        }
    }

    fn release_bytes(&mut self, bytes: usize) {
        if let Some(c) = &mut self.charge {
            c.release(bytes);
        }
    }

    /// Enters a name scope; returns its full name. Nested scopes with a
    /// taken name are made unique, as in TensorFlow. Past
    /// [`MAX_SCOPE_DEPTH`] scopes (or the graph's budget) the scope is not
    /// entered, and its [`Graph::pop_name_scope`] pops nothing.
    pub fn push_name_scope(&mut self, name: &str) -> String {
        let full = self.unique_name(name);
        let bytes = held::ENTRY_OVERHEAD + full.len();
        let entered = self.name_scopes.len() < MAX_SCOPE_DEPTH
            && self.charge_bytes(&format_args!("the name scope '{full}'"), bytes).is_ok();
        if entered {
            self.name_scopes.push(full.clone());
        }
        match self.name_scope_pushes.last_mut() {
            Some((kind, n)) if *kind == entered => *n += 1,
            _ => self.name_scope_pushes.push((entered, 1)),
        }
        full
    }

    /// Leaves the innermost name scope.
    pub fn pop_name_scope(&mut self) -> Result<()> {
        let (entered, n) =
            self.name_scope_pushes.last_mut().ok_or_else(|| Error::precondition("no name scope to pop"))?;
        let entered = *entered;
        *n -= 1;
        if *n == 0 {
            self.name_scope_pushes.pop();
        }
        if entered {
            let scope = self.name_scopes.pop().expect("an entered scope per entered push");
            self.release_bytes(held::ENTRY_OVERHEAD + scope.len());
        }
        Ok(())
    }

    /// Enters a device scope: `spec` merged over the enclosing scope.
    pub fn push_device_scope(&mut self, spec: &DeviceSpec) -> Result<()> {
        let merged = self.current_device().merge(spec);
        if self.device_scopes.len() >= MAX_SCOPE_DEPTH {
            return Err(Error::status(
                crate::error::Code::ResourceExhausted,
                format!("device scope '{merged}': at most {MAX_SCOPE_DEPTH} device scopes may be open"),
            ));
        }
        self.charge_bytes(
            &format_args!("the device scope '{merged}'"),
            held::ENTRY_OVERHEAD + merged.to_string().len(),
        )?;
        self.device_scopes.push(merged);
        Ok(())
    }

    /// Leaves the innermost device scope.
    pub fn pop_device_scope(&mut self) -> Result<()> {
        let scope = self.device_scopes.pop().ok_or_else(|| Error::precondition("no device scope to pop"))?;
        self.release_bytes(held::ENTRY_OVERHEAD + scope.to_string().len());
        Ok(())
    }

    /// The device scope ops are added in now.
    pub fn current_device(&self) -> DeviceSpec {
        self.device_scopes.last().cloned().unwrap_or_default()
    }

    /// Enters a control-dependency scope.
    pub fn push_control_dependencies(&mut self, nodes: Vec<NodeId>) -> Result<()> {
        for &n in &nodes {
            self.node(n)?;
        }
        if self.control_scopes.len() >= MAX_SCOPE_DEPTH {
            return Err(Error::status(
                crate::error::Code::ResourceExhausted,
                format!("at most {MAX_SCOPE_DEPTH} control-dependency scopes may be open"),
            ));
        }
        let bytes = held::ENTRY_OVERHEAD + nodes.len() * 4;
        self.charge_bytes(&format_args!("a control-dependency scope of {} nodes", nodes.len()), bytes)?;
        self.control_scopes.push(nodes);
        Ok(())
    }

    /// Leaves the innermost control-dependency scope.
    pub fn pop_control_dependencies(&mut self) -> Result<()> {
        let scope =
            self.control_scopes.pop().ok_or_else(|| Error::precondition("no control-dependency scope to pop"))?;
        self.release_bytes(held::ENTRY_OVERHEAD + scope.len() * 4);
        Ok(())
    }

    /// Validates and adds a node; the error names the op and what is wrong.
    pub fn add(&mut self, req: NodeRequest) -> Result<NodeId> {
        let mut input_types = Vec::with_capacity(req.inputs.len());
        let mut input_names = Vec::with_capacity(req.inputs.len());
        for (i, &input) in req.inputs.iter().enumerate() {
            let ty = self
                .output_type(input)
                .map_err(|e| Error::invalid(format!("input {i} of new {} op: {}", req.op.name(), e.message())))?;
            input_types.push(ty.clone());
            input_names.push(self.nodes[input.node as usize].name.clone());
        }
        let mut control_inputs = req.control_inputs.clone();
        for &c in &control_inputs {
            self.node(c)?;
        }
        control_inputs.extend(self.control_scopes.iter().flatten().copied());
        control_inputs.sort_unstable();
        control_inputs.dedup();

        let name = match &req.name {
            NameRequest::Exact(name) => {
                if self.by_name.contains_key(name) {
                    return Err(Error::invalid(format!("a node named '{name}' already exists")));
                }
                name.clone()
            }
            NameRequest::Unique(base) => self.checked_unique(base)?,
            NameRequest::Default => self.checked_unique(req.op.name())?,
        };

        catalogue::check_attrs(req.op, &name, &req.attrs)?;
        let refs = req.op.variable_ref_inputs(req.inputs.len());
        let colocate_with = if refs > 0 {
            if req.inputs.len() < refs {
                return Err(Error::invalid(format!(
                    "{} '{name}': inputs 0..{refs} must be variables, got {} input(s)",
                    req.op.name(),
                    req.inputs.len()
                )));
            }
            for (i, input) in req.inputs[..refs].iter().enumerate() {
                let var_node = &self.nodes[input.node as usize];
                if var_node.op != OpType::VariableV2 {
                    return Err(Error::invalid(format!(
                        "{} '{name}': input {i} must be a variable, got '{}' ({})",
                        req.op.name(),
                        var_node.name,
                        var_node.op.name()
                    )));
                }
            }
            Some(req.inputs[0].node)
        } else {
            None
        };

        let outputs = infer::infer(&infer::InferCtx {
            name: &name,
            op: req.op,
            inputs: &input_types,
            input_names: &input_names,
            attrs: &req.attrs,
        })?;
        let scope_device = self.current_device();
        let device = match &req.device {
            Some(d) => scope_device.merge(d),
            None => scope_device,
        };
        let id = self.nodes.len() as NodeId;
        let node = Node {
            id,
            name,
            op: req.op,
            inputs: req.inputs,
            control_inputs,
            attrs: req.attrs,
            device,
            colocate_with,
            outputs,
        };
        if let Some(charge) = &mut self.charge {
            charge.charge(&node)?;
        }
        self.by_name.insert(node.name.clone(), id);
        self.name_counts.entry(node.name.clone()).or_insert(1);
        self.nodes.push(node);
        Ok(id)
    }

    fn checked_unique(&mut self, base: &str) -> Result<String> {
        if base.is_empty() || base.contains("//") || base.starts_with('/') || base.ends_with('/') {
            return Err(Error::invalid(format!("invalid node name '{base}'")));
        }
        Ok(self.unique_name(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DType, Tensor};

    fn constant(g: &mut Graph, v: f32) -> Output {
        let id =
            g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(Tensor::scalar_f32(v)))).unwrap();
        Output::of(id)
    }

    fn names(g: &Graph) -> Vec<&str> {
        g.nodes().iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn default_names_are_made_unique() {
        let mut g = Graph::new();
        let a = constant(&mut g, 1.0);
        let b = constant(&mut g, 2.0);
        g.add(NodeRequest::new(OpType::Add).inputs([a, b])).unwrap();
        g.add(NodeRequest::new(OpType::Add).inputs([a, b])).unwrap();
        g.add(NodeRequest::new(OpType::Add).inputs([a, b]).named(NameRequest::Unique("Add_1".into()))).unwrap();
        assert_eq!(names(&g), ["Const", "Const_1", "Add", "Add_1", "Add_1_1"]);
    }

    #[test]
    fn name_scopes_prefix_and_nest() {
        let mut g = Graph::new();
        assert_eq!(g.push_name_scope("layer"), "layer");
        constant(&mut g, 1.0);
        g.pop_name_scope().unwrap();
        assert_eq!(g.push_name_scope("layer"), "layer_1");
        constant(&mut g, 1.0);
        g.pop_name_scope().unwrap();
        assert_eq!(names(&g), ["layer/Const", "layer_1/Const"]);
        assert!(g.pop_name_scope().is_err());
    }

    #[test]
    fn exact_names_must_be_free() {
        let mut g = Graph::new();
        constant(&mut g, 1.0);
        let err = g.add(NodeRequest::new(OpType::NoOp).named(NameRequest::Exact("Const".into()))).unwrap_err();
        assert!(err.to_string().contains("'Const' already exists"));
    }

    #[test]
    fn device_scopes_merge_into_nodes() {
        let mut g = Graph::new();
        g.push_device_scope(&DeviceSpec::parse("/job:ps").unwrap()).unwrap();
        g.push_device_scope(&DeviceSpec::parse("/task:1").unwrap()).unwrap();
        let id = constant(&mut g, 1.0).node;
        g.pop_device_scope().unwrap();
        g.pop_device_scope().unwrap();
        let free = constant(&mut g, 1.0).node;
        assert_eq!(g.node(id).unwrap().device.to_string(), "/job:ps/task:1");
        assert!(g.node(free).unwrap().device.is_empty());
    }

    #[test]
    fn control_scopes_add_control_inputs() {
        let mut g = Graph::new();
        let first = g.add(NodeRequest::new(OpType::NoOp)).unwrap();
        g.push_control_dependencies(vec![first]).unwrap();
        let second = g.add(NodeRequest::new(OpType::NoOp)).unwrap();
        g.pop_control_dependencies().unwrap();
        assert_eq!(g.node(second).unwrap().control_inputs, vec![first]);
        assert!(g.push_control_dependencies(vec![99]).is_err());
    }

    #[test]
    fn bad_input_reference_is_an_error() {
        let mut g = Graph::new();
        let a = constant(&mut g, 1.0);
        let err =
            g.add(NodeRequest::new(OpType::Add).inputs([a, Output { node: 0, index: 3 }])).unwrap_err().to_string();
        assert!(err.contains("input 1 of new Add op") && err.contains("not output 3"), "{err}");
    }

    #[test]
    fn assign_needs_a_variable_input() {
        let mut g = Graph::new();
        let a = constant(&mut g, 1.0);
        let err = g.add(NodeRequest::new(OpType::AssignAdd).inputs([a, a])).unwrap_err().to_string();
        assert!(err.contains("input 0 must be a variable, got 'Const'"), "{err}");
        assert_eq!(g.output_type(a).unwrap().dtype, DType::F32);
    }
}
