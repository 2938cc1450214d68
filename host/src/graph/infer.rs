//! Shape and dtype inference: checks an op's arity, input dtypes, shapes and
//! attributes when it is added, and computes its output types.

use crate::error::{Error, Result};
use crate::tensor::{DType, Dim, ShapeDisplay, TensorType};

use super::op::{Attrs, OpType};

/// What inference sees of a node being added.
pub struct InferCtx<'a> {
    /// The new node's name.
    pub name: &'a str,
    /// Its op type.
    pub op: OpType,
    /// Types of its data inputs.
    pub inputs: &'a [TensorType],
    /// Names of the nodes feeding its inputs (for messages).
    pub input_names: &'a [String],
    /// Its attributes.
    pub attrs: &'a Attrs,
}

impl InferCtx<'_> {
    pub(super) fn err(&self, why: impl std::fmt::Display) -> Error {
        Error::invalid(format!("{} '{}': {why}", self.op.name(), self.name))
    }

    pub(super) fn arity(&self, n: usize) -> Result<()> {
        if self.inputs.len() == n {
            Ok(())
        } else {
            Err(self.err(format!("takes {n} input(s), got {}", self.inputs.len())))
        }
    }

    pub(super) fn input_desc(&self, i: usize) -> String {
        format!("input {i} ('{}', {})", self.input_names[i], self.inputs[i])
    }

    pub(super) fn numeric(&self, i: usize) -> Result<DType> {
        let d = self.inputs[i].dtype;
        if d.is_numeric() { Ok(d) } else { Err(self.err(format!("{} must be numeric", self.input_desc(i)))) }
    }

    pub(super) fn float(&self, i: usize) -> Result<DType> {
        let d = self.inputs[i].dtype;
        if d.is_float() { Ok(d) } else { Err(self.err(format!("{} must be f32 or f64", self.input_desc(i)))) }
    }

    pub(super) fn same_dtype(&self, a: usize, b: usize) -> Result<DType> {
        if self.inputs[a].dtype == self.inputs[b].dtype {
            Ok(self.inputs[a].dtype)
        } else {
            Err(self.err(format!("dtypes differ: {} vs {}", self.input_desc(a), self.input_desc(b))))
        }
    }

    pub(super) fn attr_shape(&self, name: &str) -> Result<Vec<usize>> {
        let dims = Attrs::required(self.name, name, self.attrs.ints(self.name, name))?;
        let shape = dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| self.err(format!("attr '{name}' has negative dimension {d}"))))
            .collect::<Result<Vec<_>>>()?;
        crate::tensor::element_count(&shape).map_err(|e| self.err(e.message()))?;
        Ok(shape)
    }
}

