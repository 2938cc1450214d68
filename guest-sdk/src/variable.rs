//! Variables (`tf.Variable`): named state held by a task, shared by every
//! graph on that task that declares the same name.

use crate::error::Result;
use crate::graph::{Graph, Op, Output};
use crate::tensor::Tensor;
use crate::wit::variable as raw;

/// A variable declared in a graph.
pub struct Variable {
    raw: raw::Variable,
    graph: u32,
}

/// A value for an assign op: a literal tensor or an op output.
pub enum Operand {
    /// A literal, added as a Const named `<op>/value`.
    Literal(Tensor),
    /// An existing output.
    Output(Output),
}

impl<T: Into<Tensor>> From<T> for Operand {
    fn from(t: T) -> Self {
        Operand::Literal(t.into())
    }
}

impl From<Output> for Operand {
    fn from(o: Output) -> Self {
        Operand::Output(o)
    }
}

impl Operand {
    fn raw(self) -> raw::Operand {
        match self {
            Operand::Literal(t) => raw::Operand::Literal(t.into_raw()),
            Operand::Output(o) => raw::Operand::Node(o.raw()),
        }
    }
}

/// Options for [`Variable::with_options`]; the default is trainable, as
/// [`Variable::new`] is.
#[derive(Clone, Debug)]
pub struct VariableOptions {
    /// Device to place it on, merged over the graph's device scope.
    pub device: Option<String>,
    /// Whether optimizers should train it (default true).
    pub trainable: bool,
}

impl Default for VariableOptions {
    fn default() -> Self {
        VariableOptions { device: None, trainable: true }
    }
}

impl Variable {
    /// `tf.Variable(initial, name=name)`: adds `name/initial_value`, `name`,
    /// `name/Assign` and `name/read` to `graph`.
    pub fn new(graph: &Graph, initial: impl Into<Operand>, name: &str) -> Result<Self> {
        Self::with_options(graph, initial, name, VariableOptions::default())
    }

    /// Like [`Variable::new`], with a device and trainability.
    pub fn with_options(
        graph: &Graph,
        initial: impl Into<Operand>,
        name: &str,
        options: VariableOptions,
    ) -> Result<Self> {
        let opts =
            raw::VariableOptions { name: Some(name.to_string()), device: options.device, trainable: options.trainable };
        Ok(Variable { raw: raw::Variable::create(&graph.raw, &initial.into().raw(), &opts)?, graph: graph.id })
    }

    /// Its node name (`var`, or `var_1` if the graph already had a `var`).
    pub fn name(&self) -> String {
        self.raw.name()
    }

    /// The variable node's output: fetching it reads the value.
    pub fn output(&self) -> Output {
        Output::from_raw(self.raw.node(), self.graph)
    }

    /// `name/read`: the value as an input to other ops.
    pub fn value(&self) -> Output {
        Output::from_raw(self.raw.value(), self.graph)
    }

    /// `name/Assign`: sets the initial value.
    pub fn initializer(&self) -> Op {
        Op(self.raw.initializer())
    }

    /// Adds `var.assign(value)`; its output is the new value.
    pub fn assign(&self, value: impl Into<Operand>) -> Result<Output> {
        Ok(Output::from_raw(self.raw.assign(&value.into().raw())?, self.graph))
    }

    /// Adds `var.assign_add(delta)` (atomic on the task); outputs the new value.
    pub fn assign_add(&self, delta: impl Into<Operand>) -> Result<Output> {
        Ok(Output::from_raw(self.raw.assign_add(&delta.into().raw())?, self.graph))
    }

    /// Adds `var.assign_sub(delta)` (atomic on the task); outputs the new value.
    pub fn assign_sub(&self, delta: impl Into<Operand>) -> Result<Output> {
        Ok(Output::from_raw(self.raw.assign_sub(&delta.into().raw())?, self.graph))
    }

    /// Adds `tf.is_variable_initialized(var)`: a bool scalar.
    pub fn is_initialized(&self) -> Result<Output> {
        Ok(Output::from_raw(self.raw.is_initialized()?, self.graph))
    }
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variable").field("name", &self.name()).finish()
    }
}

impl From<&Variable> for Output {
    fn from(v: &Variable) -> Self {
        v.output()
    }
}

impl Graph {
    /// `tf.global_variables_initializer()`: an op that initializes every
    /// variable declared in this graph so far, wherever it lives.
    pub fn global_variables_initializer(&self) -> Result<Op> {
        Ok(Op(raw::global_variables_initializer(&self.raw)?))
    }

    /// `tf.report_uninitialized_variables()`: a string tensor of the names of
    /// this graph's variables that have no value yet.
    pub fn report_uninitialized_variables(&self) -> Result<Output> {
        Ok(Output::from_raw(raw::report_uninitialized_variables(&self.raw)?, self.id))
    }
}
