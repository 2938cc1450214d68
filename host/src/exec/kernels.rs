//! CPU kernels: element-wise math with NumPy broadcasting, MatMul through
//! ndarray's matrixmultiply-backed `dot`, reductions, reshapes and random
//! initializers. Integer arithmetic wraps (as TensorFlow's does) and integer
//! division by zero is an error, so no guest input can panic the host.

use ndarray::{ArrayD, Axis, Ix2, IxDyn, Zip};
use num_traits::Float;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};

use super::{kernels_array, kernels_train};
use crate::error::{Error, Result};
use crate::graph::{Node, OpType, reduction_axes, reshape_target};
use crate::tensor::{DType, Tensor};

/// Element types arithmetic kernels run on.
trait Elem: Copy + PartialEq + PartialOrd + Send + Sync + 'static {
    const ZERO: Self;
    const IS_INT: bool;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn from_count(n: usize) -> Self;
}

macro_rules! float_elem {
    ($t:ty) => {
        impl Elem for $t {
            const ZERO: Self = 0.0;
            const IS_INT: bool = false;
            fn add(self, o: Self) -> Self {
                self + o
            }
            fn sub(self, o: Self) -> Self {
                self - o
            }
            fn mul(self, o: Self) -> Self {
                self * o
            }
            fn div(self, o: Self) -> Self {
                self / o
            }
            fn neg(self) -> Self {
                -self
            }
            fn from_count(n: usize) -> Self {
                n as $t
            }
        }
    };
}
macro_rules! int_elem {
    ($t:ty) => {
        impl Elem for $t {
            const ZERO: Self = 0;
            const IS_INT: bool = true;
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn sub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn div(self, o: Self) -> Self {
                self.wrapping_div(o)
            }
            fn neg(self) -> Self {
                self.wrapping_neg()
            }
            fn from_count(n: usize) -> Self {
                n as $t
            }
        }
    };
}
float_elem!(f32);
float_elem!(f64);
int_elem!(i32);
int_elem!(i64);

/// The generator behind the random ops: Xoshiro256++,
/// several times faster than a cryptographic one; random ops make
/// initial values and synthetic data, never secrets.
pub type OpRng = rand_xoshiro::Xoshiro256PlusPlus;

pub(super) type Arr<T> = ndarray::ArcArray<T, IxDyn>;

pub(super) fn node_err(node: &Node, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{} '{}': {why}", node.op.name(), node.name))
}

/// Whether `op`'s kernel reads inputs in shared memory where they lie
/// ([`Tensor::Mapped`]); every other kernel gets copies.
pub fn reads_mapped_in_place(op: OpType) -> bool {
    // Sum reads a whole float tensor in place; its other forms copy it.
    matches!(op, OpType::MatMul | OpType::Sum | OpType::Identity | OpType::StopGradient)
}

/// The error of a kernel that was handed a mapped tensor it cannot read
/// (never: [`compute`] copies them first).
pub(super) fn mapped_input(node: &Node) -> Error {
    Error::internal(format!("{} '{}' was handed a tensor in shared memory", node.op.name(), node.name))
}

