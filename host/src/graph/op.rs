//! The closed set of op types and their attributes.
//!
//! Ops cross WIT (and later protobuf) by name, so the set is a plain enum
//! rather than trait objects: the graph validates with [`super::infer`],
//! the executor dispatches kernels with a `match`.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

macro_rules! op_types {
    ($($variant:ident),* $(,)?) => {
        /// Every op type the host knows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum OpType { $(
            #[doc = concat!("The `", stringify!($variant), "` op.")]
            $variant,
        )* }

        impl OpType {
            /// All op types, for error messages.
            pub const ALL: &'static [OpType] = &[$(OpType::$variant),*];

            /// The TensorFlow op name, e.g. `AssignAdd`.
            pub fn name(self) -> &'static str {
                match self { $(OpType::$variant => stringify!($variant)),* }
            }
        }
    };
}

op_types!(
    Const,
    Placeholder,
    VariableV2,
    Assign,
    AssignAdd,
    AssignSub,
    Identity,
    NoOp,
    IsVariableInitialized,
    ReportUninitializedVariables,
    Add,
    Sub,
    Mul,
    Div,
    Neg,
    Square,
    Sqrt,
    Exp,
    Log,
    Relu,
    Sigmoid,
    Tanh,
    MatMul,
    Sum,
    Mean,
    Reshape,
    Fill,
    RandomNormal,
    RandomUniform,
    Softmax,
    LogSoftmax,
    SoftmaxCrossEntropyWithLogits,
    StopGradient,
    AddN,
    Maximum,
    Minimum,
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    LogicalNot,
    Select,
    Cast,
    OneHot,
    ArgMax,
    Gather,
    UnsortedSegmentSum,
    Concat,
    Slice,
    Pad,
    ExpandDims,
    Squeeze,
    ZerosLike,
    OnesLike,
    SumToShapeOf,
    BroadcastToShapeOf,
    ReluGrad,
    SigmoidGrad,
    TanhGrad,
    ApplyGradientDescent,
    ApplyMomentum,
    ApplyAdam,
    ApplyRMSProp,
    SaveV2,
    RestoreV2,
    CheckpointSteps,
    WriteScalarSummary,
);

impl OpType {
    /// Looks up an op by its TensorFlow name; the error lists the known ops.
    pub fn from_name(name: &str) -> Result<OpType> {
        OpType::ALL.iter().copied().find(|op| op.name() == name).ok_or_else(|| {
            let known: Vec<&str> = OpType::ALL.iter().map(|op| op.name()).collect();
            Error::invalid(format!("unknown op type '{name}' (known ops: {})", known.join(", ")))
        })
    }

    /// How many of an op's `inputs` leading inputs are variable references
    /// rather than values: one for the assign ops, the variable and its
    /// slots for the fused optimizer updates, every variable saved or
    /// restored for the checkpoint ops. The op is placed with its first.
    pub fn variable_ref_inputs(self, inputs: usize) -> usize {
        use OpType::*;
        match self {
            Assign | AssignAdd | AssignSub | IsVariableInitialized | ApplyGradientDescent => 1,
            ApplyMomentum => 2,
            ApplyAdam | ApplyRMSProp => 3,
            // (variables..., step)
            SaveV2 => inputs.saturating_sub(1).max(1),
            RestoreV2 => inputs.max(1),
            _ => 0,
        }
    }

    /// Ops with effects beyond their outputs; never skipped, never merged.
    pub fn is_stateful(self) -> bool {
        // Any input count: every op that takes references takes at least one.
        self.variable_ref_inputs(1) > 0
            || matches!(
                self,
                OpType::VariableV2
                    | OpType::ReportUninitializedVariables
                    | OpType::RandomNormal
                    | OpType::RandomUniform
                    | OpType::CheckpointSteps
                    | OpType::WriteScalarSummary
            )
    }
}

/// The value of an op attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A list of integers (axes, shapes).
    Ints(Vec<i64>),
    /// An element type.
    DType(DType),
    /// A tensor (a Const's value).
    Tensor(Tensor),
}

/// An op's attributes by name, with typed getters whose errors name the op.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs(pub BTreeMap<String, AttrValue>);

impl Attrs {
    /// Sets an attribute.
    pub fn set(&mut self, name: &str, value: AttrValue) -> &mut Self {
        self.0.insert(name.to_string(), value);
        self
    }

    fn get<'a, T>(
        &'a self,
        op: &str,
        name: &str,
        kind: &str,
        pick: impl Fn(&'a AttrValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => pick(v)
                .map(Some)
                .ok_or_else(|| Error::invalid(format!("attr '{name}' of op '{op}' must be {kind}, got {v:?}"))),
        }
    }

    /// An optional integer attribute.
    pub fn int(&self, op: &str, name: &str) -> Result<Option<i64>> {
        self.get(op, name, "an int", |v| match v {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        })
    }

    /// An optional float attribute (ints are accepted).
    pub fn float(&self, op: &str, name: &str) -> Result<Option<f64>> {
        self.get(op, name, "a float", |v| match v {
            AttrValue::Float(f) => Some(*f),
            AttrValue::Int(i) => Some(*i as f64),
            _ => None,
        })
    }

    /// An optional boolean attribute.
    pub fn bool(&self, op: &str, name: &str) -> Result<Option<bool>> {
        self.get(op, name, "a bool", |v| match v {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        })
    }

    /// An optional string attribute.
    pub fn str(&self, op: &str, name: &str) -> Result<Option<&str>> {
        self.get(op, name, "a string", |v| match v {
            AttrValue::Str(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// An optional integer-list attribute.
    pub fn ints(&self, op: &str, name: &str) -> Result<Option<&[i64]>> {
        self.get(op, name, "a list of ints", |v| match v {
            AttrValue::Ints(i) => Some(i.as_slice()),
            _ => None,
        })
    }

    /// An optional dtype attribute.
    pub fn dtype(&self, op: &str, name: &str) -> Result<Option<DType>> {
        self.get(op, name, "a dtype", |v| match v {
            AttrValue::DType(d) => Some(*d),
            _ => None,
        })
    }

    /// An optional tensor attribute.
    pub fn tensor(&self, op: &str, name: &str) -> Result<Option<&Tensor>> {
        self.get(op, name, "a tensor", |v| match v {
            AttrValue::Tensor(t) => Some(t),
            _ => None,
        })
    }

    /// A required attribute: `Ok(None)` from `getter` becomes an error naming it.
    pub fn required<T>(op: &str, name: &str, value: Result<Option<T>>) -> Result<T> {
        value?.ok_or_else(|| Error::invalid(format!("op '{op}' needs attr '{name}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_round_trip() {
        for op in OpType::ALL {
            assert_eq!(OpType::from_name(op.name()).unwrap(), *op);
        }
    }

    #[test]
    fn unknown_op_lists_known_ones() {
        let err = OpType::from_name("Conv9D").unwrap_err().to_string();
        assert!(err.contains("unknown op type 'Conv9D'") && err.contains("MatMul"), "{err}");
    }

    #[test]
    fn attr_type_errors_name_op_and_attr() {
        let mut a = Attrs::default();
        a.set("axis", AttrValue::Bool(true));
        let err = a.ints("sum_1", "axis").unwrap_err().to_string();
        assert!(err.contains("'axis'") && err.contains("'sum_1'"), "{err}");
        let err = Attrs::required("fill", "shape", a.ints("fill", "shape")).unwrap_err();
        assert!(err.to_string().contains("needs attr 'shape'"));
    }
}
