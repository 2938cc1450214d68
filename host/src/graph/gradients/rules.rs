//! One gradient rule per differentiable op, each referenced from the op's
//! catalogue entry. Rules emit ordinary ops; broadcasting ops reduce their
//! gradients back to each input's shape ([`GradCtx::reduce_to`]).

use super::GradCtx;
use crate::error::{Error, Result};
use crate::graph::{AttrValue, Node, OpType, Output, reduction_axes};

type Grads = Result<Vec<Option<Output>>>;

fn dy(dys: &[Option<Output>]) -> Result<Output> {
    dys.first().copied().flatten().ok_or_else(|| Error::internal("gradient rule called without an output gradient"))
}

fn ints(v: Vec<i64>) -> AttrValue {
    AttrValue::Ints(v)
}

fn bool_attr(n: &Node, name: &str) -> Result<bool> {
    Ok(n.attrs.bool(&n.name, name)?.unwrap_or(false))
}

fn out(n: &Node) -> Output {
    Output::of(n.id)
}

/// Identity: passes the gradient through.
pub fn identity(_: &mut GradCtx<'_>, _: &Node, dys: &[Option<Output>]) -> Grads {
    Ok(vec![Some(dy(dys)?)])
}

/// AddN: the gradient to every input.
pub fn add_n(_: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let g = dy(dys)?;
    Ok(vec![Some(g); n.inputs.len()])
}

/// x + y.
pub fn add(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let g = dy(dys)?;
    let (x, y) = (n.inputs[0], n.inputs[1]);
    Ok(vec![Some(cx.reduce_to(g, x)?), Some(cx.reduce_to(g, y)?)])
}

/// x - y.
pub fn sub(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let g = dy(dys)?;
    let (x, y) = (n.inputs[0], n.inputs[1]);
    let neg = cx.op(OpType::Neg, &[g], &[])?;
    Ok(vec![Some(cx.reduce_to(g, x)?), Some(cx.reduce_to(neg, y)?)])
}

/// x * y.
pub fn mul(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let g = dy(dys)?;
    let (x, y) = (n.inputs[0], n.inputs[1]);
    let gx = cx.op(OpType::Mul, &[g, y], &[])?;
    let gy = cx.op(OpType::Mul, &[g, x], &[])?;
    Ok(vec![Some(cx.reduce_to(gx, x)?), Some(cx.reduce_to(gy, y)?)])
}

/// x / y: dx = g / y, dy = -g · x / y².
pub fn div(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let g = dy(dys)?;
    let (x, y) = (n.inputs[0], n.inputs[1]);
    let gx = cx.op(OpType::Div, &[g, y], &[])?;
    let x_over_y = cx.op(OpType::Div, &[x, y], &[])?;
    let x_over_y2 = cx.op(OpType::Div, &[x_over_y, y], &[])?;
    let prod = cx.op(OpType::Mul, &[g, x_over_y2], &[])?;
    let gy = cx.op(OpType::Neg, &[prod], &[])?;
    Ok(vec![Some(cx.reduce_to(gx, x)?), Some(cx.reduce_to(gy, y)?)])
}

/// -x.
pub fn neg(cx: &mut GradCtx<'_>, _: &Node, dys: &[Option<Output>]) -> Grads {
    Ok(vec![Some(cx.op(OpType::Neg, &[dy(dys)?], &[])?)])
}

/// x²: 2x · g.
pub fn square(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let x = n.inputs[0];
    let two = cx.scalar(cx.ty(x)?.dtype, 2.0)?;
    let two_x = cx.op(OpType::Mul, &[x, two], &[])?;
    Ok(vec![Some(cx.op(OpType::Mul, &[dy(dys)?, two_x], &[])?)])
}

/// √x: g / (2√x).
pub fn sqrt(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let half = cx.scalar(n.outputs[0].dtype, 0.5)?;
    let g = cx.op(OpType::Mul, &[dy(dys)?, half], &[])?;
    Ok(vec![Some(cx.op(OpType::Div, &[g, out(n)], &[])?)])
}

/// eˣ: g · y.
pub fn exp(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    Ok(vec![Some(cx.op(OpType::Mul, &[dy(dys)?, out(n)], &[])?)])
}

/// ln x: g / x.
pub fn log(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    Ok(vec![Some(cx.op(OpType::Div, &[dy(dys)?, n.inputs[0]], &[])?)])
}

/// max(x, 0): g where x > 0.
pub fn relu(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    Ok(vec![Some(cx.op(OpType::ReluGrad, &[dy(dys)?, n.inputs[0]], &[])?)])
}

