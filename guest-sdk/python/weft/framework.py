"""Graphs as ``tf.compat.v1`` has them: a default graph, :class:`Tensor`
(one output of a node) and :class:`Operation` handles, and the scopes
``device``, ``name_scope`` and ``control_dependencies``. Every op is
checked by the host as it is added, so a bad one raises here."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Sequence

from . import dtypes
from ._host import call, wit_device, wit_graph


class Graph:
    """A graph on the host (``tf.Graph``)."""

    def __init__(self) -> None:
        self._wit = wit_graph.Graph()
        self._variables: List[Any] = []
        self._device_functions: List[Any] = []

    @contextlib.contextmanager
    def as_default(self) -> Iterator["Graph"]:
        """Makes this the default graph inside the ``with`` block."""
        _stack.append(self)
        try:
            yield self
        finally:
            _stack.pop()

    def get_operations(self) -> List["Operation"]:
        """Every node, in the order it was added."""
        return [Operation(self, o.id) for o in self._wit.operations()]

    def get_operation_by_name(self, name: str) -> "Operation":
        """The node called ``name``."""
        node = self._wit.node_by_name(name)
        if node is None:
            from .errors import NotFoundError

            raise NotFoundError(f"no node '{name}' in the graph")
        return Operation(self, node)

    def get_tensor_by_name(self, name: str) -> "Tensor":
        """The output ``name:index`` (``var:0``)."""
        op, _, index = name.partition(":")
        return self.get_operation_by_name(op).outputs[int(index or 0)]

    def add_op(
        self,
        op_type: str,
        inputs: Sequence["Tensor"] = (),
        attrs: Optional[Dict[str, Any]] = None,
        name: Optional[str] = None,
        control_inputs: Sequence["Operation"] = (),
    ) -> "Operation":
        """Adds one op of any registered type; ``attrs`` values are ints,
        floats, bools, strings, int lists, :class:`weft.DType` or tensors
        (given as ``weft.dtypes.to_tensor(...)``)."""
        spec = wit_graph.OpSpec(
            op_type=op_type,
            name=name,
            inputs=[self._own(t)._wit for t in inputs],
            control_inputs=[self._own_op(c).id for c in control_inputs],
            attrs=[wit_graph.Attr(name=k, value=_attr(v)) for k, v in (attrs or {}).items()],
            device=None,
        )
        return Operation(self, call(self._wit.add_op, spec))

    def _own(self, t: "Tensor") -> "Tensor":
        if not isinstance(t, Tensor):
            raise TypeError(f"expected a weft.Tensor, got {type(t).__name__}")
        if t.graph is not self:
            from .errors import InvalidArgumentError

            raise InvalidArgumentError(f"tensor {t.name} is from another graph")
        return t

    def _own_op(self, op: Any) -> "Operation":
        op = op.op if isinstance(op, Tensor) else op
        if not isinstance(op, Operation) or op.graph is not self:
            from .errors import InvalidArgumentError

            raise InvalidArgumentError(f"{op!r} is not an operation of this graph")
        return op


def _attr(v: Any) -> Any:
    if isinstance(v, bool):
        return wit_graph.AttrValue_Boolean(v)
    if isinstance(v, int):
        return wit_graph.AttrValue_Int(v)
    if isinstance(v, float):
        return wit_graph.AttrValue_Float(v)
    if isinstance(v, str):
        return wit_graph.AttrValue_Text(v)
    if isinstance(v, dtypes.DType):
        return wit_graph.AttrValue_ElementType(v.wit)
    if isinstance(v, (list, tuple)):
        return wit_graph.AttrValue_Ints([int(x) for x in v])
    return wit_graph.AttrValue_Value(v)


# Made on first use: componentize-py runs a module's top level while it
# builds the component, when there is no host to make a graph on.
_default: Optional[Graph] = None
_stack: List[Graph] = []


def get_default_graph() -> Graph:
    """The graph ops go to (``tf.get_default_graph``)."""
    global _default
    if _stack:
        return _stack[-1]
    if _default is None:
        _default = Graph()
    return _default


def reset_default_graph() -> None:
    """A fresh default graph (``tf.reset_default_graph``)."""
    global _default
    if _stack:
        raise AssertionError("reset_default_graph inside a Graph.as_default() block")
    _default = None


class Operation:
    """A node of a graph (``tf.Operation``): runnable as a target."""

    def __init__(self, graph: Graph, node: int) -> None:
        self.graph = graph
        self.id = node

    def _info(self) -> Any:
        return next(o for o in self.graph._wit.operations() if o.id == self.id)

    @property
    def name(self) -> str:
        return self._info().name

    @property
    def type(self) -> str:
        return self._info().op_type

    @property
    def device(self) -> str:
        return self._info().device

    @property
    def outputs(self) -> List["Tensor"]:
        return [Tensor(self.graph, self.id, i) for i in range(len(self._info().outputs))]

    def __repr__(self) -> str:
        return f"<weft.Operation '{self.name}' type={self.type}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Operation) and other.graph is self.graph and other.id == self.id

    def __hash__(self) -> int:
        return hash((id(self.graph), self.id))


class Tensor:
    """One output of a node (``tf.Tensor``): fetchable, feedable, and an
    input of other ops; ``+ - * / @`` and unary ``-`` add ops."""

    def __init__(self, graph: Graph, node: int, index: int = 0) -> None:
        self.graph = graph
        self._wit = wit_graph.Output(node=node, index=index)

    @property
    def op(self) -> Operation:
        return Operation(self.graph, self._wit.node)

    @property
    def value_index(self) -> int:
        return self._wit.index

    @property
    def name(self) -> str:
        return f"{self.op.name}:{self._wit.index}"

    @property
    def dtype(self) -> dtypes.DType:
        return dtypes.of_wit(call(self.graph._wit.output_type, self._wit).dtype)

    @property
    def shape(self) -> List[Optional[int]]:
        dims = call(self.graph._wit.output_type, self._wit).shape
        return [None if d < 0 else d for d in dims]

    def __repr__(self) -> str:
        return f"<weft.Tensor '{self.name}' shape={self.shape} dtype={self.dtype.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tensor) and other.graph is self.graph and other._wit == self._wit

    def __hash__(self) -> int:
        return hash((id(self.graph), self._wit.node, self._wit.index))

    def __add__(self, other: Any) -> "Tensor":
        from . import ops

        return ops.add(self, other)

    def __radd__(self, other: Any) -> "Tensor":
        from . import ops

        return ops.add(other, self)

    def __sub__(self, other: Any) -> "Tensor":
        from . import ops

        return ops.subtract(self, other)

    def __rsub__(self, other: Any) -> "Tensor":
        from . import ops

        return ops.subtract(other, self)

    def __mul__(self, other: Any) -> "Tensor":
        from . import ops

        return ops.multiply(self, other)

    def __rmul__(self, other: Any) -> "Tensor":
        from . import ops

        return ops.multiply(other, self)

    def __truediv__(self, other: Any) -> "Tensor":
        from . import ops

        return ops.divide(self, other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        from . import ops

        return ops.divide(other, self)

    def __matmul__(self, other: Any) -> "Tensor":
        from . import ops

        return ops.matmul(self, other)

    def __neg__(self) -> "Tensor":
        from . import ops

        return ops.negative(self)


@contextlib.contextmanager
def device(spec: Any) -> Iterator[None]:
    """``with weft.device("/job:ps/task:0"):`` places the ops added inside
    (merged over enclosing scopes). Also takes a
    :func:`weft.train.replica_device_setter`: variables go to the ps tasks,
    every other op to its worker device."""
    g = get_default_graph()
    setter = spec if hasattr(spec, "variable_device") else None
    scope = setter.worker_device if setter else spec
    if scope:
        call(wit_device.push_scope, g._wit, scope)
    # What variables consult: the setter, or the plain spec (see
    # `setter_for_variables`).
    g._device_functions.append(setter if setter else (spec or ""))
    try:
        yield
    finally:
        g._device_functions.pop()
        if scope:
            call(wit_device.pop_scope, g._wit)


def _job_of(spec: str) -> Optional[str]:
    if "/job:" not in spec:
        return None
    return spec.split("/job:", 1)[1].split("/")[0]


def setter_for_variables(g: Graph) -> Any:
    """The innermost ``replica_device_setter`` in force for a variable made
    now, unless a plain device scope inside it names another job than its
    ps job (TensorFlow's rule)."""
    inner_jobs = []
    for entry in reversed(g._device_functions):
        if hasattr(entry, "variable_device"):
            return None if any(j != entry.ps_job for j in inner_jobs) else entry
        job = _job_of(entry)
        if job is not None:
            inner_jobs.append(job)
    return None


@contextlib.contextmanager
def name_scope(name: str) -> Iterator[str]:
    """``with weft.name_scope("layer1") as scope:`` prefixes the names of
    the ops added inside; ``scope`` is the full prefix (``layer1/``)."""
    g = get_default_graph()
    prefix = g._wit.push_name_scope(name)
    try:
        yield prefix + "/"
    finally:
        call(g._wit.pop_name_scope)


@contextlib.contextmanager
def control_dependencies(ops: Sequence[Any]) -> Iterator[None]:
    """Ops added inside run after ``ops`` (operations or tensors)."""
    g = get_default_graph()
    call(g._wit.push_control_dependencies, [g._own_op(o).id for o in ops])
    try:
        yield
    finally:
        call(g._wit.pop_control_dependencies)
