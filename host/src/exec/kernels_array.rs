//! CPU kernels of the comparison, selection, cast and array ops. Index
//! inputs (gather indices, segment ids, slice bounds of unknown dimensions)
//! are checked at run time, so no value can panic the host.

use ndarray::{ArrayD, Axis, IxDyn, Slice, Zip};

use super::kernels::{Arr, node_err};
use crate::error::{Error, Result};
use crate::graph::{Node, OpType, reduction_axes};
use crate::tensor::{DType, Tensor};

/// The broadcast shape of several runtime shapes.
pub(super) fn broadcast_shapes(node: &Node, shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let mut out: Vec<Option<usize>> = shapes[0].iter().map(|&d| Some(d)).collect();
    for s in &shapes[1..] {
        let s: Vec<Option<usize>> = s.iter().map(|&d| Some(d)).collect();
        out = crate::graph::broadcast(&out, &s)
            .ok_or_else(|| node_err(node, format!("shapes {shapes:?} cannot be broadcast together")))?;
    }
    Ok(out.into_iter().map(|d| d.expect("concrete")).collect())
}

macro_rules! same_kind {
    ($node:expr, $a:expr, $b:expr, $x:ident, $y:ident => $body:expr) => {
        match ($a, $b) {
            (Tensor::F32($x), Tensor::F32($y)) => $body,
            (Tensor::F64($x), Tensor::F64($y)) => $body,
            (Tensor::I32($x), Tensor::I32($y)) => $body,
            (Tensor::I64($x), Tensor::I64($y)) => $body,
            (Tensor::Bool($x), Tensor::Bool($y)) => $body,
            (a, b) => return Err(node_err($node, format!("unsupported dtypes {} and {}", a.dtype(), b.dtype()))),
        }
    };
}

/// Element-wise comparisons with broadcasting; bool output.
pub fn compare(node: &Node, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shape = broadcast_shapes(node, &[a.shape(), b.shape()])?;
    let op = node.op;
    let out: ArrayD<bool> = same_kind!(node, a, b, x, y => {
        let (x, y) = (x.broadcast(IxDyn(&shape)).expect("shape"), y.broadcast(IxDyn(&shape)).expect("shape"));
        Zip::from(&x).and(&y).map_collect(|p, q| match op {
            OpType::Equal => p == q,
            OpType::NotEqual => p != q,
            OpType::Less => p < q,
            OpType::LessEqual => p <= q,
            OpType::Greater => p > q,
            _ => p >= q,
        })
    });
    Ok(Tensor::Bool(out.into_shared()))
}

/// `not x`.
pub fn logical_not(node: &Node, x: &Tensor) -> Result<Tensor> {
    match x {
        Tensor::Bool(a) => Ok(Tensor::Bool(a.mapv(|v| !v).into_shared())),
        other => Err(node_err(node, format!("needs bool, got {}", other.dtype()))),
    }
}

/// `cond ? t : e`, all three broadcast together.
pub fn select(node: &Node, c: &Tensor, t: &Tensor, e: &Tensor) -> Result<Tensor> {
    let Tensor::Bool(c) = c else { return Err(node_err(node, "cond must be bool")) };
    let shape = broadcast_shapes(node, &[c.shape(), t.shape(), e.shape()])?;
    let c = c.broadcast(IxDyn(&shape)).expect("shape");
    Ok(same_kind!(node, t, e, x, y => {
        let (x, y) = (x.broadcast(IxDyn(&shape)).expect("shape"), y.broadcast(IxDyn(&shape)).expect("shape"));
        Tensor::from(Zip::from(&c).and(&x).and(&y).map_collect(|&c, x, y| if c { *x } else { *y }).into_shared())
    }))
}