/// Runs a stateless kernel on value inputs.
pub fn compute(node: &Node, inputs: &[Tensor], rng: &mut Option<OpRng>) -> Result<Tensor> {
    use OpType::*;
    if !reads_mapped_in_place(node.op) && inputs.iter().any(|t| matches!(t, Tensor::Mapped(_))) {
        let copies: Vec<Tensor> = inputs.iter().map(|t| t.clone().materialize()).collect();
        return compute(node, &copies, rng);
    }
    match node.op {
        Const => Ok(node.attrs.tensor(&node.name, "value")?.expect("checked at add").clone()),
        Identity => Ok(inputs[0].clone()),
        Add | Sub | Mul | Div | Maximum | Minimum => binary(node, &inputs[0], &inputs[1]),
        Neg | Square | Relu | Sqrt | Exp | Log | Sigmoid | Tanh => unary(node, &inputs[0]),
        Softmax => float_map(node, &inputs[0], softmax, softmax),
        MatMul => matmul(node, &inputs[0], &inputs[1]),
        Sum | Mean => reduce(node, &inputs[0]),
        Reshape => reshape(node, &inputs[0]),
        Fill => fill(node, &inputs[0]),
        RandomNormal | RandomUniform => random(node, rng),
        ReportUninitializedVariables => {
            let Tensor::String(names) = node.attrs.tensor(&node.name, "names")?.expect("checked at add") else {
                return Err(node_err(node, "attr 'names' must be strings"));
            };
            let uninitialized: Vec<String> = names
                .iter()
                .zip(inputs)
                .filter(|(_, init)| !matches!(init, Tensor::Bool(b) if b.iter().all(|&x| x)))
                .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                .collect();
            Ok(Tensor::strings(&uninitialized))
        }
        StopGradient => Ok(inputs[0].clone()),
        LogSoftmax => kernels_train::log_softmax(node, &inputs[0]),
        SoftmaxCrossEntropyWithLogits => kernels_train::softmax_cross_entropy(node, &inputs[0], &inputs[1]),
        SumToShapeOf => kernels_train::sum_to_shape_of(node, &inputs[0], &inputs[1]),
        BroadcastToShapeOf => kernels_train::broadcast_to_shape_of(node, &inputs[0], &inputs[1]),
        ReluGrad | SigmoidGrad | TanhGrad => kernels_train::activation_grad(node, &inputs[0], &inputs[1]),
        AddN => kernels_array::add_n(node, inputs),
        Equal | NotEqual | Less | LessEqual | Greater | GreaterEqual => {
            kernels_array::compare(node, &inputs[0], &inputs[1])
        }
        LogicalNot => kernels_array::logical_not(node, &inputs[0]),
        Select => kernels_array::select(node, &inputs[0], &inputs[1], &inputs[2]),
        Cast => kernels_array::cast(node, &inputs[0]),
        OneHot => kernels_array::one_hot(node, &inputs[0]),
        ArgMax => kernels_array::arg_max(node, &inputs[0]),
        Gather => kernels_array::gather(node, &inputs[0], &inputs[1]),
        UnsortedSegmentSum => kernels_array::unsorted_segment_sum(node, &inputs[0], &inputs[1]),
        Concat => kernels_array::concat(node, inputs),
        Slice => kernels_array::slice(node, &inputs[0]),
        Pad => kernels_array::pad(node, &inputs[0]),
        ExpandDims | Squeeze => kernels_array::expand_or_squeeze(node, &inputs[0]),
        ZerosLike | OnesLike => kernels_array::fill_like(node, &inputs[0]),
        Placeholder
        | VariableV2
        | Assign
        | AssignAdd
        | AssignSub
        | NoOp
        | IsVariableInitialized
        | ApplyGradientDescent
        | ApplyMomentum
        | ApplyAdam
        | ApplyRMSProp
        | SaveV2
        | RestoreV2
        | CheckpointSteps
        | WriteScalarSummary => Err(Error::internal(format!("{} is not a stateless kernel", node.op.name()))),
    }
}

fn zip_broadcast<T: Elem>(node: &Node, a: &Arr<T>, b: &Arr<T>, f: impl Fn(T, T) -> T) -> Result<Tensor>
where
    Tensor: From<Arr<T>>,
{
    let sa: Vec<Option<usize>> = a.shape().iter().map(|&d| Some(d)).collect();
    let sb: Vec<Option<usize>> = b.shape().iter().map(|&d| Some(d)).collect();
    let shape: Vec<usize> = crate::graph::broadcast(&sa, &sb)
        .ok_or_else(|| node_err(node, format!("shapes {:?} and {:?} cannot be broadcast", a.shape(), b.shape())))?
        .into_iter()
        .map(|d| d.expect("concrete"))
        .collect();
    let av = a.broadcast(IxDyn(&shape)).expect("broadcastable");
    let bv = b.broadcast(IxDyn(&shape)).expect("broadcastable");
    Ok(Tensor::from(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)).into_shared()))
}