/// Sigmoid: g · y · (1 − y).
pub fn sigmoid(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    Ok(vec![Some(cx.op(OpType::SigmoidGrad, &[out(n), dy(dys)?], &[])?)])
}

/// Tanh: g · (1 − y²).
pub fn tanh(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    Ok(vec![Some(cx.op(OpType::TanhGrad, &[out(n), dy(dys)?], &[])?)])
}

fn matmul_op(cx: &mut GradCtx<'_>, a: Output, b: Output, ta: bool, tb: bool) -> Result<Output> {
    cx.op(OpType::MatMul, &[a, b], &[("transpose_a", AttrValue::Bool(ta)), ("transpose_b", AttrValue::Bool(tb))])
}

/// a·b with the transpose flags folded in.
pub fn matmul(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let g = dy(dys)?;
    let (a, b) = (n.inputs[0], n.inputs[1]);
    let (ga, gb) = match (bool_attr(n, "transpose_a")?, bool_attr(n, "transpose_b")?) {
        (false, false) => (matmul_op(cx, g, b, false, true)?, matmul_op(cx, a, g, true, false)?),
        (false, true) => (matmul_op(cx, g, b, false, false)?, matmul_op(cx, g, a, true, false)?),
        (true, false) => (matmul_op(cx, b, g, false, true)?, matmul_op(cx, a, g, false, false)?),
        (true, true) => (matmul_op(cx, b, g, true, true)?, matmul_op(cx, g, a, true, true)?),
    };
    Ok(vec![Some(ga), Some(gb)])
}

fn reduce_grad(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>], mean: bool) -> Grads {
    let g = dy(dys)?;
    let x = n.inputs[0];
    let rank = cx.ty(x)?.shape.len();
    let axes = reduction_axes(n.attrs.ints(&n.name, "axis")?, rank).map_err(Error::invalid)?;
    let g = if bool_attr(n, "keep_dims")? || axes.is_empty() {
        g
    } else {
        cx.op(OpType::ExpandDims, &[g], &[("axis", ints(axes.iter().map(|&a| a as i64).collect()))])?
    };
    Ok(vec![Some(cx.op(OpType::BroadcastToShapeOf, &[g, x], &[("mean", AttrValue::Bool(mean))])?)])
}

/// Sum: the gradient broadcast back over the reduced axes.
pub fn sum(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    reduce_grad(cx, n, dys, false)
}

/// Mean: as Sum, divided by the number of elements reduced.
pub fn mean(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    reduce_grad(cx, n, dys, true)
}

fn static_dims(cx: &GradCtx<'_>, x: Output, what: &str) -> Result<Vec<i64>> {
    let ty = cx.ty(x)?;
    let unknown = ty.shape.iter().filter(|d| d.is_none()).count();
    if unknown > 1 {
        return Err(Error::invalid(format!(
            "{what} needs the input's shape, but {ty} has more than one unknown dimension"
        )));
    }
    Ok(ty.shape.iter().map(|d| d.map_or(-1, |d| d as i64)).collect())
}

/// Reshape: reshaped back to the input's shape.
pub fn reshape(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let shape = static_dims(cx, n.inputs[0], "the gradient of Reshape")?;
    Ok(vec![Some(cx.op(OpType::Reshape, &[dy(dys)?], &[("shape", ints(shape))])?)])
}

/// Fill: the sum of the gradient, to the scalar value.
pub fn fill(cx: &mut GradCtx<'_>, _: &Node, dys: &[Option<Output>]) -> Grads {
    Ok(vec![Some(cx.op(OpType::Sum, &[dy(dys)?], &[])?)])
}

fn sum_last(cx: &mut GradCtx<'_>, x: Output) -> Result<Output> {
    cx.op(OpType::Sum, &[x], &[("axis", ints(vec![-1])), ("keep_dims", AttrValue::Bool(true))])
}

/// Softmax: (g − Σ g·y) · y along the last axis.
pub fn softmax(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let (g, y) = (dy(dys)?, out(n));
    let gy = cx.op(OpType::Mul, &[g, y], &[])?;
    let inner = sum_last(cx, gy)?;
    let centred = cx.op(OpType::Sub, &[g, inner], &[])?;
    Ok(vec![Some(cx.op(OpType::Mul, &[centred, y], &[])?)])
}

