"""Element types (``weft.float32``, ...) and conversion between Python
values and the host's tensors: numbers, bools, strings and nested lists
(rectangular) in, Python scalars and nested lists out. NumPy is not
bundled (componentize-py bundles a native extension only from a WASI build
of it, and PyPI has none for NumPy), so ``Session.run`` returns lists where
TensorFlow returns arrays."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

from ._host import wit_types
from .errors import InvalidArgumentError


@dataclass(frozen=True)
class DType:
    """An element type: its TensorFlow name and the host's."""

    name: str
    wit: Any
    code: str  # struct format character; "" for strings

    def __repr__(self) -> str:
        return f"weft.{self.name}"


float32 = DType("float32", wit_types.Dtype.F32, "f")
float64 = DType("float64", wit_types.Dtype.F64, "d")
int32 = DType("int32", wit_types.Dtype.I32, "i")
int64 = DType("int64", wit_types.Dtype.I64, "q")
bool_ = DType("bool", wit_types.Dtype.BOOL, "?")
string = DType("string", wit_types.Dtype.STRING, "")

_ALL = (float32, float64, int32, int64, bool_, string)


def of_wit(wit: Any) -> DType:
    """The :class:`DType` of a host dtype."""
    return next(d for d in _ALL if d.wit == wit)


def _shape_and_items(value: Any) -> Tuple[List[int], List[Any]]:
    if isinstance(value, (list, tuple)):
        if not value:
            return [0], []
        parts = [_shape_and_items(v) for v in value]
        inner = parts[0][0]
        if any(p[0] != inner for p in parts):
            raise InvalidArgumentError(f"a tensor must be rectangular; got rows of shapes {[p[0] for p in parts]}")
        return [len(value)] + inner, [x for p in parts for x in p[1]]
    return [], [value]


def infer(value: Any) -> DType:
    """TensorFlow's choice for a Python value: float32, int32, bool or string."""
    _, items = _shape_and_items(value)
    if any(isinstance(x, (str, bytes)) for x in items):
        return string
    if items and all(isinstance(x, bool) for x in items):
        return bool_
    if items and all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        return int32
    return float32


def to_tensor(value: Any, dtype: DType | None = None, cast: bool = False) -> Any:
    """A host tensor holding ``value`` (of ``dtype``, else inferred). A
    non-integral float for an integer dtype is an error (TensorFlow's
    ``TypeError``) unless ``cast`` (a feed, which truncates as NumPy does)."""
    dtype = dtype or infer(value)
    shape, items = _shape_and_items(value)
    if dtype is string:
        data = bytearray()
        for x in items:
            if not isinstance(x, (str, bytes)):
                raise InvalidArgumentError(f"cannot make a string tensor of {value!r}: it holds {type(x).__name__}")
            b = x.encode() if isinstance(x, str) else x
            data += struct.pack("<I", len(b)) + b
        return wit_types.Tensor(dtype=dtype.wit, shape=shape, data=bytes(data))
    if dtype is not string and any(isinstance(x, (str, bytes)) for x in items):
        raise InvalidArgumentError(f"cannot make a {dtype.name} tensor of {value!r}: it holds strings")
    if dtype in (int32, int64) and not cast and any(isinstance(x, float) and not x.is_integer() for x in items):
        raise InvalidArgumentError(f"cannot make a {dtype.name} tensor of {value!r}: it holds non-integral floats")
    try:
        if dtype in (int32, int64):
            items = [int(x) for x in items]
        elif dtype is bool_:
            items = [bool(x) for x in items]
        else:
            items = [float(x) for x in items]
        data = struct.pack(f"<{len(items)}{dtype.code}", *items)
    except (TypeError, ValueError, struct.error) as e:
        raise InvalidArgumentError(f"cannot make a {dtype.name} tensor of {value!r}: {e}") from None
    return wit_types.Tensor(dtype=dtype.wit, shape=shape, data=data)


def _nest(items: Sequence[Any], shape: Sequence[int]) -> Any:
    if not shape:
        return items[0]
    if len(shape) == 1:
        return list(items)
    step = len(items) // shape[0] if shape[0] else 0
    return [_nest(items[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def from_tensor(tensor: Any) -> Any:
    """A host tensor as a Python scalar (rank 0) or nested lists; strings
    come back as ``bytes``, as TensorFlow returns them."""
    dtype = of_wit(tensor.dtype)
    data = bytes(tensor.data)
    shape = list(tensor.shape)
    count = 1
    for d in shape:
        count *= d
    if dtype is string:
        items, at = [], 0
        for _ in range(count):
            (n,) = struct.unpack_from("<I", data, at)
            items.append(data[at + 4 : at + 4 + n])
            at += 4 + n
    else:
        items = list(struct.unpack(f"<{count}{dtype.code}", data))
    return _nest(items, shape)