fn binary_typed<T: Elem>(node: &Node, a: &Arr<T>, b: &Arr<T>) -> Result<Tensor>
where
    Tensor: From<Arr<T>>,
{
    match node.op {
        OpType::Add => zip_broadcast(node, a, b, T::add),
        OpType::Sub => zip_broadcast(node, a, b, T::sub),
        OpType::Mul => zip_broadcast(node, a, b, T::mul),
        OpType::Maximum => zip_broadcast(node, a, b, |x, y| if x >= y { x } else { y }),
        OpType::Minimum => zip_broadcast(node, a, b, |x, y| if x <= y { x } else { y }),
        _ => {
            if T::IS_INT && b.iter().any(|&y| y == T::ZERO) {
                return Err(node_err(node, "integer division by zero"));
            }
            zip_broadcast(node, a, b, T::div)
        }
    }
}

fn binary(node: &Node, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => binary_typed(node, x, y),
        (Tensor::F64(x), Tensor::F64(y)) => binary_typed(node, x, y),
        (Tensor::I32(x), Tensor::I32(y)) => binary_typed(node, x, y),
        (Tensor::I64(x), Tensor::I64(y)) => binary_typed(node, x, y),
        _ => Err(node_err(node, format!("unsupported dtypes {} and {}", a.dtype(), b.dtype()))),
    }
}

/// The new value of a variable under `AssignAdd` / `AssignSub`.
pub fn assign_update(node: &Node, old: &Tensor, delta: &Tensor) -> Result<Tensor> {
    macro_rules! go {
        ($x:expr, $y:expr, $v:ident) => {{
            let f = if node.op == OpType::AssignAdd { Elem::add } else { Elem::sub };
            let shape = IxDyn($x.shape());
            let y = $y.broadcast(shape).ok_or_else(|| node_err(node, "delta shape does not match the variable"))?;
            Ok(Tensor::$v(Zip::from($x).and(&y).map_collect(|&a, &b| f(a, b)).into_shared()))
        }};
    }
    match (old, delta) {
        (Tensor::F32(x), Tensor::F32(y)) => go!(x, y, F32),
        (Tensor::F64(x), Tensor::F64(y)) => go!(x, y, F64),
        (Tensor::I32(x), Tensor::I32(y)) => go!(x, y, I32),
        (Tensor::I64(x), Tensor::I64(y)) => go!(x, y, I64),
        _ => Err(node_err(node, format!("cannot update {} with {}", old.dtype(), delta.dtype()))),
    }
}

fn float_map(
    node: &Node,
    x: &Tensor,
    f32_fn: fn(&Arr<f32>) -> ArrayD<f32>,
    f64_fn: fn(&Arr<f64>) -> ArrayD<f64>,
) -> Result<Tensor> {
    match x {
        Tensor::F32(a) => Ok(Tensor::F32(f32_fn(a).into_shared())),
        Tensor::F64(a) => Ok(Tensor::F64(f64_fn(a).into_shared())),
        other => Err(node_err(node, format!("needs f32 or f64, got {}", other.dtype()))),
    }
}

fn unary_elem<T: Elem>(node: &Node, a: &Arr<T>) -> Option<ArrayD<T>> {
    match node.op {
        OpType::Neg => Some(a.mapv(T::neg)),
        OpType::Square => Some(a.mapv(|x| x.mul(x))),
        OpType::Relu => Some(a.mapv(|x| if x > T::ZERO { x } else { T::ZERO })),
        _ => None,
    }
}

/// The float-only elementwise ops: matched exhaustively, so an op without
/// a kernel here is an error, never some other op's result.
#[derive(Clone, Copy)]
enum FloatUnary {
    Sqrt,
    Exp,
    Log,
    Tanh,
    Sigmoid,
}