/// Log-softmax: g − eʸ · Σ g along the last axis.
pub fn log_softmax(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let (g, y) = (dy(dys)?, out(n));
    let total = sum_last(cx, g)?;
    let p = cx.op(OpType::Exp, &[y], &[])?;
    let scaled = cx.op(OpType::Mul, &[p, total], &[])?;
    Ok(vec![Some(cx.op(OpType::Sub, &[g, scaled], &[])?)])
}

/// Cross-entropy with logits: (softmax · Σ labels − labels) · g for the
/// logits (TensorFlow's softmax − labels when the labels are a distribution),
/// −log_softmax · g for the labels.
pub fn softmax_cross_entropy(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let (logits, labels) = (n.inputs[0], n.inputs[1]);
    let g = cx.op(OpType::ExpandDims, &[dy(dys)?], &[("axis", ints(vec![-1]))])?;
    let p = cx.op(OpType::Softmax, &[logits], &[])?;
    let mass = sum_last(cx, labels)?;
    let p = cx.op(OpType::Mul, &[p, mass], &[])?;
    let diff = cx.op(OpType::Sub, &[p, labels], &[])?;
    let g_logits = cx.op(OpType::Mul, &[g, diff], &[])?;
    let log_p = cx.op(OpType::LogSoftmax, &[logits], &[])?;
    let neg_log_p = cx.op(OpType::Neg, &[log_p], &[])?;
    let g_labels = cx.op(OpType::Mul, &[g, neg_log_p], &[])?;
    Ok(vec![Some(cx.reduce_to(g_logits, logits)?), Some(cx.reduce_to(g_labels, labels)?)])
}

fn pick_grad(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>], x_wins: OpType) -> Grads {
    let g = dy(dys)?;
    let (x, y) = (n.inputs[0], n.inputs[1]);
    let x_mask = cx.op(x_wins, &[x, y], &[])?;
    let zeros = cx.op(OpType::ZerosLike, &[g], &[])?;
    let gx = cx.op(OpType::Select, &[x_mask, g, zeros], &[])?;
    let gy = cx.op(OpType::Select, &[x_mask, zeros, g], &[])?;
    Ok(vec![Some(cx.reduce_to(gx, x)?), Some(cx.reduce_to(gy, y)?)])
}

/// max(x, y): the gradient to x where x ≥ y, else to y.
pub fn maximum(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    pick_grad(cx, n, dys, OpType::GreaterEqual)
}

/// min(x, y): the gradient to x where x ≤ y, else to y.
pub fn minimum(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    pick_grad(cx, n, dys, OpType::LessEqual)
}

/// Select: the gradient to t where cond holds, to e elsewhere.
pub fn select(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let g = dy(dys)?;
    let (c, t, e) = (n.inputs[0], n.inputs[1], n.inputs[2]);
    let zeros = cx.op(OpType::ZerosLike, &[g], &[])?;
    let gt = cx.op(OpType::Select, &[c, g, zeros], &[])?;
    let ge = cx.op(OpType::Select, &[c, zeros, g], &[])?;
    Ok(vec![None, Some(cx.reduce_to(gt, t)?), Some(cx.reduce_to(ge, e)?)])
}

/// Cast between float types: cast back; none from or to integers.
pub fn cast(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let from = cx.ty(n.inputs[0])?.dtype;
    if !from.is_float() || !n.outputs[0].dtype.is_float() {
        return Ok(vec![None]);
    }
    Ok(vec![Some(cx.op(OpType::Cast, &[dy(dys)?], &[("dtype", AttrValue::DType(from))])?)])
}

/// Gather: the gradient rows summed into the rows they were taken from.
pub fn gather(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let (params, indices) = (n.inputs[0], n.inputs[1]);
    let rows = cx
        .ty(params)?
        .shape
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| Error::invalid("the gradient of Gather needs the number of rows of params to be known"))?;
    let g =
        cx.op(OpType::UnsortedSegmentSum, &[dy(dys)?, indices], &[("num_segments", AttrValue::Int(rows as i64))])?;
    Ok(vec![Some(g), None])
}

