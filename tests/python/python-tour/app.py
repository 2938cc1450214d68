"""A Python worker built with componentize-py against weft's WIT: keeps the
contract callable from Python (static constructors, typed errors, graph
gradients). Prints what it sees for tests/all/python.rs to check."""

import struct

import wit_world
from wit_world.imports import graph, session, types, variable


def scalar(v: float) -> types.Tensor:
    return types.Tensor(dtype=types.Dtype.F32, shape=[], data=struct.pack("<f", v))


def value(t: types.Tensor) -> float:
    return struct.unpack("<f", bytes(t.data))[0]


class WitWorld(wit_world.WitWorld):
    def run(self, args):
        g = graph.Graph()
        opts = variable.VariableOptions(name="var", device=None, trainable=True)
        var = variable.Variable.create(g, variable.Operand_Literal(scalar(3.0)), opts)
        sess = session.Session.open("local", g, session.SessionOptions(timeout_ms=None, place_on_own_task=False))
        no_trace = session.RunOptions(trace_level=session.TraceLevel.NONE, timeout_ms=None)
        sess.run([], [], [var.initializer()], no_trace)
        inc = var.assign_add(variable.Operand_Literal(scalar(1.0)))
        sess.run([], [], [inc.node], no_trace)
        out = sess.run([var.node()], [], [], no_trace)
        print(f"var = {value(out.values[0])}")
        square = g.add_op(graph.OpSpec(op_type="Square", name=None, inputs=[var.value()], control_inputs=[], attrs=[], device=None))
        grads = g.gradients([graph.Output(node=square, index=0)], [var.node()], None, [])
        out = sess.run([grads[0]], [], [], no_trace)
        print(f"d(var^2)/dvar = {value(out.values[0])}")
        try:
            g.add_op(graph.OpSpec(op_type="NoSuchOp", name=None, inputs=[], control_inputs=[], attrs=[], device=None))
        except Exception as e:
            print(f"error: {type(e.value).__name__}: {e.value.value.split(' (')[0]}")