impl FloatUnary {
    fn of(op: OpType) -> Option<Self> {
        Some(match op {
            OpType::Sqrt => FloatUnary::Sqrt,
            OpType::Exp => FloatUnary::Exp,
            OpType::Log => FloatUnary::Log,
            OpType::Tanh => FloatUnary::Tanh,
            OpType::Sigmoid => FloatUnary::Sigmoid,
            _ => return None,
        })
    }

    fn apply<T: Float>(self, a: &Arr<T>) -> ArrayD<T> {
        match self {
            FloatUnary::Sqrt => a.mapv(T::sqrt),
            FloatUnary::Exp => a.mapv(T::exp),
            FloatUnary::Log => a.mapv(T::ln),
            FloatUnary::Tanh => a.mapv(T::tanh),
            FloatUnary::Sigmoid => a.mapv(|x| T::one() / (T::one() + (-x).exp())),
        }
    }
}

fn unary(node: &Node, x: &Tensor) -> Result<Tensor> {
    let elementwise = match x {
        Tensor::F32(a) => unary_elem(node, a).map(|r| Tensor::F32(r.into_shared())),
        Tensor::F64(a) => unary_elem(node, a).map(|r| Tensor::F64(r.into_shared())),
        Tensor::I32(a) => unary_elem(node, a).map(|r| Tensor::I32(r.into_shared())),
        Tensor::I64(a) => unary_elem(node, a).map(|r| Tensor::I64(r.into_shared())),
        _ => None,
    };
    if let Some(t) = elementwise {
        return Ok(t);
    }
    let f = FloatUnary::of(node.op).ok_or_else(|| node_err(node, "no elementwise kernel for this op"))?;
    match x {
        Tensor::F32(a) => Ok(Tensor::F32(f.apply(a).into_shared())),
        Tensor::F64(a) => Ok(Tensor::F64(f.apply(a).into_shared())),
        other => Err(node_err(node, format!("unsupported dtype {}", other.dtype()))),
    }
}

fn softmax<T: Float + 'static>(a: &Arr<T>) -> ArrayD<T> {
    let last = Axis(a.ndim() - 1);
    let mut out = a.to_owned();
    for mut lane in out.lanes_mut(last) {
        let max = lane.fold(T::neg_infinity(), |m, &x| m.max(x));
        lane.mapv_inplace(|x| (x - max).exp());
        let sum = lane.fold(T::zero(), |s, &x| s + x);
        lane.mapv_inplace(|x| x / sum);
    }
    out
}

fn matmul(node: &Node, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ta = node.attrs.bool(&node.name, "transpose_a")?.unwrap_or(false);
    let tb = node.attrs.bool(&node.name, "transpose_b")?.unwrap_or(false);
    // Views, so an operand in shared memory is read where it lies.
    macro_rules! mm {
        ($t:ty, $v:ident) => {{
            let (Some(x), Some(y)) = (a.float_view::<$t>(), b.float_view::<$t>()) else {
                unreachable!("dtypes matched")
            };
            let x = x.into_dimensionality::<Ix2>().map_err(|e| node_err(node, e))?;
            let y = y.into_dimensionality::<Ix2>().map_err(|e| node_err(node, e))?;
            let x = if ta { x.reversed_axes() } else { x };
            let y = if tb { y.reversed_axes() } else { y };
            if x.ncols() != y.nrows() {
                return Err(node_err(node, format!("inner dimensions differ: {:?} x {:?}", x.shape(), y.shape())));
            }
            Ok(Tensor::$v(x.dot(&y).into_dyn().into_shared()))
        }};
    }
    match (a.dtype(), b.dtype()) {
        (DType::F32, DType::F32) => mm!(f32, F32),
        (DType::F64, DType::F64) => mm!(f64, F64),
        _ => Err(node_err(node, format!("MatMul supports f32 and f64, got {} and {}", a.dtype(), b.dtype()))),
    }
}