/// Computes the output types of a node, or an `invalid-argument` naming the problem.
pub fn infer(cx: &InferCtx<'_>) -> Result<Vec<TensorType>> {
    use OpType::*;
    match cx.op {
        Const => {
            cx.arity(0)?;
            let t = Attrs::required(cx.name, "value", cx.attrs.tensor(cx.name, "value"))?;
            if let Some(d) = cx.attrs.dtype(cx.name, "dtype")?
                && d != t.dtype()
            {
                return Err(cx.err(format!("attr dtype {d} does not match value of {}", t.dtype())));
            }
            Ok(vec![t.tensor_type()])
        }
        Placeholder => {
            cx.arity(0)?;
            let dtype = Attrs::required(cx.name, "dtype", cx.attrs.dtype(cx.name, "dtype"))?;
            let dims = Attrs::required(cx.name, "shape", cx.attrs.ints(cx.name, "shape"))?;
            let shape = dims
                .iter()
                .map(|&d| match d {
                    -1 => Ok(None),
                    d if d >= 0 => Ok(Some(d as usize)),
                    d => Err(cx.err(format!("shape dimension {d} must be >= 0 or -1 (unknown)"))),
                })
                .collect::<Result<_>>()?;
            Ok(vec![TensorType { dtype, shape }])
        }
        VariableV2 => {
            cx.arity(0)?;
            let dtype = Attrs::required(cx.name, "dtype", cx.attrs.dtype(cx.name, "dtype"))?;
            Ok(vec![TensorType::known(dtype, &cx.attr_shape("shape")?)])
        }
        Assign | AssignAdd | AssignSub => {
            cx.arity(2)?;
            let var = &cx.inputs[0];
            cx.same_dtype(0, 1)?;
            if cx.op != Assign {
                cx.numeric(0)?;
            }
            if !shapes_compatible(&var.shape, &cx.inputs[1].shape) {
                return Err(cx.err(format!(
                    "value shape {} does not match variable '{}' of shape {}",
                    ShapeDisplay(&cx.inputs[1].shape),
                    cx.input_names[0],
                    ShapeDisplay(&var.shape)
                )));
            }
            Ok(vec![var.clone()])
        }
        Identity => {
            cx.arity(1)?;
            Ok(vec![cx.inputs[0].clone()])
        }
        NoOp => {
            cx.arity(0)?;
            Ok(vec![])
        }
        IsVariableInitialized => {
            cx.arity(1)?;
            Ok(vec![TensorType::scalar(DType::Bool)])
        }
        ReportUninitializedVariables => {
            let names = Attrs::required(cx.name, "names", cx.attrs.tensor(cx.name, "names"))?;
            if names.dtype() != DType::String || names.shape() != [cx.inputs.len()] {
                return Err(cx.err(format!("attr 'names' must be {} strings, one per input", cx.inputs.len())));
            }
            if let Some(i) = cx.inputs.iter().position(|t| *t != TensorType::scalar(DType::Bool)) {
                return Err(cx.err(format!("{} must be a bool scalar", cx.input_desc(i))));
            }
            Ok(vec![TensorType { dtype: DType::String, shape: vec![None] }])
        }
        Add | Sub | Mul | Div | Maximum | Minimum => {
            cx.arity(2)?;
            let dtype = cx.same_dtype(0, 1)?;
            cx.numeric(0)?;
            let shape = broadcast(&cx.inputs[0].shape, &cx.inputs[1].shape).ok_or_else(|| {
                cx.err(format!(
                    "shapes {} and {} cannot be broadcast together ({} and {})",
                    ShapeDisplay(&cx.inputs[0].shape),
                    ShapeDisplay(&cx.inputs[1].shape),
                    cx.input_names[0],
                    cx.input_names[1]
                ))
            })?;
            Ok(vec![TensorType { dtype, shape }])
        }
        Neg | Square | Relu => {
            cx.arity(1)?;
            cx.numeric(0)?;
            Ok(vec![cx.inputs[0].clone()])
        }
        Sqrt | Exp | Log | Sigmoid | Tanh => {
            cx.arity(1)?;
            cx.float(0)?;
            Ok(vec![cx.inputs[0].clone()])
        }
        Softmax => {
            cx.arity(1)?;
            cx.float(0)?;
            if cx.inputs[0].shape.is_empty() {
                return Err(cx.err("input must have rank >= 1"));
            }
            Ok(vec![cx.inputs[0].clone()])
        }
        MatMul => infer_matmul(cx),
        Sum | Mean => infer_reduce(cx),
        Reshape => infer_reshape(cx),
        Fill => {
            cx.arity(1)?;
            if !cx.inputs[0].shape.is_empty() {
                return Err(cx.err(format!("{} must be a scalar", cx.input_desc(0))));
            }
            Ok(vec![TensorType::known(cx.inputs[0].dtype, &cx.attr_shape("shape")?)])
        }
        LogSoftmax => {
            cx.arity(1)?;
            cx.float(0)?;
            if cx.inputs[0].shape.is_empty() {
                return Err(cx.err("input must have rank >= 1"));
            }
            Ok(vec![cx.inputs[0].clone()])
        }
        StopGradient | Equal | NotEqual | Less | LessEqual | Greater | GreaterEqual | LogicalNot | Select | Cast
        | OneHot | ArgMax | Gather | UnsortedSegmentSum | Concat | Slice | Pad | ExpandDims | Squeeze | ZerosLike
        | OnesLike | AddN => super::infer_array::infer(cx),
        SoftmaxCrossEntropyWithLogits
        | SumToShapeOf
        | BroadcastToShapeOf
        | ReluGrad
        | SigmoidGrad
        | TanhGrad
        | ApplyGradientDescent
        | ApplyMomentum
        | ApplyAdam
        | ApplyRMSProp
        | SaveV2
        | RestoreV2
        | CheckpointSteps
        | WriteScalarSummary => super::infer_train::infer(cx),
        RandomNormal | RandomUniform => {
            cx.arity(0)?;
            let dtype = cx.attrs.dtype(cx.name, "dtype")?.unwrap_or(DType::F32);
            if !dtype.is_float() {
                return Err(cx.err(format!("dtype must be f32 or f64, got {dtype}")));
            }
            cx.attrs.int(cx.name, "seed")?;
            Ok(vec![TensorType::known(dtype, &cx.attr_shape("shape")?)])
        }
    }
}

