//! Shape and dtype inference for comparisons, selection, casts and the array
//! ops (gather, concat, slice, pad, expand/squeeze, one-hot, argmax).

use super::infer::{InferCtx, broadcast, reduction_axes, shapes_compatible};
use super::op::{Attrs, OpType};
use crate::error::Result;
use crate::tensor::{DType, Dim, ShapeDisplay, TensorType, element_count};

/// Output types of the ops this file covers.
pub fn infer(cx: &InferCtx<'_>) -> Result<Vec<TensorType>> {
    use OpType::*;
    match cx.op {
        StopGradient => {
            cx.arity(1)?;
            Ok(vec![cx.inputs[0].clone()])
        }
        ZerosLike | OnesLike => {
            cx.arity(1)?;
            if cx.inputs[0].dtype == DType::String {
                return Err(cx.err(format!("{} must be numeric or bool", cx.input_desc(0))));
            }
            Ok(vec![cx.inputs[0].clone()])
        }
        AddN => {
            if cx.inputs.is_empty() {
                return Err(cx.err("takes at least one input"));
            }
            cx.numeric(0)?;
            let mut shape = cx.inputs[0].shape.clone();
            for i in 1..cx.inputs.len() {
                cx.same_dtype(0, i)?;
                if !shapes_compatible(&shape, &cx.inputs[i].shape) {
                    return Err(cx.err(format!("{} differs in shape from {}", cx.input_desc(i), cx.input_desc(0))));
                }
                for (s, d) in shape.iter_mut().zip(&cx.inputs[i].shape) {
                    *s = s.or(*d);
                }
            }
            Ok(vec![TensorType { dtype: cx.inputs[0].dtype, shape }])
        }
        Equal | NotEqual | Less | LessEqual | Greater | GreaterEqual => {
            cx.arity(2)?;
            cx.same_dtype(0, 1)?;
            if matches!(cx.op, Equal | NotEqual) {
                if cx.inputs[0].dtype == DType::String {
                    return Err(cx.err(format!("{} must not be strings", cx.input_desc(0))));
                }
            } else {
                cx.numeric(0)?;
            }
            Ok(vec![TensorType { dtype: DType::Bool, shape: broadcast_all(cx, &[0, 1])? }])
        }
        LogicalNot => {
            cx.arity(1)?;
            want_dtype(cx, 0, &[DType::Bool])?;
            Ok(vec![cx.inputs[0].clone()])
        }
        Select => {
            cx.arity(3)?;
            want_dtype(cx, 0, &[DType::Bool])?;
            let dtype = cx.same_dtype(1, 2)?;
            Ok(vec![TensorType { dtype, shape: broadcast_all(cx, &[0, 1, 2])? }])
        }
        Cast => {
            cx.arity(1)?;
            let to = Attrs::required(cx.name, "dtype", cx.attrs.dtype(cx.name, "dtype"))?;
            if cx.inputs[0].dtype == DType::String || to == DType::String {
                return Err(cx.err("strings cannot be cast"));
            }
            Ok(vec![TensorType { dtype: to, shape: cx.inputs[0].shape.clone() }])
        }
        OneHot => {
            cx.arity(1)?;
            want_dtype(cx, 0, &[DType::I32, DType::I64])?;
            let depth = Attrs::required(cx.name, "depth", cx.attrs.int(cx.name, "depth"))?;
            let depth = usize::try_from(depth).map_err(|_| cx.err(format!("depth {depth} must be >= 0")))?;
            let dtype = float_dtype_attr(cx)?;
            cx.attrs.float(cx.name, "on_value")?;
            cx.attrs.float(cx.name, "off_value")?;
            let mut shape = cx.inputs[0].shape.clone();
            shape.push(Some(depth));
            capped(cx, TensorType { dtype, shape })
        }
        ArgMax => {
            cx.arity(1)?;
            cx.numeric(0)?;
            let shape = &cx.inputs[0].shape;
            if shape.is_empty() {
                return Err(cx.err("input must have rank >= 1"));
            }
            let axis = single_axis(cx, shape.len())?;
            let out = shape.iter().enumerate().filter(|(i, _)| *i != axis).map(|(_, d)| *d).collect();
            Ok(vec![TensorType { dtype: DType::I64, shape: out }])
        }
        Gather => {
            cx.arity(2)?;
            want_dtype(cx, 1, &[DType::I32, DType::I64])?;
            let params = &cx.inputs[0];
            if params.shape.is_empty() {
                return Err(cx.err(format!("{} must have rank >= 1", cx.input_desc(0))));
            }
            let mut shape = cx.inputs[1].shape.clone();
            shape.extend_from_slice(&params.shape[1..]);
            capped(cx, TensorType { dtype: params.dtype, shape })
        }
        UnsortedSegmentSum => {
            cx.arity(2)?;
            let dtype = cx.numeric(0)?;
            want_dtype(cx, 1, &[DType::I32, DType::I64])?;
            let n = Attrs::required(cx.name, "num_segments", cx.attrs.int(cx.name, "num_segments"))?;
            let n = usize::try_from(n).map_err(|_| cx.err(format!("num_segments {n} must be >= 0")))?;
            let (data, ids) = (&cx.inputs[0].shape, &cx.inputs[1].shape);
            if ids.len() > data.len() || !shapes_compatible(&data[..ids.len()], ids) {
                return Err(cx.err(format!(
                    "segment ids of shape {} must be a prefix of data's shape {}",
                    ShapeDisplay(ids),
                    ShapeDisplay(data)
                )));
            }
            let mut shape = vec![Some(n)];
            shape.extend_from_slice(&data[ids.len()..]);
            capped(cx, TensorType { dtype, shape })
        }
        Concat => infer_concat(cx),
        Slice => infer_slice(cx),
        Pad => {
            cx.arity(1)?;
            cx.numeric(0)?;
            let shape = &cx.inputs[0].shape;
            let pads = Attrs::required(cx.name, "paddings", cx.attrs.ints(cx.name, "paddings"))?;
            if pads.len() != 2 * shape.len() || pads.iter().any(|&p| !(0..=1 << 30).contains(&p)) {
                return Err(cx.err(format!(
                    "paddings must be {} values in 0..=2^30 (before and after for each of {} dimensions), got {pads:?}",
                    2 * shape.len(),
                    shape.len()
                )));
            }
            let out = shape.iter().enumerate().map(|(i, d)| d.map(|d| d + (pads[2 * i] + pads[2 * i + 1]) as usize));
            capped(cx, TensorType { dtype: cx.inputs[0].dtype, shape: out.collect() })
        }
        ExpandDims => {
            cx.arity(1)?;
            let shape = &cx.inputs[0].shape;
            let axes = Attrs::required(cx.name, "axis", cx.attrs.ints(cx.name, "axis"))?;
            let rank = shape.len() + axes.len();
            let norm = reduction_axes(Some(axes), rank).map_err(|e| cx.err(e))?;
            if norm.len() != axes.len() {
                return Err(cx.err(format!("axis {axes:?} repeats a position")));
            }
            let mut rest = shape.iter();
            let out = (0..rank).map(|i| if norm.contains(&i) { Some(1) } else { *rest.next().expect("rank") });
            Ok(vec![TensorType { dtype: cx.inputs[0].dtype, shape: out.collect() }])
        }
        Squeeze => {
            cx.arity(1)?;
            let shape = &cx.inputs[0].shape;
            let axes = Attrs::required(cx.name, "axis", cx.attrs.ints(cx.name, "axis"))?;
            let norm = reduction_axes(Some(axes), shape.len()).map_err(|e| cx.err(e))?;
            if let Some(&i) = norm.iter().find(|&&i| shape[i].is_some_and(|d| d != 1)) {
                return Err(cx.err(format!("dimension {i} of {} is not 1", cx.input_desc(0))));
            }
            let out = shape.iter().enumerate().filter(|(i, _)| !norm.contains(i)).map(|(_, d)| *d);
            Ok(vec![TensorType { dtype: cx.inputs[0].dtype, shape: out.collect() }])
        }
        other => Err(cx.err(format!("{} is not an array op", other.name()))),
    }
}

