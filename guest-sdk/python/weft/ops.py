"""The op library as ``tf.compat.v1`` spells it: constants and
placeholders, math, reductions, shapes, random ops, grouping, and
``gradients``. A Python value where a tensor is expected becomes a
``Const`` (of the other operand's dtype when there is one)."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

from . import dtypes
from .framework import Graph, Operation, Tensor, get_default_graph


def _graph(*values: Any) -> Graph:
    for v in values:
        if isinstance(v, Tensor):
            return v.graph
        inner = getattr(v, "_tensor", None)
        if isinstance(inner, Tensor):
            return inner.graph
    return get_default_graph()


def convert_to_tensor(value: Any, dtype: Optional[dtypes.DType] = None, name: Optional[str] = None) -> Tensor:
    """``value`` itself if it is a tensor (or a variable: its value), else a ``Const`` of it."""
    if isinstance(value, Tensor):
        return value
    if hasattr(value, "_tensor"):
        return value._tensor
    return constant(value, dtype=dtype, name=name)


def _binary(op_type: str, a: Any, b: Any, name: Optional[str]) -> Tensor:
    g = _graph(a, b)
    with g.as_default():
        known = next((convert_to_tensor(x) for x in (a, b) if isinstance(x, Tensor) or hasattr(x, "_tensor")), None)
        dtype = known.dtype if known is not None else None
        x, y = convert_to_tensor(a, dtype), convert_to_tensor(b, dtype)
    return g.add_op(op_type, [x, y], name=name).outputs[0]


def _unary(op_type: str, x: Any, name: Optional[str], attrs: Optional[dict] = None) -> Tensor:
    g = _graph(x)
    with g.as_default():
        t = convert_to_tensor(x)
    return g.add_op(op_type, [t], attrs=attrs, name=name).outputs[0]


def constant(
    value: Any, dtype: Optional[dtypes.DType] = None, shape: Optional[Sequence[int]] = None, name: Optional[str] = None
) -> Tensor:
    """A ``Const`` holding ``value`` (``tf.constant``); with ``shape``, a
    scalar ``value`` fills it and a list is reshaped to it."""
    g = get_default_graph()
    if shape is not None and not isinstance(value, (list, tuple)):
        return fill(list(shape), constant(value, dtype), name=name)
    out = g.add_op("Const", attrs={"value": dtypes.to_tensor(value, dtype)}, name=None if shape else name).outputs[0]
    return reshape(out, list(shape), name=name) if shape is not None else out


def placeholder(dtype: dtypes.DType, shape: Optional[Sequence[Optional[int]]] = None, name: Optional[str] = None) -> Tensor:
    """A value fed at run time (``feed_dict``); ``None`` dimensions are unknown."""
    attrs: dict = {"dtype": dtype}
    if shape is not None:
        attrs["shape"] = [-1 if d is None else int(d) for d in shape]
    return get_default_graph().add_op("Placeholder", attrs=attrs, name=name).outputs[0]


def add(a: Any, b: Any, name: Optional[str] = None) -> Tensor:
    """``a + b``, broadcasting."""
    return _binary("Add", a, b, name)


def subtract(a: Any, b: Any, name: Optional[str] = None) -> Tensor:
    """``a - b``, broadcasting."""
    return _binary("Sub", a, b, name)


def multiply(a: Any, b: Any, name: Optional[str] = None) -> Tensor:
    """``a * b`` element-wise, broadcasting."""
    return _binary("Mul", a, b, name)


def divide(a: Any, b: Any, name: Optional[str] = None) -> Tensor:
    """``a / b`` element-wise, broadcasting."""
    return _binary("Div", a, b, name)


def maximum(a: Any, b: Any, name: Optional[str] = None) -> Tensor:
    """``max(a, b)`` element-wise."""
    return _binary("Maximum", a, b, name)


def minimum(a: Any, b: Any, name: Optional[str] = None) -> Tensor:
    """``min(a, b)`` element-wise."""
    return _binary("Minimum", a, b, name)


def equal(a: Any, b: Any, name: Optional[str] = None) -> Tensor:
    """``a == b`` (bool)."""
    return _binary("Equal", a, b, name)


def less(a: Any, b: Any, name: Optional[str] = None) -> Tensor:
    """``a < b`` (bool)."""
    return _binary("Less", a, b, name)


def greater(a: Any, b: Any, name: Optional[str] = None) -> Tensor:
    """``a > b`` (bool)."""
    return _binary("Greater", a, b, name)


def matmul(a: Any, b: Any, transpose_a: bool = False, transpose_b: bool = False, name: Optional[str] = None) -> Tensor:
    """The matrix product ``a @ b``."""
    g = _graph(a, b)
    with g.as_default():
        x, y = convert_to_tensor(a), convert_to_tensor(b)
    attrs = {"transpose_a": transpose_a, "transpose_b": transpose_b}
    return g.add_op("MatMul", [x, y], attrs=attrs, name=name).outputs[0]


def negative(x: Any, name: Optional[str] = None) -> Tensor:
    """``-x``."""
    return _unary("Neg", x, name)


def square(x: Any, name: Optional[str] = None) -> Tensor:
    """``x * x``."""
    return _unary("Square", x, name)


def sqrt(x: Any, name: Optional[str] = None) -> Tensor:
    """The square root of ``x``."""
    return _unary("Sqrt", x, name)


def exp(x: Any, name: Optional[str] = None) -> Tensor:
    """``e ** x``."""
    return _unary("Exp", x, name)


def log(x: Any, name: Optional[str] = None) -> Tensor:
    """The natural logarithm of ``x``."""
    return _unary("Log", x, name)


def relu(x: Any, name: Optional[str] = None) -> Tensor:
    """``max(x, 0)``."""
    return _unary("Relu", x, name)


def sigmoid(x: Any, name: Optional[str] = None) -> Tensor:
    """``1 / (1 + e^-x)``."""
    return _unary("Sigmoid", x, name)


def tanh(x: Any, name: Optional[str] = None) -> Tensor:
    """The hyperbolic tangent."""
    return _unary("Tanh", x, name)


def softmax(logits: Any, name: Optional[str] = None) -> Tensor:
    """Softmax over the last axis."""
    return _unary("Softmax", logits, name)


def log_softmax(logits: Any, name: Optional[str] = None) -> Tensor:
    """Log-softmax over the last axis, computed stably."""
    return _unary("LogSoftmax", logits, name)


def argmax(x: Any, axis: int = 0, name: Optional[str] = None) -> Tensor:
    """The index of the largest value along ``axis`` (int64)."""
    return _unary("ArgMax", x, name, {"axis": int(axis)})


def concat(values: Sequence[Any], axis: int, name: Optional[str] = None) -> Tensor:
    """``values`` joined along ``axis``."""
    g = _graph(*values)
    with g.as_default():
        tensors = [convert_to_tensor(v) for v in values]
    return g.add_op("Concat", tensors, attrs={"axis": int(axis)}, name=name).outputs[0]


def identity(x: Any, name: Optional[str] = None) -> Tensor:
    """``x`` (a new node)."""
    return _unary("Identity", x, name)


def stop_gradient(x: Any, name: Optional[str] = None) -> Tensor:
    """``x``, with gradients stopped."""
    return _unary("StopGradient", x, name)


def cast(x: Any, dtype: dtypes.DType, name: Optional[str] = None) -> Tensor:
    """``x`` converted to ``dtype``."""
    return _unary("Cast", x, name, {"dtype": dtype})


def reshape(x: Any, shape: Sequence[int], name: Optional[str] = None) -> Tensor:
    """``x`` with dimensions ``shape`` (one may be -1)."""
    return _unary("Reshape", x, name, {"shape": list(shape)})


def _reduce(op_type: str, x: Any, axis: Union[None, int, Sequence[int]], keepdims: bool, name: Optional[str]) -> Tensor:
    attrs: dict = {"keep_dims": keepdims}
    if axis is not None:
        attrs["axis"] = [axis] if isinstance(axis, int) else list(axis)
    return _unary(op_type, x, name, attrs)


def reduce_sum(x: Any, axis: Union[None, int, Sequence[int]] = None, keepdims: bool = False, name: Optional[str] = None) -> Tensor:
    """The sum over ``axis`` (all axes by default)."""
    return _reduce("Sum", x, axis, keepdims, name)


def reduce_mean(x: Any, axis: Union[None, int, Sequence[int]] = None, keepdims: bool = False, name: Optional[str] = None) -> Tensor:
    """The mean over ``axis`` (all axes by default)."""
    return _reduce("Mean", x, axis, keepdims, name)


def fill(dims: Sequence[int], value: Any, name: Optional[str] = None) -> Tensor:
    """A tensor of shape ``dims`` filled with the scalar ``value``."""
    return _unary("Fill", value, name, {"shape": list(dims)})


def zeros(shape: Sequence[int], dtype: dtypes.DType = dtypes.float32, name: Optional[str] = None) -> Tensor:
    """Zeros of ``shape``."""
    return fill(shape, constant(0, dtype), name)


def ones(shape: Sequence[int], dtype: dtypes.DType = dtypes.float32, name: Optional[str] = None) -> Tensor:
    """Ones of ``shape``."""
    return fill(shape, constant(1, dtype), name)


def _random(op_type: str, shape: Sequence[int], a: tuple, b: tuple, seed: Optional[int], name: Optional[str]) -> Tensor:
    attrs: dict = {"shape": list(shape), a[0]: float(a[1]), b[0]: float(b[1])}
    if seed is not None:
        attrs["seed"] = int(seed)
    return get_default_graph().add_op(op_type, attrs=attrs, name=name).outputs[0]


def random_normal(shape: Sequence[int], mean: float = 0.0, stddev: float = 1.0, seed: Optional[int] = None, name: Optional[str] = None) -> Tensor:
    """Samples of a normal distribution (float32)."""
    return _random("RandomNormal", shape, ("mean", mean), ("stddev", stddev), seed, name)


def random_uniform(shape: Sequence[int], minval: float = 0.0, maxval: float = 1.0, seed: Optional[int] = None, name: Optional[str] = None) -> Tensor:
    """Samples of a uniform distribution on ``[minval, maxval)`` (float32)."""
    return _random("RandomUniform", shape, ("minval", minval), ("maxval", maxval), seed, name)


def no_op(name: Optional[str] = None) -> Operation:
    """An op that does nothing (run it to wait for its control inputs, or for its device's task)."""
    return get_default_graph().add_op("NoOp", name=name)


def group(*inputs: Any, name: Optional[str] = None) -> Operation:
    """One op that runs after every one of ``inputs``."""
    g = _graph(*inputs)
    return g.add_op("NoOp", name=name or "group_deps", control_inputs=[g._own_op(i) for i in inputs])


def gradients(ys: Any, xs: Any, grad_ys: Any = None, stop_gradients: Sequence[Any] = ()) -> List[Optional[Tensor]]:
    """``tf.gradients``: for each x, the sum over ``ys`` of dy/dx, computed
    on the host; ``None`` where no y depends on x."""
    from ._host import call

    ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
    xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
    g = _graph(*ys, *xs)
    with g.as_default():
        ys = [g._own(convert_to_tensor(y)) for y in ys]
        # A variable's gradient is taken at the variable itself, not its read.
        xs = [g._own(getattr(x, "_node", None) or convert_to_tensor(x)) for x in xs]
        weights = None if grad_ys is None else [g._own(convert_to_tensor(w))._wit for w in grad_ys]
        stops = [g._own(convert_to_tensor(s))._wit for s in stop_gradients]
    found = call(g._wit.gradients, [y._wit for y in ys], [x._wit for x in xs], weights, stops)
    return [None if o is None else Tensor(g, o.node, o.index) for o in found]
