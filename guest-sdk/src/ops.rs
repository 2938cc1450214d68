//! The rest of the op library as typed methods on [`Graph`]: comparisons,
//! selection and casts, array ops, and the numerically stable losses.

use crate::error::Result;
use crate::graph::{AttrValue, Graph, Output, binary_ops, unary_ops};
use crate::tensor::DType;

binary_ops!(
    /// `max(a, b)` element-wise, with broadcasting.
    maximum => "Maximum",
    /// `min(a, b)` element-wise, with broadcasting.
    minimum => "Minimum",
    /// `a == b` (bool), with broadcasting.
    equal => "Equal",
    /// `a != b` (bool).
    not_equal => "NotEqual",
    /// `a < b` (bool).
    less => "Less",
    /// `a <= b` (bool).
    less_equal => "LessEqual",
    /// `a > b` (bool).
    greater => "Greater",
    /// `a >= b` (bool).
    greater_equal => "GreaterEqual",
    /// `tf.nn.softmax_cross_entropy_with_logits(labels, logits)`: the
    /// per-row cross-entropy over the last axis, computed stably (arguments:
    /// logits, then labels).
    softmax_cross_entropy_with_logits => "SoftmaxCrossEntropyWithLogits",
    /// Rows of `params` (axis 0) picked by the integer `indices` (`tf.gather`).
    gather => "Gather",
);

unary_ops!(
    /// `not x` for bool tensors.
    logical_not => "LogicalNot",
    /// `x`, with gradients stopped (`tf.stop_gradient`).
    stop_gradient => "StopGradient",
    /// Zeros of `x`'s shape and dtype.
    zeros_like => "ZerosLike",
    /// Ones of `x`'s shape and dtype.
    ones_like => "OnesLike",
    /// Log-softmax over the last axis, computed stably.
    log_softmax => "LogSoftmax",
);

impl Graph {
    /// `tf.where(cond, t, e)`: `t` where `cond` holds, `e` elsewhere; all three broadcast.
    pub fn select(&self, cond: Output, t: Output, e: Output) -> Result<Output> {
        self.op("Select").input(cond).input(t).input(e).build()
    }

    /// `tf.cast(x, dtype)`.
    pub fn cast(&self, x: Output, dtype: DType) -> Result<Output> {
        self.op("Cast").input(x).attr("dtype", AttrValue::ElementType(dtype)).build()
    }

    /// `tf.one_hot(indices, depth)`: f32 rows with 1 at each index.
    pub fn one_hot(&self, indices: Output, depth: u32) -> Result<Output> {
        self.op("OneHot").input(indices).attr("depth", AttrValue::Int(depth as i64)).build()
    }

    /// `tf.argmax(x, axis)`: i64 indices of the largest values.
    pub fn argmax(&self, x: Output, axis: i64) -> Result<Output> {
        self.op("ArgMax").input(x).attr("axis", AttrValue::Int(axis)).build()
    }

    /// `tf.concat(values, axis)`.
    pub fn concat(&self, values: &[Output], axis: i64) -> Result<Output> {
        values.iter().fold(self.op("Concat"), |b, &v| b.input(v)).attr("axis", AttrValue::Int(axis)).build()
    }

    /// `tf.slice(x, begin, size)`; a size of -1 takes the rest of the dimension.
    pub fn slice(&self, x: Output, begin: &[i64], size: &[i64]) -> Result<Output> {
        self.op("Slice")
            .input(x)
            .attr("begin", AttrValue::Ints(begin.to_vec()))
            .attr("size", AttrValue::Ints(size.to_vec()))
            .build()
    }

    /// `tf.pad(x, paddings)` with zeros; `paddings` is (before, after) per dimension.
    pub fn pad(&self, x: Output, paddings: &[(i64, i64)]) -> Result<Output> {
        let flat = paddings.iter().flat_map(|&(a, b)| [a, b]).collect();
        self.op("Pad").input(x).attr("paddings", AttrValue::Ints(flat)).build()
    }

    /// `tf.expand_dims`: size-1 dimensions inserted at `axes` (positions in the result).
    pub fn expand_dims(&self, x: Output, axes: &[i64]) -> Result<Output> {
        self.op("ExpandDims").input(x).attr("axis", AttrValue::Ints(axes.to_vec())).build()
    }

    /// `tf.squeeze`: the size-1 dimensions at `axes` removed.
    pub fn squeeze(&self, x: Output, axes: &[i64]) -> Result<Output> {
        self.op("Squeeze").input(x).attr("axis", AttrValue::Ints(axes.to_vec())).build()
    }

    /// `tf.add_n`: the sum of same-shaped tensors.
    pub fn add_n(&self, xs: &[Output]) -> Result<Output> {
        xs.iter().fold(self.op("AddN"), |b, &x| b.input(x)).build()
    }

    /// `tf.gradients(ys, xs)`: for each x, the sum over `ys` of dy/dx, or
    /// `None` where no y depends on it. The gradient ops are added on the
    /// host, named `gradients/...` and placed with their forward ops.
    pub fn gradients(&self, ys: &[Output], xs: &[Output]) -> Result<Vec<Option<Output>>> {
        self.gradients_with(ys, xs, None, &[])
    }

    /// [`Graph::gradients`] with `grad_ys` weighting each y and
    /// `stop_gradients` that gradients do not flow through.
    pub fn gradients_with(
        &self,
        ys: &[Output],
        xs: &[Output],
        grad_ys: Option<&[Output]>,
        stop_gradients: &[Output],
    ) -> Result<Vec<Option<Output>>> {
        let all = ys.iter().map(|o| ("y", o)).chain(xs.iter().map(|o| ("x", o)));
        let all = all.chain(grad_ys.unwrap_or_default().iter().map(|o| ("grad_y", o)));
        if let Some((what, o)) =
            all.chain(stop_gradients.iter().map(|o| ("stop_gradient", o))).find(|(_, o)| o.graph != self.id)
        {
            return Err(crate::Error::new(
                crate::Code::InvalidArgument,
                format!("gradients: {what} (node {} of another graph) is not in this graph", o.node),
            ));
        }
        let raw = |v: &[Output]| v.iter().map(|o| o.raw()).collect::<Vec<_>>();
        let grad_ys = grad_ys.map(raw);
        let out = self.raw.gradients(&raw(ys), &raw(xs), grad_ys.as_deref(), &raw(stop_gradients))?;
        Ok(out.into_iter().map(|g| g.map(|o| Output::from_raw(o, self.id))).collect())
    }
}