/// UnsortedSegmentSum: each row's gradient is its segment's gradient, and
/// zero for rows with a negative (dropped) id (TensorFlow's GatherDropNegatives).
pub fn unsorted_segment_sum(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let ids = n.inputs[1];
    let ids_ty = cx.ty(ids)?;
    let zero = match ids_ty.dtype {
        crate::tensor::DType::I32 => crate::tensor::Tensor::I32(ndarray::arr0(0i32).into_dyn().into_shared()),
        _ => crate::tensor::Tensor::scalar_i64(0),
    };
    let zero = cx.op(OpType::Const, &[], &[("value", AttrValue::Tensor(zero))])?;
    let clamped = cx.op(OpType::Maximum, &[ids, zero], &[])?;
    let rows = cx.op(OpType::Gather, &[dy(dys)?, clamped], &[])?;
    let kept = cx.op(OpType::GreaterEqual, &[ids, zero], &[])?;
    // One trailing size-1 dimension per dimension a row has beyond the ids.
    let (rank, ids_rank) = (cx.ty(n.inputs[0])?.shape.len(), ids_ty.shape.len());
    let extra: Vec<i64> = (ids_rank..rank).map(|a| a as i64).collect();
    let kept = if extra.is_empty() { kept } else { cx.op(OpType::ExpandDims, &[kept], &[("axis", ints(extra))])? };
    let zeros = cx.op(OpType::ZerosLike, &[rows], &[])?;
    Ok(vec![Some(cx.op(OpType::Select, &[kept, rows, zeros], &[])?), None])
}

fn axis_of(n: &Node, rank: usize) -> Result<usize> {
    let axis = n.attrs.int(&n.name, "axis")?.unwrap_or(0);
    reduction_axes(Some(&[axis]), rank).map(|a| a[0]).map_err(Error::invalid)
}

/// Concat: each input's part of the gradient, sliced back out.
pub fn concat(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let g = dy(dys)?;
    let rank = n.outputs[0].shape.len();
    let axis = axis_of(n, rank)?;
    let mut offset = 0i64;
    let mut grads = Vec::with_capacity(n.inputs.len());
    for &x in &n.inputs {
        let size = cx.ty(x)?.shape[axis]
            .ok_or_else(|| Error::invalid("the gradient of Concat needs each input's size along the axis"))?
            as i64;
        let mut begin = vec![0; rank];
        let mut sizes = vec![-1; rank];
        begin[axis] = offset;
        sizes[axis] = size;
        grads.push(Some(cx.op(OpType::Slice, &[g], &[("begin", ints(begin)), ("size", ints(sizes))])?));
        offset += size;
    }
    Ok(grads)
}

/// Slice: the gradient padded with zeros back to the input's shape.
pub fn slice(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let x = cx.ty(n.inputs[0])?;
    let begin = n.attrs.ints(&n.name, "begin")?.unwrap_or_default();
    let mut paddings = Vec::with_capacity(2 * x.shape.len());
    for (i, d) in x.shape.iter().enumerate() {
        let d = d.ok_or_else(|| Error::invalid(format!("the gradient of Slice needs the input's shape, got {x}")))?;
        let out =
            n.outputs[0].shape[i].ok_or_else(|| Error::invalid("the gradient of Slice needs its output's shape"))?;
        paddings.push(begin[i]);
        paddings.push(d as i64 - begin[i] - out as i64);
    }
    Ok(vec![Some(cx.op(OpType::Pad, &[dy(dys)?], &[("paddings", ints(paddings))])?)])
}

/// Pad: the gradient with the padding sliced off.
pub fn pad(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let x = cx.ty(n.inputs[0])?;
    let paddings = n.attrs.ints(&n.name, "paddings")?.unwrap_or_default();
    let begin: Vec<i64> = paddings.iter().step_by(2).copied().collect();
    let size = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, d)| match (d, paddings[2 * i + 1]) {
            (Some(d), _) => Ok(*d as i64),
            (None, 0) => Ok(-1),
            (None, _) => Err(Error::invalid(format!("the gradient of Pad needs the input's shape, got {x}"))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![Some(cx.op(OpType::Slice, &[dy(dys)?], &[("begin", ints(begin)), ("size", ints(size))])?)])
}

fn axes_attr(n: &Node) -> Result<Vec<i64>> {
    Ok(n.attrs.ints(&n.name, "axis")?.unwrap_or_default().to_vec())
}

/// ExpandDims: the inserted dimensions squeezed out again.
pub fn expand_dims(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    Ok(vec![Some(cx.op(OpType::Squeeze, &[dy(dys)?], &[("axis", ints(axes_attr(n)?))])?)])
}

/// Squeeze: the removed dimensions put back.
pub fn squeeze(cx: &mut GradCtx<'_>, n: &Node, dys: &[Option<Output>]) -> Grads {
    let rank = cx.ty(n.inputs[0])?.shape.len();
    let axes = reduction_axes(Some(&axes_attr(n)?), rank).map_err(Error::invalid)?;
    let axes = axes.into_iter().map(|a| a as i64).collect();
    Ok(vec![Some(cx.op(OpType::ExpandDims, &[dy(dys)?], &[("axis", ints(axes))])?)])
}
