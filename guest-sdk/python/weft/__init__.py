"""weft for Python workers: TensorFlow 1.x's graph-and-session API
(``tf.compat.v1``) over weft's WIT contract, for programs built into
WebAssembly components with componentize-py.

A worker module defines ``main(args)`` and exports it::

    import weft

    def main(args):
        var = weft.Variable(0.0, name="var")
        sess = weft.Session()
        sess.run(weft.global_variables_initializer())
        sess.run(var.assign_add(1.0))
        print("var =", sess.run(var))

    WitWorld = weft.worker(main)

Everything runs on the host: ops are checked as they are added, variables
live on their tasks, sessions run on native kernels. Failed host calls
raise :mod:`weft.errors` exceptions named as TensorFlow's.
"""

from __future__ import annotations

from typing import Callable, List

from . import errors, train
from .dtypes import DType, bool_, float32, float64, int32, int64, string
from .framework import (
    Graph,
    Operation,
    Tensor,
    control_dependencies,
    device,
    get_default_graph,
    name_scope,
    reset_default_graph,
)
from .ops import (
    add,
    argmax,
    cast,
    concat,
    constant,
    convert_to_tensor,
    divide,
    equal,
    exp,
    fill,
    gradients,
    greater,
    group,
    identity,
    less,
    log,
    log_softmax,
    matmul,
    maximum,
    minimum,
    multiply,
    negative,
    no_op,
    ones,
    placeholder,
    random_normal,
    random_uniform,
    reduce_mean,
    reduce_sum,
    relu,
    reshape,
    sigmoid,
    softmax,
    sqrt,
    square,
    stop_gradient,
    subtract,
    tanh,
    zeros,
)
from .session import RunMetadata, RunOptions, Session
from .variables import (
    Variable,
    global_variables,
    global_variables_initializer,
    report_uninitialized_variables,
    trainable_variables,
)

__all__ = [
    name for name in dir() if not name.startswith("_") and name not in ("annotations", "Callable", "List")
]


def worker(main: Callable[[List[str]], None]) -> type:
    """The exported world class for a module whose entry point is
    ``main(args)``: write ``WitWorld = weft.worker(main)``. A
    :class:`weft.errors.OpError` escaping ``main`` ends the program
    ``failed`` with that error; any other exception traps it, with its
    traceback on stderr."""
    import wit_world
    from componentize_py_types import Err

    class WitWorld(wit_world.WitWorld):
        def run(self, args: List[str]) -> None:
            try:
                main(list(args))
            except errors.OpError as e:
                raise Err(errors.to_wit(e)) from None

    return WitWorld