pub(super) fn shapes_compatible(a: &[Dim], b: &[Dim]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.is_none() || y.is_none() || x == y)
}

/// NumPy broadcasting of two static shapes; `None` if they are incompatible.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[Dim], i: usize| if i < rank - s.len() { Some(1) } else { s[i - (rank - s.len())] };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (Some(1), d) | (d, Some(1)) => Some(d),
            (Some(x), Some(y)) if x == y => Some(Some(x)),
            (Some(_), Some(_)) => None,
            (None, Some(x)) | (Some(x), None) => Some(Some(x)),
            (None, None) => Some(None),
        })
        .collect()
}

fn infer_matmul(cx: &InferCtx<'_>) -> Result<Vec<TensorType>> {
    cx.arity(2)?;
    let dtype = cx.same_dtype(0, 1)?;
    cx.numeric(0)?;
    let (a, b) = (&cx.inputs[0].shape, &cx.inputs[1].shape);
    if a.len() != 2 || b.len() != 2 {
        return Err(cx.err(format!("inputs must be matrices, got shapes {} and {}", ShapeDisplay(a), ShapeDisplay(b))));
    }
    let ta = cx.attrs.bool(cx.name, "transpose_a")?.unwrap_or(false);
    let tb = cx.attrs.bool(cx.name, "transpose_b")?.unwrap_or(false);
    let (m, ka) = if ta { (a[1], a[0]) } else { (a[0], a[1]) };
    let (kb, n) = if tb { (b[1], b[0]) } else { (b[0], b[1]) };
    if let (Some(x), Some(y)) = (ka, kb)
        && x != y
    {
        return Err(cx.err(format!(
            "inner dimensions differ: {} {} x {} {} (transpose_a={ta}, transpose_b={tb})",
            cx.input_names[0],
            ShapeDisplay(a),
            cx.input_names[1],
            ShapeDisplay(b)
        )));
    }
    if let (Some(m), Some(n)) = (m, n) {
        crate::tensor::element_count(&[m, n]).map_err(|e| cx.err(e.message()))?;
    }
    Ok(vec![TensorType { dtype, shape: vec![m, n] }])
}

/// Normalises reduction axes against a rank: negative axes count from the end.
pub fn reduction_axes(axes: Option<&[i64]>, rank: usize) -> std::result::Result<Vec<usize>, String> {
    let mut out: Vec<usize> = match axes {
        None => (0..rank).collect(),
        Some(list) => list
            .iter()
            .map(|&a| {
                let r = rank as i64;
                if (-r..r).contains(&a) {
                    Ok(a.rem_euclid(r.max(1)) as usize)
                } else {
                    Err(format!("axis {a} is out of range for rank {rank}"))
                }
            })
            .collect::<std::result::Result<_, _>>()?,
    };
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn infer_reduce(cx: &InferCtx<'_>) -> Result<Vec<TensorType>> {
    cx.arity(1)?;
    let dtype = cx.numeric(0)?;
    let shape = &cx.inputs[0].shape;
    let axes = reduction_axes(cx.attrs.ints(cx.name, "axis")?, shape.len()).map_err(|e| cx.err(e))?;
    let keep = cx.attrs.bool(cx.name, "keep_dims")?.unwrap_or(false);
    let out = shape
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keep) {
            (true, true) => Some(Some(1)),
            (true, false) => None,
            (false, _) => Some(*d),
        })
        .collect();
    Ok(vec![TensorType { dtype, shape: out }])
}