/// `x` converted to the `dtype` attr (floats to integers saturate, as Rust's `as` does).
pub fn cast(node: &Node, x: &Tensor) -> Result<Tensor> {
    let to = node.attrs.dtype(&node.name, "dtype")?.expect("checked at add");
    macro_rules! numeric {
        ($a:expr, $zero:expr) => {
            match to {
                DType::F32 => Tensor::F32($a.mapv(|v| v as f32).into_shared()),
                DType::F64 => Tensor::F64($a.mapv(|v| v as f64).into_shared()),
                DType::I32 => Tensor::I32($a.mapv(|v| v as i32).into_shared()),
                DType::I64 => Tensor::I64($a.mapv(|v| v as i64).into_shared()),
                DType::Bool => Tensor::Bool($a.mapv(|v| v != $zero).into_shared()),
                DType::String => return Err(node_err(node, "strings cannot be cast")),
            }
        };
    }
    Ok(match x {
        Tensor::F32(a) => numeric!(a, 0.0),
        Tensor::F64(a) => numeric!(a, 0.0),
        Tensor::I32(a) => numeric!(a, 0),
        Tensor::I64(a) => numeric!(a, 0),
        Tensor::Bool(a) => numeric!(a.mapv(|v| v as u8), 0),
        Tensor::String(_) => return Err(node_err(node, "strings cannot be cast")),
        Tensor::Mapped(_) => return Err(super::kernels::mapped_input(node)),
    })
}

fn indices(node: &Node, t: &Tensor) -> Result<Vec<i64>> {
    match t {
        Tensor::I32(a) => Ok(a.iter().map(|&v| v as i64).collect()),
        Tensor::I64(a) => Ok(a.iter().copied().collect()),
        other => Err(node_err(node, format!("indices must be i32 or i64, got {}", other.dtype()))),
    }
}

/// One-hot rows; indices outside `0..depth` give rows of `off_value`.
pub fn one_hot(node: &Node, x: &Tensor) -> Result<Tensor> {
    let n = &node.name;
    let depth = node.attrs.int(n, "depth")?.expect("checked at add") as usize;
    let on = node.attrs.float(n, "on_value")?.unwrap_or(1.0);
    let off = node.attrs.float(n, "off_value")?.unwrap_or(0.0);
    let idx = indices(node, x)?;
    let mut shape = x.shape().to_vec();
    shape.push(depth);
    crate::tensor::element_count(&shape).map_err(|e| node_err(node, e.message()))?;
    let mut values = vec![off; idx.len() * depth];
    for (row, &i) in idx.iter().enumerate() {
        if (0..depth as i64).contains(&i) {
            values[row * depth + i as usize] = on;
        }
    }
    let arr = ArrayD::from_shape_vec(IxDyn(&shape), values).expect("count matches");
    Ok(match node.attrs.dtype(n, "dtype")?.unwrap_or(DType::F32) {
        DType::F64 => Tensor::F64(arr.into_shared()),
        _ => Tensor::F32(arr.mapv(|v| v as f32).into_shared()),
    })
}

/// Index of the largest value along `axis` (the first, on ties).
pub fn arg_max(node: &Node, x: &Tensor) -> Result<Tensor> {
    let axis_attr = node.attrs.int(&node.name, "axis")?.unwrap_or(0);
    let axis = reduction_axes(Some(&[axis_attr]), x.shape().len()).map_err(|e| node_err(node, e))?[0];
    if x.shape()[axis] == 0 {
        return Err(node_err(node, format!("cannot take the argmax of an empty axis {axis}")));
    }
    macro_rules! go {
        ($a:expr) => {
            $a.map_axis(Axis(axis), |lane| {
                let mut best = 0;
                for (i, v) in lane.iter().enumerate() {
                    if *v > lane[best] {
                        best = i;
                    }
                }
                best as i64
            })
        };
    }
    let out = match x {
        Tensor::F32(a) => go!(a),
        Tensor::F64(a) => go!(a),
        Tensor::I32(a) => go!(a),
        Tensor::I64(a) => go!(a),
        other => return Err(node_err(node, format!("needs a numeric input, got {}", other.dtype()))),
    };
    Ok(Tensor::I64(out.into_shared()))
}