fn reduce_typed<T: Elem>(node: &Node, a: &Arr<T>) -> Result<ArrayD<T>> {
    let axes = reduction_axes(node.attrs.ints(&node.name, "axis")?, a.ndim()).map_err(|e| node_err(node, e))?;
    let keep = node.attrs.bool(&node.name, "keep_dims")?.unwrap_or(false);
    let count: usize = axes.iter().map(|&ax| a.shape()[ax]).product();
    let mean = |x: T| if node.op == OpType::Mean && count > 0 { x.div(T::from_count(count)) } else { x };
    if axes.len() == a.ndim() {
        // A full reduction: one pass over the elements.
        let total = mean(a.iter().fold(T::ZERO, |acc, &x| acc.add(x)));
        let shape = if keep { vec![1; a.ndim()] } else { Vec::new() };
        return Ok(ArrayD::from_elem(IxDyn(&shape), total));
    }
    let mut out = a.to_owned();
    for &ax in axes.iter().rev() {
        let summed = out.map_axis(Axis(ax), |lane| lane.fold(T::ZERO, |acc, &x| acc.add(x)));
        out = if keep { summed.insert_axis(Axis(ax)) } else { summed };
    }
    Ok(out.mapv(mean))
}

fn reduce(node: &Node, x: &Tensor) -> Result<Tensor> {
    // Full float sums: ndarray's unrolled `sum` vectorises; the generic fold
    // cannot reorder float additions.
    let all = node.attrs.ints(&node.name, "axis")?.is_none();
    let keep = node.attrs.bool(&node.name, "keep_dims")?.unwrap_or(false);
    // Views: a tensor in shared memory is summed where it lies.
    if all && !keep && node.op == OpType::Sum {
        if let Some(a) = x.float_view::<f32>() {
            return Ok(Tensor::F32(ArrayD::from_elem(IxDyn(&[]), a.sum()).into_shared()));
        }
        if let Some(a) = x.float_view::<f64>() {
            return Ok(Tensor::F64(ArrayD::from_elem(IxDyn(&[]), a.sum()).into_shared()));
        }
    }
    match x.materialize_ref().as_ref() {
        Tensor::F32(a) => Ok(Tensor::F32(reduce_typed(node, a)?.into_shared())),
        Tensor::F64(a) => Ok(Tensor::F64(reduce_typed(node, a)?.into_shared())),
        Tensor::I32(a) => Ok(Tensor::I32(reduce_typed(node, a)?.into_shared())),
        Tensor::I64(a) => Ok(Tensor::I64(reduce_typed(node, a)?.into_shared())),
        other => Err(node_err(node, format!("unsupported dtype {}", other.dtype()))),
    }
}

fn reshape(node: &Node, x: &Tensor) -> Result<Tensor> {
    let dims = node.attrs.ints(&node.name, "shape")?.expect("checked at add");
    let shape: Vec<usize> = reshape_target(dims, Some(x.len()))
        .map_err(|e| node_err(node, e))?
        .into_iter()
        .map(|d| d.expect("resolved with a count"))
        .collect();
    fn re<T: Clone>(a: &Arr<T>, shape: &[usize]) -> Arr<T> {
        ArrayD::from_shape_vec(IxDyn(shape), a.iter().cloned().collect()).expect("element count checked").into_shared()
    }
    Ok(crate::with_array!(x, a => Tensor::from(re(a, &shape))))
}

fn fill(node: &Node, value: &Tensor) -> Result<Tensor> {
    let dims = node.attrs.ints(&node.name, "shape")?.expect("checked at add");
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    fn f<T: Clone>(a: &Arr<T>, shape: &[usize]) -> Arr<T> {
        let v = a.iter().next().expect("scalar").clone();
        ArrayD::from_elem(IxDyn(shape), v).into_shared()
    }
    Ok(crate::with_array!(value, a => Tensor::from(f(a, &shape))))
}