/// Resolves a reshape target (at most one -1) against an element count.
pub fn reshape_target(dims: &[i64], count: Option<usize>) -> std::result::Result<Vec<Dim>, String> {
    let unknown = dims.iter().filter(|&&d| d == -1).count();
    if unknown > 1 {
        return Err(format!("shape {dims:?} has more than one -1"));
    }
    if let Some(d) = dims.iter().find(|&&d| d < -1) {
        return Err(format!("shape {dims:?} has invalid dimension {d}"));
    }
    let known: usize = dims.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
    dims.iter()
        .map(|&d| match (d, count) {
            (-1, Some(n)) if known > 0 && n % known == 0 => Ok(Some(n / known)),
            (-1, Some(n)) => Err(format!("cannot reshape {n} elements into {dims:?}")),
            (-1, None) => Ok(None),
            (d, _) => Ok(Some(d as usize)),
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .and_then(|shape| match count {
            Some(n) if unknown == 0 && known != n => Err(format!("cannot reshape {n} elements into {dims:?}")),
            _ => Ok(shape),
        })
}

fn infer_reshape(cx: &InferCtx<'_>) -> Result<Vec<TensorType>> {
    cx.arity(1)?;
    let dims = Attrs::required(cx.name, "shape", cx.attrs.ints(cx.name, "shape"))?;
    let count = cx.inputs[0].shape.iter().try_fold(1usize, |acc, d| d.map(|d| acc * d));
    let shape = reshape_target(dims, count).map_err(|e| cx.err(e))?;
    Ok(vec![TensorType { dtype: cx.inputs[0].dtype, shape }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::AttrValue;
    use crate::tensor::Tensor;

    fn run(op: OpType, inputs: &[TensorType], attrs: &Attrs) -> Result<Vec<TensorType>> {
        let names: Vec<String> = (0..inputs.len()).map(|i| format!("in{i}")).collect();
        infer(&InferCtx { name: "n", op, inputs, input_names: &names, attrs })
    }

    fn f32s(shape: &[usize]) -> TensorType {
        TensorType::known(DType::F32, shape)
    }

    #[test]
    fn broadcasting_follows_numpy() {
        let s = |v: &[usize]| v.iter().map(|&d| Some(d)).collect::<Vec<_>>();
        assert_eq!(broadcast(&s(&[2, 3]), &s(&[3])), Some(s(&[2, 3])));
        assert_eq!(broadcast(&s(&[4, 1]), &s(&[1, 5])), Some(s(&[4, 5])));
        assert_eq!(broadcast(&s(&[]), &s(&[7])), Some(s(&[7])));
        assert_eq!(broadcast(&s(&[2, 3]), &s(&[2])), None);
        assert_eq!(broadcast(&[None, Some(3)], &s(&[3])), Some(vec![None, Some(3)]));
    }

    #[test]
    fn add_rejects_mismatched_dtypes_naming_inputs() {
        let err = run(OpType::Add, &[f32s(&[2]), TensorType::known(DType::I32, &[2])], &Attrs::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("dtypes differ") && err.contains("in0") && err.contains("i32[2]"), "{err}");
    }

    #[test]
    fn add_rejects_unbroadcastable_shapes() {
        let err = run(OpType::Mul, &[f32s(&[2, 3]), f32s(&[4])], &Attrs::default()).unwrap_err().to_string();
        assert!(err.contains("[2, 3] and [4] cannot be broadcast"), "{err}");
    }

    #[test]
    fn matmul_shapes_and_transposes() {
        let mut attrs = Attrs::default();
        assert_eq!(run(OpType::MatMul, &[f32s(&[2, 3]), f32s(&[3, 4])], &attrs).unwrap()[0], f32s(&[2, 4]));
        attrs.set("transpose_a", AttrValue::Bool(true));
        assert_eq!(run(OpType::MatMul, &[f32s(&[3, 2]), f32s(&[3, 4])], &attrs).unwrap()[0], f32s(&[2, 4]));
        let err = run(OpType::MatMul, &[f32s(&[2, 3]), f32s(&[3, 4])], &attrs).unwrap_err().to_string();
        assert!(err.contains("inner dimensions differ"), "{err}");
        let err = run(OpType::MatMul, &[f32s(&[3]), f32s(&[3, 4])], &Attrs::default()).unwrap_err();
        assert!(err.to_string().contains("must be matrices"));
    }

    #[test]
    fn reductions_drop_or_keep_axes() {
        let mut attrs = Attrs::default();
        attrs.set("axis", AttrValue::Ints(vec![-1]));
        assert_eq!(run(OpType::Sum, &[f32s(&[2, 3])], &attrs).unwrap()[0], f32s(&[2]));
        attrs.set("keep_dims", AttrValue::Bool(true));
        assert_eq!(run(OpType::Mean, &[f32s(&[2, 3])], &attrs).unwrap()[0], f32s(&[2, 1]));
        assert_eq!(run(OpType::Sum, &[f32s(&[2, 3])], &Attrs::default()).unwrap()[0], f32s(&[]));
        attrs.set("axis", AttrValue::Ints(vec![2]));
        assert!(run(OpType::Sum, &[f32s(&[2, 3])], &attrs).unwrap_err().to_string().contains("out of range"));
    }

    #[test]
    fn reshape_infers_one_dimension() {
        assert_eq!(reshape_target(&[-1, 2], Some(6)).unwrap(), vec![Some(3), Some(2)]);
        assert!(reshape_target(&[4, -1], Some(6)).is_err());
        assert!(reshape_target(&[-1, -1], Some(6)).is_err());
        assert!(reshape_target(&[5], Some(6)).is_err());
        assert_eq!(reshape_target(&[-1], None).unwrap(), vec![None]);
    }

    #[test]
    fn huge_shapes_are_rejected_before_allocation() {
        let mut attrs = Attrs::default();
        attrs.set("shape", AttrValue::Ints(vec![1 << 20, 1 << 20]));
        let err = run(OpType::RandomNormal, &[], &attrs).unwrap_err().to_string();
        assert!(err.contains("more than") && err.contains("elements"), "{err}");
        let err = Tensor::from_le_bytes(DType::String, &[1 << 40], &[]).unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        let err = Tensor::from_le_bytes(DType::F32, &[usize::MAX, 2], &[]).unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        // A zero dimension does not let the others through: reducing it away would allocate them.
        assert!(crate::tensor::element_count(&[0, 1 << 40]).is_err());
        assert_eq!(crate::tensor::element_count(&[0, 1 << 20]).unwrap(), 0);
        let mut attrs = Attrs::default();
        attrs.set("depth", AttrValue::Int(1 << 40));
        let err = run(OpType::OneHot, &[TensorType::known(DType::I64, &[0])], &attrs).unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        let err = run(OpType::MatMul, &[f32s(&[1 << 16, 0]), f32s(&[0, 1 << 16])], &Attrs::default()).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn wrong_arity_and_float_only_ops() {
        let err = run(OpType::Add, &[f32s(&[])], &Attrs::default()).unwrap_err().to_string();
        assert!(err.contains("takes 2 input(s), got 1"), "{err}");
        let err = run(OpType::Sqrt, &[TensorType::scalar(DType::I32)], &Attrs::default()).unwrap_err();
        assert!(err.to_string().contains("must be f32 or f64"));
    }

    #[test]
    fn assign_checks_shape_against_variable() {
        let err = run(OpType::AssignAdd, &[f32s(&[2]), f32s(&[3])], &Attrs::default()).unwrap_err();
        assert!(err.to_string().contains("does not match variable 'in0'"), "{err}");
    }
}