fn want_dtype(cx: &InferCtx<'_>, i: usize, allowed: &[DType]) -> Result<DType> {
    let d = cx.inputs[i].dtype;
    if allowed.contains(&d) {
        return Ok(d);
    }
    let names: Vec<String> = allowed.iter().map(|d| d.to_string()).collect();
    Err(cx.err(format!("{} must be {}", cx.input_desc(i), names.join(" or "))))
}

fn float_dtype_attr(cx: &InferCtx<'_>) -> Result<DType> {
    let dtype = cx.attrs.dtype(cx.name, "dtype")?.unwrap_or(DType::F32);
    if dtype.is_float() { Ok(dtype) } else { Err(cx.err(format!("dtype must be f32 or f64, got {dtype}"))) }
}

fn single_axis(cx: &InferCtx<'_>, rank: usize) -> Result<usize> {
    let axis = cx.attrs.int(cx.name, "axis")?.unwrap_or(0);
    Ok(reduction_axes(Some(&[axis]), rank).map_err(|e| cx.err(e))?[0])
}

/// The type, if its known dimensions stay under the element cap.
fn capped(cx: &InferCtx<'_>, ty: TensorType) -> Result<Vec<TensorType>> {
    let known: Vec<usize> = ty.shape.iter().map(|d| d.unwrap_or(1)).collect();
    element_count(&known).map_err(|e| cx.err(e.message()))?;
    Ok(vec![ty])
}

