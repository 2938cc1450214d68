//! Building graphs: ops are added on the host, which checks them (arity,
//! dtypes, shapes) and names them like TensorFlow does.
//!
//! ```no_run
//! use weft_sdk::{Graph, Result};
//!
//! fn model() -> Result<()> {
//!     let g = Graph::new();
//!     let w = g.constant([[1.0f32, 2.0], [3.0, 4.0]])?;
//!     let x = g.constant([[1.0f32], [1.0]])?;
//!     let y = g.matmul(w, x)?;
//!     let z = g.name_scope("out", |g| g.relu(y))?;
//!     assert_eq!(g.operation(z).unwrap().name, "out/Relu");
//!     Ok(())
//! }
//! ```

use crate::error::Result;
use crate::tensor::{DType, Tensor};
use crate::wit::graph as raw;

/// One output of an op: what ops consume and sessions fetch. It remembers
/// its graph, so that asking one graph for gradients of another's tensors
/// is an error rather than a mix-up of node ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Output {
    /// The op's node id.
    pub node: u32,
    /// Which output.
    pub index: u32,
    pub(crate) graph: u32,
}

static NEXT_GRAPH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

impl Output {
    /// The op that produces it.
    pub fn op(self) -> Op {
        Op(self.node)
    }

    pub(crate) fn raw(self) -> raw::Output {
        raw::Output { node: self.node, index: self.index }
    }

    pub(crate) fn from_raw(o: raw::Output, graph: u32) -> Self {
        Output { node: o.node, index: o.index, graph }
    }
}

/// An op (node) of a graph: what sessions run as targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Op(pub u32);

impl From<Output> for Op {
    fn from(o: Output) -> Self {
        o.op()
    }
}

/// An attribute value for [`OpBuilder::attr`].
pub use crate::wit::graph::AttrValue;

/// A node as [`Graph::operations`] lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// Node id.
    pub id: u32,
    /// Unique name, e.g. `var/initial_value`.
    pub name: String,
    /// Op type, e.g. `Const`.
    pub op_type: String,
    /// Requested device, empty if unconstrained.
    pub device: String,
    /// Output dtypes and shapes (-1 for unknown dimensions).
    pub outputs: Vec<(DType, Vec<i64>)>,
}

/// A graph under construction (TensorFlow's `tf.Graph`).
pub struct Graph {
    pub(crate) raw: raw::Graph,
    pub(crate) id: u32,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds one op of any registered type: `g.op("MatMul").input(a).input(b).build()`.
pub struct OpBuilder<'g> {
    graph: &'g Graph,
    spec: raw::OpSpec,
    /// An input that came from another graph, refused when the op is built.
    foreign: Option<Output>,
}