/// Rows of `params` picked by `indices` (axis 0); an index out of range is an error.
pub fn gather(node: &Node, params: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let rows = params.shape().first().copied().ok_or_else(|| node_err(node, "params must have rank >= 1"))?;
    let picked = indices(node, idx)?
        .into_iter()
        .map(|i| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < rows)
                .ok_or_else(|| node_err(node, format!("index {i} is out of range for {rows} rows")))
        })
        .collect::<Result<Vec<usize>>>()?;
    let mut shape = idx.shape().to_vec();
    shape.extend_from_slice(&params.shape()[1..]);
    crate::tensor::element_count(&shape).map_err(|e| node_err(node, e.message()))?;
    Ok(crate::with_array!(params, a => Tensor::from(reshaped(&a.select(Axis(0), &picked).into_shared(), &shape))))
}

/// Rows of `data` summed by segment id into `num_segments` rows; negative
/// ids are dropped, ids past the end are an error.
pub fn unsorted_segment_sum(node: &Node, data: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let segments = node.attrs.int(&node.name, "num_segments")?.expect("checked at add") as usize;
    let ids_v = indices(node, ids)?;
    let prefix = ids.shape();
    if data.shape().len() < prefix.len() || &data.shape()[..prefix.len()] != prefix {
        return Err(node_err(node, format!("segment ids {:?} are not a prefix of data {:?}", prefix, data.shape())));
    }
    let inner: usize = data.shape()[prefix.len()..].iter().product();
    let mut shape = vec![segments];
    shape.extend_from_slice(&data.shape()[prefix.len()..]);
    crate::tensor::element_count(&shape).map_err(|e| node_err(node, e.message()))?;
    if let Some(&bad) = ids_v.iter().find(|&&i| i >= segments as i64) {
        return Err(node_err(node, format!("segment id {bad} is out of range for {segments} segments")));
    }
    macro_rules! go {
        ($a:expr, $v:ident, $zero:expr, $add:expr) => {{
            let flat: Vec<_> = $a.iter().copied().collect();
            let mut out = vec![$zero; segments * inner];
            for (row, &id) in ids_v.iter().enumerate() {
                if id >= 0 {
                    let (dst, src) = (id as usize * inner, row * inner);
                    for k in 0..inner {
                        out[dst + k] = $add(out[dst + k], flat[src + k]);
                    }
                }
            }
            Tensor::$v(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("count").into_shared())
        }};
    }
    Ok(match data {
        Tensor::F32(a) => go!(a, F32, 0.0, |x: f32, y| x + y),
        Tensor::F64(a) => go!(a, F64, 0.0, |x: f64, y| x + y),
        Tensor::I32(a) => go!(a, I32, 0, i32::wrapping_add),
        Tensor::I64(a) => go!(a, I64, 0, i64::wrapping_add),
        other => return Err(node_err(node, format!("needs numeric data, got {}", other.dtype()))),
    })
}