fn broadcast_all(cx: &InferCtx<'_>, inputs: &[usize]) -> Result<Vec<Dim>> {
    let mut shape = cx.inputs[inputs[0]].shape.clone();
    for &i in &inputs[1..] {
        shape = broadcast(&shape, &cx.inputs[i].shape).ok_or_else(|| {
            cx.err(format!("shapes {} and {} cannot be broadcast together", ShapeDisplay(&shape), cx.input_desc(i)))
        })?;
    }
    Ok(shape)
}

fn infer_concat(cx: &InferCtx<'_>) -> Result<Vec<TensorType>> {
    if cx.inputs.is_empty() {
        return Err(cx.err("takes at least one input"));
    }
    let rank = cx.inputs[0].shape.len();
    if rank == 0 {
        return Err(cx.err(format!("{} must have rank >= 1", cx.input_desc(0))));
    }
    let axis = Attrs::required(cx.name, "axis", cx.attrs.int(cx.name, "axis"))?;
    let axis = reduction_axes(Some(&[axis]), rank).map_err(|e| cx.err(e))?[0];
    let mut shape = cx.inputs[0].shape.clone();
    for i in 1..cx.inputs.len() {
        cx.same_dtype(0, i)?;
        let s = &cx.inputs[i].shape;
        let fits = s.len() == rank
            && s.iter().zip(&shape).enumerate().all(|(j, (a, b))| j == axis || a.is_none() || b.is_none() || a == b);
        if !fits {
            return Err(cx.err(format!("{} does not fit {} along axis {axis}", cx.input_desc(i), cx.input_desc(0))));
        }
        for (j, d) in s.iter().enumerate() {
            shape[j] = if j == axis { shape[j].zip(*d).map(|(a, b)| a + b) } else { shape[j].or(*d) };
        }
    }
    capped(cx, TensorType { dtype: cx.inputs[0].dtype, shape })
}

fn infer_slice(cx: &InferCtx<'_>) -> Result<Vec<TensorType>> {
    cx.arity(1)?;
    let shape = &cx.inputs[0].shape;
    let begin = Attrs::required(cx.name, "begin", cx.attrs.ints(cx.name, "begin"))?;
    let size = Attrs::required(cx.name, "size", cx.attrs.ints(cx.name, "size"))?;
    if begin.len() != shape.len() || size.len() != shape.len() {
        return Err(
            cx.err(format!("begin {begin:?} and size {size:?} need one value per dimension of {}", cx.input_desc(0)))
        );
    }
    let mut out = Vec::with_capacity(shape.len());
    for (i, d) in shape.iter().enumerate() {
        let (b, s) = (begin[i], size[i]);
        if b < 0 || s < -1 {
            return Err(cx.err(format!("begin {b} / size {s} of dimension {i} must be >= 0 (size may be -1)")));
        }
        let dim = match (d, s) {
            (Some(d), -1) if b as usize <= *d => Some(d - b as usize),
            (Some(d), s) if s >= 0 && (b as u64).saturating_add(s as u64) <= *d as u64 => Some(s as usize),
            (None, -1) => None,
            (None, s) => Some(s as usize),
            (Some(d), _) => {
                return Err(cx.err(format!("begin {b} and size {s} run past dimension {i} of size {d}")));
            }
        };
        out.push(dim);
    }
    capped(cx, TensorType { dtype: cx.inputs[0].dtype, shape: out })
}