fn random(node: &Node, rng: &mut Option<OpRng>) -> Result<Tensor> {
    let a = &node.attrs;
    let n = &node.name;
    let rng = match rng {
        Some(r) => r,
        None => rng.insert(match a.int(n, "seed")? {
            Some(seed) => OpRng::seed_from_u64(seed as u64),
            None => OpRng::from_os_rng(),
        }),
    };
    let shape: Vec<usize> = a.ints(n, "shape")?.expect("checked at add").iter().map(|&d| d as usize).collect();
    let count: usize = shape.iter().product();
    let dtype = a.dtype(n, "dtype")?.unwrap_or(DType::F32);
    let (p, q) = if node.op == OpType::RandomNormal {
        (a.float(n, "mean")?.unwrap_or(0.0), a.float(n, "stddev")?.unwrap_or(1.0))
    } else {
        (a.float(n, "minval")?.unwrap_or(0.0), a.float(n, "maxval")?.unwrap_or(1.0))
    };
    // Sampled in the output's own type: no f64 pass to convert.
    fn sample<T>(node: &Node, rng: &mut OpRng, count: usize, p: T, q: T) -> Result<Vec<T>>
    where
        T: Float + rand_distr::uniform::SampleUniform,
        rand_distr::StandardNormal: Distribution<T>,
    {
        if node.op == OpType::RandomNormal {
            let dist = Normal::new(p, q).map_err(|e| node_err(node, e))?;
            Ok((0..count).map(|_| dist.sample(rng)).collect())
        } else {
            let dist = Uniform::new(p, q).map_err(|e| node_err(node, format!("minval / maxval: {e}")))?;
            Ok((0..count).map(|_| dist.sample(rng)).collect())
        }
    }
    let dim = IxDyn(&shape);
    Ok(match dtype {
        DType::F64 => {
            Tensor::F64(ArrayD::from_shape_vec(dim, sample(node, rng, count, p, q)?).expect("count").into_shared())
        }
        _ => Tensor::F32(
            ArrayD::from_shape_vec(dim, sample(node, rng, count, p as f32, q as f32)?).expect("count").into_shared(),
        ),
    })
}