/// The inputs joined along `axis`.
pub fn concat(node: &Node, inputs: &[Tensor]) -> Result<Tensor> {
    let rank = inputs[0].shape().len();
    let axis_attr = node.attrs.int(&node.name, "axis")?.expect("checked at add");
    let axis = reduction_axes(Some(&[axis_attr]), rank).map_err(|e| node_err(node, e))?[0];
    macro_rules! go {
        ($v:ident) => {{
            let views = inputs
                .iter()
                .map(|t| match t {
                    Tensor::$v(a) => Ok(a.view()),
                    other => Err(node_err(node, format!("inputs differ in dtype ({})", other.dtype()))),
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::$v(ndarray::concatenate(Axis(axis), &views).map_err(|e| node_err(node, e))?.into_shared())
        }};
    }
    Ok(match &inputs[0] {
        Tensor::F32(_) => go!(F32),
        Tensor::F64(_) => go!(F64),
        Tensor::I32(_) => go!(I32),
        Tensor::I64(_) => go!(I64),
        Tensor::Bool(_) => go!(Bool),
        Tensor::String(_) => go!(String),
        Tensor::Mapped(_) => return Err(super::kernels::mapped_input(node)),
    })
}

/// `x[begin .. begin + size]` per dimension (size -1 = to the end).
pub fn slice(node: &Node, x: &Tensor) -> Result<Tensor> {
    let begin = node.attrs.ints(&node.name, "begin")?.expect("checked at add");
    let size = node.attrs.ints(&node.name, "size")?.expect("checked at add");
    let mut ranges = Vec::with_capacity(begin.len());
    for (i, &d) in x.shape().iter().enumerate() {
        let b = begin[i] as usize;
        let end = if size[i] < 0 { d } else { b.saturating_add(size[i] as usize) };
        if b > d || end > d {
            return Err(node_err(node, format!("begin {b} and size {} run past dimension {i} of size {d}", size[i])));
        }
        ranges.push((b, end));
    }
    Ok(crate::with_array!(x, a => Tensor::from(
        a.slice_each_axis(|ax| {
            let (b, e) = ranges[ax.axis.index()];
            Slice::from(b..e)
        })
        .to_owned()
        .into_shared()
    )))
}

/// `x` with zeros around it.
pub fn pad(node: &Node, x: &Tensor) -> Result<Tensor> {
    let pads = node.attrs.ints(&node.name, "paddings")?.expect("checked at add");
    let shape: Vec<usize> =
        x.shape().iter().enumerate().map(|(i, &d)| d + (pads[2 * i] + pads[2 * i + 1]) as usize).collect();
    crate::tensor::element_count(&shape).map_err(|e| node_err(node, e.message()))?;
    let place = |ax: ndarray::AxisDescription| {
        let b = pads[2 * ax.axis.index()] as usize;
        Slice::from(b..b + x.shape()[ax.axis.index()])
    };
    macro_rules! go {
        ($a:expr, $v:ident) => {{
            let mut out = ArrayD::zeros(IxDyn(&shape));
            out.slice_each_axis_mut(place).assign($a);
            Tensor::$v(out.into_shared())
        }};
    }
    Ok(match x {
        Tensor::F32(a) => go!(a, F32),
        Tensor::F64(a) => go!(a, F64),
        Tensor::I32(a) => go!(a, I32),
        Tensor::I64(a) => go!(a, I64),
        other => return Err(node_err(node, format!("needs a numeric input, got {}", other.dtype()))),
    })
}

/// `a` in a new shape of the same element count (no copy when it is contiguous).
pub(super) fn reshaped<T: Clone>(a: &Arr<T>, shape: &[usize]) -> Arr<T> {
    if a.is_standard_layout() {
        a.clone().into_shape_with_order(IxDyn(shape)).expect("element count checked")
    } else {
        ArrayD::from_shape_vec(IxDyn(shape), a.iter().cloned().collect()).expect("element count checked").into_shared()
    }
}

/// ExpandDims and Squeeze: the same elements with size-1 dimensions added or removed.
pub fn expand_or_squeeze(node: &Node, x: &Tensor) -> Result<Tensor> {
    let axes = node.attrs.ints(&node.name, "axis")?.expect("checked at add");
    let shape = x.shape();
    let out: Vec<usize> = if node.op == OpType::ExpandDims {
        let rank = shape.len() + axes.len();
        let norm = reduction_axes(Some(axes), rank).map_err(|e| node_err(node, e))?;
        let mut rest = shape.iter();
        (0..rank).map(|i| if norm.contains(&i) { 1 } else { *rest.next().expect("rank") }).collect()
    } else {
        let norm = reduction_axes(Some(axes), shape.len()).map_err(|e| node_err(node, e))?;
        if let Some(&i) = norm.iter().find(|&&i| shape[i] != 1) {
            return Err(node_err(node, format!("dimension {i} of {shape:?} is not 1")));
        }
        shape.iter().enumerate().filter(|(i, _)| !norm.contains(i)).map(|(_, &d)| d).collect()
    };
    Ok(crate::with_array!(x, a => Tensor::from(reshaped(a, &out))))
}

/// Zeros or ones of `x`'s shape and dtype.
pub fn fill_like(node: &Node, x: &Tensor) -> Result<Tensor> {
    let shape = IxDyn(x.shape());
    let one = node.op == OpType::OnesLike;
    Ok(match x.dtype() {
        DType::F32 => Tensor::F32(ArrayD::from_elem(shape, if one { 1.0 } else { 0.0 }).into_shared()),
        DType::F64 => Tensor::F64(ArrayD::from_elem(shape, if one { 1.0 } else { 0.0 }).into_shared()),
        DType::I32 => Tensor::I32(ArrayD::from_elem(shape, one as i32).into_shared()),
        DType::I64 => Tensor::I64(ArrayD::from_elem(shape, one as i64).into_shared()),
        DType::Bool => Tensor::Bool(ArrayD::from_elem(shape, one).into_shared()),
        DType::String => return Err(node_err(node, "needs a numeric or bool input")),
    })
}

/// The sum of same-shaped inputs.
pub fn add_n(node: &Node, inputs: &[Tensor]) -> Result<Tensor> {
    if let Some(t) = inputs.iter().find(|t| t.shape() != inputs[0].shape()) {
        return Err(node_err(node, format!("inputs differ in shape: {:?} and {:?}", inputs[0].shape(), t.shape())));
    }
    macro_rules! go {
        ($v:ident, $add:expr) => {{
            let mut acc = match &inputs[0] {
                Tensor::$v(a) => a.to_owned(),
                _ => unreachable!(),
            };
            for t in &inputs[1..] {
                match t {
                    Tensor::$v(b) => acc.zip_mut_with(b, |x, &y| *x = $add(*x, y)),
                    other => return Err(node_err(node, format!("inputs differ in dtype ({})", other.dtype()))),
                }
            }
            Tensor::$v(acc.into_shared())
        }};
    }
    Ok(match &inputs[0] {
        Tensor::F32(_) => go!(F32, |x: f32, y| x + y),
        Tensor::F64(_) => go!(F64, |x: f64, y| x + y),
        Tensor::I32(_) => go!(I32, i32::wrapping_add),
        Tensor::I64(_) => go!(I64, i64::wrapping_add),
        other => {
            return Err(Error::invalid(format!("AddN '{}': needs numeric inputs, got {}", node.name, other.dtype())));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::kernels::tests::const_node;
    use crate::graph::AttrValue;

    fn node(op: OpType, inputs: &[Tensor], attrs: &[(&str, AttrValue)]) -> Node {
        const_node(op, inputs, attrs).unwrap()
    }

    fn i64s(v: &[i64]) -> Tensor {
        Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap().into_shared())
    }

    #[test]
    fn one_hot_and_arg_max_by_hand() {
        let idx = i64s(&[2, 0, 7]);
        let n = node(OpType::OneHot, std::slice::from_ref(&idx), &[("depth", AttrValue::Int(3))]);
        let t = one_hot(&n, &idx).unwrap();
        assert_eq!(t.shape(), [3, 3]);
        assert_eq!(t.as_f32_vec().unwrap(), [0., 0., 1., 1., 0., 0., 0., 0., 0.], "out of range gives a row of zeros");
        let x = Tensor::from_f32(&[2, 3], vec![1., 5., 5., -1., -3., -2.]).unwrap();
        let n = node(OpType::ArgMax, std::slice::from_ref(&x), &[("axis", AttrValue::Int(1))]);
        assert_eq!(arg_max(&n, &x).unwrap(), i64s(&[1, 0]), "ties pick the first");
    }

    #[test]
    fn comparisons_broadcast() {
        let a = Tensor::from_f32(&[2, 2], vec![1., 2., 3., 4.]).unwrap();
        let b = Tensor::from_f32(&[2], vec![2., 2.]).unwrap();
        let n = node(OpType::GreaterEqual, &[a.clone(), b.clone()], &[]);
        let Tensor::Bool(r) = compare(&n, &a, &b).unwrap() else { panic!() };
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [false, true, true, true]);
    }

    #[test]
    fn out_of_range_indices_are_errors() {
        let params = Tensor::from_f32(&[2, 2], vec![1., 2., 3., 4.]).unwrap();
        let idx = i64s(&[0, 2]);
        let n = node(OpType::Gather, &[params.clone(), idx.clone()], &[]);
        assert!(gather(&n, &params, &idx).unwrap_err().to_string().contains("index 2 is out of range for 2 rows"));
        let n =
            node(OpType::UnsortedSegmentSum, &[params.clone(), idx.clone()], &[("num_segments", AttrValue::Int(2))]);
        let err = unsorted_segment_sum(&n, &params, &idx).unwrap_err().to_string();
        assert!(err.contains("segment id 2 is out of range for 2 segments"), "{err}");
    }
}
