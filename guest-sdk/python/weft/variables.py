"""``tf.Variable``: named state on the task its device scope (or a
``replica_device_setter``) puts it on, shared by name by every graph
that declares it there; and the initializer ops."""

from __future__ import annotations

from typing import Any, List, Optional

from . import dtypes
from ._host import call, wit_variable
from .framework import Graph, Operation, Tensor, get_default_graph, setter_for_variables


def _operand(g: Graph, value: Any, dtype: Optional[dtypes.DType]) -> Any:
    if isinstance(value, Variable):
        value = value._tensor
    if isinstance(value, Tensor):
        return wit_variable.Operand_Node(g._own(value)._wit)
    return wit_variable.Operand_Literal(dtypes.to_tensor(value, dtype))


class Variable:
    """A variable (``tf.Variable(0.0, name="var")``). Use it as an op input
    (its value), fetch it (reads it), or add ``assign``/``assign_add`` ops."""

    def __init__(
        self,
        initial_value: Any,
        name: Optional[str] = None,
        trainable: bool = True,
        dtype: Optional[dtypes.DType] = None,
    ) -> None:
        g = get_default_graph()
        setter = setter_for_variables(g)
        device = setter.variable_device() if setter is not None else None
        options = wit_variable.VariableOptions(name=name, device=device, trainable=trainable)
        self.graph: Graph = g
        self.trainable = trainable
        self._wit = call(wit_variable.Variable.create, g._wit, _operand(g, initial_value, dtype), options)
        out = self._wit.node()
        self._node = Tensor(g, out.node, out.index)
        read = self._wit.value()
        self._tensor = Tensor(g, read.node, read.index)
        g._variables.append(self)

    @property
    def name(self) -> str:
        """The variable's node name (``var``)."""
        return self._wit.name()

    @property
    def op(self) -> Operation:
        return self._node.op

    @property
    def dtype(self) -> dtypes.DType:
        return self._node.dtype

    @property
    def shape(self) -> List[Optional[int]]:
        return self._node.shape

    @property
    def initializer(self) -> Operation:
        """The ``name/Assign`` op that sets the initial value."""
        return Operation(self.graph, self._wit.initializer())

    def value(self) -> Tensor:
        """The ``name/read`` output."""
        return self._tensor

    def read_value(self) -> Tensor:
        return self._tensor

    def _update(self, method: Any, value: Any) -> Tensor:
        out = call(method, _operand(self.graph, value, self.dtype))
        return Tensor(self.graph, out.node, out.index)

    def assign(self, value: Any) -> Tensor:
        """An ``Assign`` op: the variable becomes ``value``."""
        return self._update(self._wit.assign, value)

    def assign_add(self, delta: Any) -> Tensor:
        """An atomic ``AssignAdd`` on the variable's task."""
        return self._update(self._wit.assign_add, delta)

    def assign_sub(self, delta: Any) -> Tensor:
        """An atomic ``AssignSub`` on the variable's task."""
        return self._update(self._wit.assign_sub, delta)

    def is_initialized(self) -> Tensor:
        out = call(self._wit.is_initialized)
        return Tensor(self.graph, out.node, out.index)

    # Arithmetic on a variable is arithmetic on its value.
    def __add__(self, other: Any) -> Tensor:
        return self._tensor + other

    def __radd__(self, other: Any) -> Tensor:
        return other + self._tensor

    def __sub__(self, other: Any) -> Tensor:
        return self._tensor - other

    def __rsub__(self, other: Any) -> Tensor:
        return other - self._tensor

    def __mul__(self, other: Any) -> Tensor:
        return self._tensor * other

    def __rmul__(self, other: Any) -> Tensor:
        return other * self._tensor

    def __matmul__(self, other: Any) -> Tensor:
        return self._tensor @ other

    def __truediv__(self, other: Any) -> Tensor:
        return self._tensor / other

    def __neg__(self) -> Tensor:
        return -self._tensor

    def __repr__(self) -> str:
        return f"<weft.Variable '{self.name}' shape={self.shape} dtype={self.dtype.name}>"


def global_variables(graph: Optional[Graph] = None) -> List[Variable]:
    """The variables this program declared in the graph."""
    return list((graph or get_default_graph())._variables)


def trainable_variables(graph: Optional[Graph] = None) -> List[Variable]:
    """The trainable ones."""
    return [v for v in global_variables(graph) if v.trainable]


def global_variables_initializer() -> Operation:
    """An ``init`` op running every variable's initializer declared so far."""
    g = get_default_graph()
    return Operation(g, call(wit_variable.global_variables_initializer, g._wit))


def report_uninitialized_variables() -> Tensor:
    """A string vector of the names of the graph's variables that have no
    value yet on their tasks (empty once all are initialized)."""
    g = get_default_graph()
    out = call(wit_variable.report_uninitialized_variables, g._wit)
    return Tensor(g, out.node, out.index)