impl OpBuilder<'_> {
    /// Appends a data input.
    pub fn input(mut self, x: Output) -> Self {
        if x.graph != self.graph.id {
            self.foreign.get_or_insert(x);
        }
        self.spec.inputs.push(x.raw());
        self
    }

    /// Adds a control input: `op` runs first.
    pub fn control_input(mut self, op: impl Into<Op>) -> Self {
        self.spec.control_inputs.push(op.into().0);
        self
    }

    /// Sets an attribute.
    pub fn attr(mut self, name: &str, value: AttrValue) -> Self {
        self.spec.attrs.push(raw::Attr { name: name.to_string(), value });
        self
    }

    /// Requests a name (made unique and scoped by the host).
    pub fn name(mut self, name: &str) -> Self {
        self.spec.name = Some(name.to_string());
        self
    }

    /// Requests a device, merged over the current device scope.
    pub fn device(mut self, spec: &str) -> Self {
        self.spec.device = Some(spec.to_string());
        self
    }

    /// Adds the op; returns it.
    pub fn build_op(self) -> Result<Op> {
        if let Some(x) = self.foreign {
            return Err(crate::Error::new(
                crate::Code::InvalidArgument,
                format!("{}: input (node {}) comes from another graph", self.spec.op_type, x.node),
            ));
        }
        Ok(Op(self.graph.raw.add_op(&self.spec)?))
    }

    /// Adds the op; returns its first output.
    pub fn build(self) -> Result<Output> {
        let graph = self.graph.id;
        Ok(Output { node: self.build_op()?.0, index: 0, graph })
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Graph { raw: raw::Graph::new(), id: NEXT_GRAPH.fetch_add(1, std::sync::atomic::Ordering::Relaxed) }
    }

    /// Starts an op of type `op_type` (e.g. `"Add"`).
    pub fn op(&self, op_type: &str) -> OpBuilder<'_> {
        OpBuilder {
            graph: self,
            spec: raw::OpSpec {
                op_type: op_type.to_string(),
                name: None,
                inputs: Vec::new(),
                control_inputs: Vec::new(),
                attrs: Vec::new(),
                device: None,
            },
            foreign: None,
        }
    }

    /// Every op, in the order added (`graph.get_operations()`).
    pub fn operations(&self) -> Vec<Operation> {
        self.raw
            .operations()
            .into_iter()
            .map(|o| Operation {
                id: o.id,
                name: o.name,
                op_type: o.op_type,
                device: o.device,
                outputs: o.outputs.into_iter().map(|t| (t.dtype, t.shape)).collect(),
            })
            .collect()
    }

    /// The op that produces `x`, as [`Graph::operations`] would list it.
    pub fn operation(&self, x: impl Into<Op>) -> Option<Operation> {
        let id = x.into().0;
        self.operations().into_iter().find(|o| o.id == id)
    }

    /// Output `index` of node `id` of this graph (as [`Graph::operations`] lists them).
    pub fn output(&self, id: u32, index: u32) -> Output {
        Output { node: id, index, graph: self.id }
    }

    /// An op by name.
    pub fn find(&self, name: &str) -> Option<Op> {
        self.raw.node_by_name(name).map(Op)
    }

    /// Output `x`'s dtype and shape (-1 for unknown dimensions).
    pub fn output_type(&self, x: Output) -> Result<(DType, Vec<i64>)> {
        let t = self.raw.output_type(x.raw())?;
        Ok((t.dtype, t.shape))
    }

    /// Runs `f` inside a name scope (`with tf.name_scope(name)`).
    pub fn name_scope<T>(&self, name: &str, f: impl FnOnce(&Graph) -> Result<T>) -> Result<T> {
        self.raw.push_name_scope(name);
        let out = f(self);
        self.raw.pop_name_scope()?;
        out
    }

    /// Runs `f` inside a device scope (`with tf.device(spec)`): ops added by
    /// `f` are placed on `spec`, merged over any enclosing scope.
    pub fn device<T>(&self, spec: &str, f: impl FnOnce(&Graph) -> Result<T>) -> Result<T> {
        crate::wit::device::push_scope(&self.raw, spec)?;
        let out = f(self);
        crate::wit::device::pop_scope(&self.raw)?;
        out
    }

    /// Runs `f` with control dependencies on `ops`
    /// (`with tf.control_dependencies(ops)`).
    pub fn control_dependencies<T>(&self, ops: &[Op], f: impl FnOnce(&Graph) -> Result<T>) -> Result<T> {
        self.raw.push_control_dependencies(&ops.iter().map(|o| o.0).collect::<Vec<_>>())?;
        let out = f(self);
        self.raw.pop_control_dependencies()?;
        out
    }

    /// A constant (`tf.constant`).
    pub fn constant(&self, value: impl Into<Tensor>) -> Result<Output> {
        self.op("Const").attr("value", AttrValue::Value(value.into().into_raw())).build()
    }

    /// A placeholder to feed at run time; -1 in `shape` for unknown dimensions.
    pub fn placeholder(&self, dtype: DType, shape: &[i64]) -> Result<Output> {
        self.op("Placeholder")
            .attr("dtype", AttrValue::ElementType(dtype))
            .attr("shape", AttrValue::Ints(shape.to_vec()))
            .build()
    }

    /// A do-nothing op (`tf.no_op`).
    pub fn no_op(&self) -> Result<Op> {
        self.op("NoOp").build_op()
    }

    /// An op that runs all of `ops` (`tf.group`).
    pub fn group(&self, ops: &[Op]) -> Result<Op> {
        ops.iter().fold(self.op("NoOp").name("group_deps"), |b, &o| b.control_input(o)).build_op()
    }

    /// `x` unchanged (`tf.identity`).
    pub fn identity(&self, x: Output) -> Result<Output> {
        self.op("Identity").input(x).build()
    }

    /// `a @ b`.
    pub fn matmul(&self, a: Output, b: Output) -> Result<Output> {
        self.op("MatMul").input(a).input(b).build()
    }

    /// `a @ b` with either side transposed first.
    pub fn matmul_transposed(&self, a: Output, b: Output, transpose_a: bool, transpose_b: bool) -> Result<Output> {
        self.op("MatMul")
            .input(a)
            .input(b)
            .attr("transpose_a", AttrValue::Boolean(transpose_a))
            .attr("transpose_b", AttrValue::Boolean(transpose_b))
            .build()
    }

    fn reduce(&self, op: &str, x: Output, axes: Option<&[i64]>, keep_dims: bool) -> Result<Output> {
        let mut b = self.op(op).input(x).attr("keep_dims", AttrValue::Boolean(keep_dims));
        if let Some(axes) = axes {
            b = b.attr("axis", AttrValue::Ints(axes.to_vec()));
        }
        b.build()
    }

    /// Sum over `axes` (all if `None`; negative axes count from the end).
    pub fn sum(&self, x: Output, axes: Option<&[i64]>, keep_dims: bool) -> Result<Output> {
        self.reduce("Sum", x, axes, keep_dims)
    }

    /// Mean over `axes` (all if `None`).
    pub fn mean(&self, x: Output, axes: Option<&[i64]>, keep_dims: bool) -> Result<Output> {
        self.reduce("Mean", x, axes, keep_dims)
    }

    /// `x` with a new shape; one dimension may be -1.
    pub fn reshape(&self, x: Output, shape: &[i64]) -> Result<Output> {
        self.op("Reshape").input(x).attr("shape", AttrValue::Ints(shape.to_vec())).build()
    }

    /// A tensor of `shape` filled with `value` (`tf.fill`).
    pub fn fill(&self, shape: &[i64], value: impl Into<Tensor>) -> Result<Output> {
        let v = self.constant(value)?;
        self.op("Fill").input(v).attr("shape", AttrValue::Ints(shape.to_vec())).build()
    }

    /// f32 zeros of `shape` (`tf.zeros`).
    pub fn zeros(&self, shape: &[i64]) -> Result<Output> {
        self.fill(shape, 0.0f32)
    }

    /// f32 ones of `shape` (`tf.ones`).
    pub fn ones(&self, shape: &[i64]) -> Result<Output> {
        self.fill(shape, 1.0f32)
    }

    fn random(&self, op: &str, shape: &[i64], a: (&str, f64), b: (&str, f64), seed: Option<i64>) -> Result<Output> {
        let mut builder = self
            .op(op)
            .attr("shape", AttrValue::Ints(shape.to_vec()))
            .attr(a.0, AttrValue::Float(a.1))
            .attr(b.0, AttrValue::Float(b.1));
        if let Some(s) = seed {
            builder = builder.attr("seed", AttrValue::Int(s));
        }
        builder.build()
    }

    /// f32 samples of N(mean, stddev²); a seed makes the sequence reproducible.
    pub fn random_normal(&self, shape: &[i64], mean: f64, stddev: f64, seed: Option<i64>) -> Result<Output> {
        self.random("RandomNormal", shape, ("mean", mean), ("stddev", stddev), seed)
    }

    /// f32 samples of U[minval, maxval).
    pub fn random_uniform(&self, shape: &[i64], minval: f64, maxval: f64, seed: Option<i64>) -> Result<Output> {
        self.random("RandomUniform", shape, ("minval", minval), ("maxval", maxval), seed)
    }
}

macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident => $op:literal),* $(,)?) => {
        impl Graph { $(
            $(#[$doc])*
            pub fn $name(&self, a: Output, b: Output) -> Result<Output> {
                self.op($op).input(a).input(b).build()
            }
        )* }
    };
}

macro_rules! unary_ops {
    ($($(#[$doc:meta])* $name:ident => $op:literal),* $(,)?) => {
        impl Graph { $(
            $(#[$doc])*
            pub fn $name(&self, x: Output) -> Result<Output> {
                self.op($op).input(x).build()
            }
        )* }
    };
}

// The rest of the op library (`ops.rs`) is written with the same two macros.
pub(crate) use {binary_ops, unary_ops};

binary_ops!(
    /// `a + b`, with NumPy broadcasting.
    add => "Add",
    /// `a - b`, with broadcasting.
    sub => "Sub",
    /// `a * b` element-wise, with broadcasting.
    mul => "Mul",
    /// `a / b` element-wise, with broadcasting.
    div => "Div",
);

unary_ops!(
    /// `-x`.
    neg => "Neg",
    /// `x²`.
    square => "Square",
    /// `√x`.
    sqrt => "Sqrt",
    /// `eˣ`.
    exp => "Exp",
    /// `ln x`.
    log => "Log",
    /// `max(x, 0)`.
    relu => "Relu",
    /// `1 / (1 + e⁻ˣ)`.
    sigmoid => "Sigmoid",
    /// `tanh x`.
    tanh => "Tanh",
    /// Softmax over the last axis.
    softmax => "Softmax",
);