macro_rules! tensor_from {
    ($t:ty, $v:ident) => {
        impl From<Arr<$t>> for Tensor {
            fn from(a: Arr<$t>) -> Tensor {
                Tensor::$v(a)
            }
        }
    };
}
tensor_from!(f32, F32);
tensor_from!(f64, F64);
tensor_from!(i32, I32);
tensor_from!(i64, I64);
tensor_from!(bool, Bool);
tensor_from!(Vec<u8>, String);

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::graph::{AttrValue, Graph, NodeRequest, Output};

    /// Builds a one-op graph on constant inputs and runs its kernel.
    fn eval(op: OpType, inputs: Vec<Tensor>, attrs: &[(&str, AttrValue)]) -> Result<Tensor> {
        compute(&const_node(op, &inputs, attrs)?, &inputs, &mut None)
    }

    /// A node of `op` on Const inputs holding `inputs`, checked as the graph checks it.
    pub(in crate::exec) fn const_node(op: OpType, inputs: &[Tensor], attrs: &[(&str, AttrValue)]) -> Result<Node> {
        let mut g = Graph::new();
        let outs: Vec<Output> = inputs
            .iter()
            .map(|t| {
                Output::of(g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(t.clone()))).unwrap())
            })
            .collect();
        let mut req = NodeRequest::new(op).inputs(outs);
        for (k, v) in attrs {
            req = req.attr(k, v.clone());
        }
        let id = g.add(req)?;
        Ok(g.node(id)?.clone())
    }

    fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape, v.to_vec()).unwrap()
    }

    fn i32t(shape: &[usize], v: &[i32]) -> Tensor {
        Tensor::I32(ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap().into_shared())
    }

    #[test]
    fn add_broadcasts_row_over_matrix() {
        let r = eval(OpType::Add, vec![f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]), f32t(&[3], &[10., 20., 30.])], &[]);
        assert_eq!(r.unwrap(), f32t(&[2, 3], &[11., 22., 33., 14., 25., 36.]));
    }

    #[test]
    fn sub_mul_div_by_hand() {
        let a = || f32t(&[2], &[6., 9.]);
        let b = || f32t(&[], &[3.]);
        assert_eq!(eval(OpType::Sub, vec![a(), b()], &[]).unwrap(), f32t(&[2], &[3., 6.]));
        assert_eq!(eval(OpType::Mul, vec![a(), b()], &[]).unwrap(), f32t(&[2], &[18., 27.]));
        assert_eq!(eval(OpType::Div, vec![a(), b()], &[]).unwrap(), f32t(&[2], &[2., 3.]));
    }

    #[test]
    fn integer_overflow_wraps_and_division_by_zero_errors() {
        let r = eval(OpType::Add, vec![i32t(&[], &[i32::MAX]), i32t(&[], &[1])], &[]).unwrap();
        assert_eq!(r, i32t(&[], &[i32::MIN]));
        let err = eval(OpType::Div, vec![i32t(&[2], &[4, 2]), i32t(&[2], &[2, 0])], &[]).unwrap_err();
        assert!(err.to_string().contains("integer division by zero"), "{err}");
        assert_eq!(eval(OpType::Div, vec![i32t(&[], &[-7]), i32t(&[], &[2])], &[]).unwrap(), i32t(&[], &[-3]));
    }

    #[test]
    fn matmul_matches_hand_computation() {
        // [[1,2,3],[4,5,6]] x [[7,8],[9,10],[11,12]] = [[58,64],[139,154]]
        let a = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = f32t(&[3, 2], &[7., 8., 9., 10., 11., 12.]);
        assert_eq!(eval(OpType::MatMul, vec![a.clone(), b], &[]).unwrap(), f32t(&[2, 2], &[58., 64., 139., 154.]));
        // aᵀ a = [[17,22,27],[22,29,36],[27,36,45]]
        let r = eval(OpType::MatMul, vec![a.clone(), a], &[("transpose_a", AttrValue::Bool(true))]).unwrap();
        assert_eq!(r, f32t(&[3, 3], &[17., 22., 27., 22., 29., 36., 27., 36., 45.]));
    }

    #[test]
    fn matmul_reads_operands_in_shared_memory_and_other_kernels_get_copies() {
        use crate::tensor::mapped::mapped_copy;
        let a = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = f32t(&[3, 2], &[7., 8., 9., 10., 11., 12.]);
        let want = f32t(&[2, 2], &[58., 64., 139., 154.]);
        assert_eq!(eval(OpType::MatMul, vec![mapped_copy(&a), mapped_copy(&b)], &[]).unwrap(), want);
        assert_eq!(eval(OpType::MatMul, vec![a.clone(), mapped_copy(&b)], &[]).unwrap(), want);
        let sum = eval(OpType::Add, vec![mapped_copy(&a), a.clone()], &[]).unwrap();
        assert_eq!(eval(OpType::Sum, vec![mapped_copy(&a)], &[]).unwrap(), Tensor::scalar_f32(21.0));
        let rows = eval(OpType::Sum, vec![mapped_copy(&a)], &[("axis", AttrValue::Ints(vec![1]))]).unwrap();
        assert_eq!(rows, f32t(&[2], &[6., 15.]));
        assert_eq!(sum, f32t(&[2, 3], &[2., 4., 6., 8., 10., 12.]));
        assert!(matches!(eval(OpType::Identity, vec![mapped_copy(&a)], &[]).unwrap(), Tensor::Mapped(_)));
        let cast = eval(OpType::Cast, vec![mapped_copy(&a)], &[("dtype", AttrValue::DType(DType::I32))]).unwrap();
        assert_eq!(cast.to_le_bytes(), bytemuck::cast_slice::<i32, u8>(&[1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn unary_ops_by_hand() {
        let x = || f32t(&[3], &[-1., 0., 4.]);
        assert_eq!(eval(OpType::Neg, vec![x()], &[]).unwrap(), f32t(&[3], &[1., -0., -4.]));
        assert_eq!(eval(OpType::Square, vec![x()], &[]).unwrap(), f32t(&[3], &[1., 0., 16.]));
        assert_eq!(eval(OpType::Relu, vec![x()], &[]).unwrap(), f32t(&[3], &[0., 0., 4.]));
        assert_eq!(eval(OpType::Sqrt, vec![f32t(&[2], &[9., 16.])], &[]).unwrap(), f32t(&[2], &[3., 4.]));
        let e = eval(OpType::Exp, vec![f32t(&[1], &[1.])], &[]).unwrap().as_f32_vec().unwrap()[0];
        assert!((e - std::f32::consts::E).abs() < 1e-6);
        let l = eval(OpType::Log, vec![f32t(&[1], &[std::f32::consts::E])], &[]).unwrap().as_f32_vec().unwrap()[0];
        assert!((l - 1.0).abs() < 1e-6);
        let s = eval(OpType::Sigmoid, vec![f32t(&[1], &[0.])], &[]).unwrap();
        assert_eq!(s, f32t(&[1], &[0.5]));
        let t = eval(OpType::Tanh, vec![f32t(&[1], &[0.5])], &[]).unwrap().as_f32_vec().unwrap()[0];
        assert!((t - 0.5f32.tanh()).abs() < 1e-7);
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let r = eval(OpType::Softmax, vec![f32t(&[2, 2], &[0., 0., 1000., 1000.])], &[]).unwrap();
        assert_eq!(r, f32t(&[2, 2], &[0.5, 0.5, 0.5, 0.5]));
        let r =
            eval(OpType::Softmax, vec![f32t(&[2], &[0., std::f32::consts::LN_2])], &[]).unwrap().as_f32_vec().unwrap();
        assert!((r[0] - 1. / 3.).abs() < 1e-6 && (r[1] - 2. / 3.).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn sum_and_mean_over_axes() {
        let x = || f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        assert_eq!(eval(OpType::Sum, vec![x()], &[]).unwrap(), f32t(&[], &[21.]));
        assert_eq!(
            eval(OpType::Sum, vec![x()], &[("axis", AttrValue::Ints(vec![0]))]).unwrap(),
            f32t(&[3], &[5., 7., 9.])
        );
        let r =
            eval(OpType::Mean, vec![x()], &[("axis", AttrValue::Ints(vec![1])), ("keep_dims", AttrValue::Bool(true))]);
        assert_eq!(r.unwrap(), f32t(&[2, 1], &[2., 5.]));
        assert_eq!(eval(OpType::Mean, vec![i32t(&[3], &[1, 2, 4])], &[]).unwrap(), i32t(&[], &[2]));
    }

    #[test]
    fn reshape_and_fill() {
        let r = eval(
            OpType::Reshape,
            vec![f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.])],
            &[("shape", AttrValue::Ints(vec![3, -1]))],
        );
        assert_eq!(r.unwrap(), f32t(&[3, 2], &[1., 2., 3., 4., 5., 6.]));
        let r = eval(OpType::Fill, vec![f32t(&[], &[7.])], &[("shape", AttrValue::Ints(vec![2, 2]))]);
        assert_eq!(r.unwrap(), f32t(&[2, 2], &[7.; 4]));
    }

    #[test]
    fn seeded_random_is_reproducible_and_in_range() {
        let attrs = [("shape", AttrValue::Ints(vec![1000])), ("seed", AttrValue::Int(7))];
        let a = eval(OpType::RandomNormal, vec![], &attrs).unwrap();
        let b = eval(OpType::RandomNormal, vec![], &attrs).unwrap();
        assert_eq!(a, b);
        let v = a.as_f32_vec().unwrap();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.15, "mean of 1000 N(0,1) samples was {mean}");
        let u = eval(
            OpType::RandomUniform,
            vec![],
            &[
                ("shape", AttrValue::Ints(vec![500])),
                ("minval", AttrValue::Float(2.0)),
                ("maxval", AttrValue::Float(3.0)),
            ],
        )
        .unwrap();
        assert!(u.as_f32_vec().unwrap().iter().all(|&x| (2.0..3.0).contains(&x)));
    }
}
