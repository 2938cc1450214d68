"""``tf.train`` for weft workers: the cluster and server a program runs
in, ``replica_device_setter``, the global step, and optimizers whose
fused update ops run on each variable's task (atomic there)."""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

from . import dtypes, ops
from ._host import wit_device
from .errors import InvalidArgumentError
from .framework import Operation, Tensor, _job_of, control_dependencies, device, get_default_graph, name_scope
from .variables import Variable, trainable_variables


class ClusterSpec:
    """Jobs and their task addresses (``tf.train.ClusterSpec``)."""

    def __init__(self, jobs: Dict[str, Sequence[str]]) -> None:
        self.jobs: Dict[str, List[str]] = {j: list(t) for j, t in jobs.items()}

    @staticmethod
    def current() -> "ClusterSpec":
        """The cluster this program's host runs it in."""
        me = wit_device.identity()
        return ClusterSpec({j.name: j.tasks for j in me.cluster})

    def job_tasks(self, job_name: str) -> List[str]:
        return self.jobs[job_name]

    def num_tasks(self, job_name: str) -> int:
        return len(self.jobs.get(job_name, []))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClusterSpec) and self.jobs == other.jobs


class Server:
    """A task of the cluster (``tf.train.Server``). weft's hosts serve the
    tasks, so this starts nothing: it names a task of the host's cluster,
    and ``target`` opens sessions on it. A ``cluster`` other than the
    host's, or a task it does not have, is an ``InvalidArgumentError``."""

    def __init__(self, cluster: ClusterSpec, job_name: str, task_index: int = 0) -> None:
        host = ClusterSpec.current()
        if cluster != host:
            raise InvalidArgumentError(f"this program runs in cluster {host.jobs}, not {cluster.jobs}")
        if task_index >= host.num_tasks(job_name):
            raise InvalidArgumentError(f"the cluster has no task {task_index} of job '{job_name}'")
        self.job_name = job_name
        self.task_index = task_index
        me = wit_device.identity()
        self.target = "" if (me.job, me.task) == (job_name, task_index) else f"/job:{job_name}/task:{task_index}"

    def join(self) -> None:
        """Blocks for good, as a TensorFlow ps program's last line does: the
        host keeps serving the task; stop the program (``weft kill``,
        SIGTERM to ``weft run``) to end it."""
        while True:
            time.sleep(3600)


def task_identity() -> Tuple[str, int]:
    """``(job, task)`` this program runs as."""
    me = wit_device.identity()
    return me.job, me.task


class replica_device_setter:  # noqa: N801  (TensorFlow's name)
    """``with weft.device(weft.train.replica_device_setter(ps_tasks=2)):``
    puts variables on ``/job:ps/task:k`` round-robin in creation order, and
    every other op on ``worker_device`` (by default this program's task).
    With no ps tasks it places nothing. An inner ``weft.device`` naming
    another job places the variables inside it itself, as in TensorFlow."""

    def __init__(
        self,
        ps_tasks: int = 0,
        ps_device: str = "/job:ps",
        worker_device: Optional[str] = None,
        cluster: Optional[ClusterSpec] = None,
    ) -> None:
        self.ps_job = _job_of(ps_device) or "ps"
        if cluster is not None:
            ps_tasks = cluster.num_tasks(self.ps_job)
        self.ps_tasks = ps_tasks
        self.ps_device = ps_device
        if worker_device is None:
            job, task = task_identity()
            worker_device = f"/job:{job}/task:{task}"
        self.worker_device = worker_device
        self._next = 0

    def variable_device(self) -> Optional[str]:
        """The device of the next variable; ``None`` with no ps tasks."""
        if self.ps_tasks <= 0:
            return None
        task = self._next % self.ps_tasks
        self._next += 1
        return f"{self.ps_device}/task:{task}"


def get_or_create_global_step() -> Variable:
    """The ``global_step`` variable (int64, not trainable)."""
    g = get_default_graph()
    for v in g._variables:
        if v.name == "global_step":
            return v
    return Variable(0, name="global_step", trainable=False, dtype=dtypes.int64)


class Optimizer:
    """What every optimizer does; subclasses add one fused update op.

    Build optimizers (and ``get_or_create_global_step``) outside name
    scopes: a scope would prefix the names of the slots and the global step
    that every worker shares by name."""

    name = "Optimizer"

    def compute_gradients(self, loss: Tensor, var_list: Optional[Sequence[Variable]] = None) -> List[Tuple[Optional[Tensor], Variable]]:
        """``[(gradient, variable)]``, the gradient ``None`` where the loss does not depend on it."""
        var_list = list(var_list) if var_list is not None else trainable_variables(loss.graph)
        if not var_list:
            raise InvalidArgumentError("compute_gradients: no variables to optimize")
        return list(zip(ops.gradients(loss, var_list), var_list))

    def _create_slots(self, var: Variable) -> None:
        """Creates ``var``'s slots (beside it, outside name scopes), if it has none yet."""

    def _apply_dense(self, grad: Tensor, var: Variable) -> Operation:
        raise NotImplementedError

    def _finish(self, updates: List[Operation]) -> Operation:
        """The op that completes a step, after every update."""
        return ops.group(*updates, name="update")

    def apply_gradients(self, grads_and_vars: Sequence[Tuple[Optional[Tensor], Variable]], global_step: Optional[Variable] = None) -> Operation:
        """One op applying every update, then adding one to ``global_step``."""
        present = [(g, v) for g, v in grads_and_vars if g is not None]
        if not present:
            names = ", ".join(v.name for _, v in grads_and_vars)
            raise InvalidArgumentError(f"no gradients for any variable ({names}): check that the loss depends on them")
        for _, var in present:
            self._create_slots(var)
        with name_scope(self.name):
            updates = []
            for grad, var in present:
                with name_scope("update_" + var.name.replace("/", "_")):
                    updates.append(self._apply_dense(grad, var))
            done = self._finish(updates)
        if global_step is None:
            return done
        with control_dependencies([done]):
            return global_step.assign_add(1).op

    def minimize(self, loss: Tensor, global_step: Optional[Variable] = None, var_list: Optional[Sequence[Variable]] = None) -> Operation:
        """``apply_gradients(compute_gradients(loss, var_list), global_step)``."""
        return self.apply_gradients(self.compute_gradients(loss, var_list), global_step)


def _scalar(value: float, like: Variable) -> Tensor:
    with like.graph.as_default():
        return ops.constant(value, like.dtype)


def _slot(var: Variable, suffix: str, init: float) -> Variable:
    """A slot of ``var``: ``<var>/<suffix>``, its shape and dtype, filled
    with ``init``, on its device (not where a device setter would put it),
    named as TensorFlow names it so that every worker shares it."""
    if var.dtype not in (dtypes.float32, dtypes.float64):
        raise InvalidArgumentError(
            f"cannot optimize variable '{var.name}': it is {var.dtype.name}; optimizers train float32 and float64 variables"
        )
    with var.graph.as_default(), device(var.op.device):
        initial = ops.fill([d or 1 for d in var.shape], _scalar(init, var))
        return Variable(initial, name=f"{var.name}/{suffix}", trainable=False)


class GradientDescentOptimizer(Optimizer):
    """``var -= learning_rate * grad`` (``ApplyGradientDescent``)."""

    name = "GradientDescent"

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate

    def _apply_dense(self, grad: Tensor, var: Variable) -> Operation:
        g = var.graph
        with g.as_default():
            lr = ops.constant(self.learning_rate, var.dtype, name="learning_rate")
        return g.add_op("ApplyGradientDescent", [var._node, lr, grad])


class MomentumOptimizer(Optimizer):
    """``accum = momentum * accum + grad; var -= lr * accum`` (Nesterov if asked); slot ``<var>/Momentum``."""

    name = "Momentum"

    def __init__(self, learning_rate: float, momentum: float, use_nesterov: bool = False) -> None:
        self.learning_rate, self.momentum, self.use_nesterov = learning_rate, momentum, use_nesterov
        self._slots: Dict[str, Variable] = {}

    def _create_slots(self, var: Variable) -> None:
        if var.name not in self._slots:
            self._slots[var.name] = _slot(var, "Momentum", 0.0)

    def _apply_dense(self, grad: Tensor, var: Variable) -> Operation:
        accum = self._slots[var.name]
        inputs = [var._node, accum._node, _scalar(self.learning_rate, var), grad, _scalar(self.momentum, var)]
        return var.graph.add_op("ApplyMomentum", inputs, {"use_nesterov": self.use_nesterov})


class RMSPropOptimizer(Optimizer):
    """RMSProp; slots ``<var>/RMSProp`` (mean square, from 1) and ``<var>/RMSProp_1`` (momentum)."""

    name = "RMSProp"

    def __init__(self, learning_rate: float, decay: float = 0.9, momentum: float = 0.0, epsilon: float = 1e-10) -> None:
        self.learning_rate, self.decay, self.momentum, self.epsilon = learning_rate, decay, momentum, epsilon
        self._slots: Dict[str, Tuple[Variable, Variable]] = {}

    def _create_slots(self, var: Variable) -> None:
        if var.name not in self._slots:
            self._slots[var.name] = (_slot(var, "RMSProp", 1.0), _slot(var, "RMSProp_1", 0.0))

    def _apply_dense(self, grad: Tensor, var: Variable) -> Operation:
        ms, mom = self._slots[var.name]
        hyper = [_scalar(x, var) for x in (self.learning_rate, self.decay, self.momentum, self.epsilon)]
        return var.graph.add_op("ApplyRMSProp", [var._node, ms._node, mom._node, *hyper, grad])


class AdamOptimizer(Optimizer):
    """Adam; slots ``<var>/Adam`` and ``<var>/Adam_1``, and ``beta1_power`` / ``beta2_power``."""

    name = "Adam"

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8) -> None:
        self.learning_rate, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon
        self._slots: Dict[str, Tuple[Variable, Variable]] = {}
        self._powers: Optional[Tuple[Variable, Variable]] = None

    def _create_slots(self, var: Variable) -> None:
        if self._powers is None:
            with var.graph.as_default(), device(var.op.device):
                b1 = Variable(self.beta1, name="beta1_power", trainable=False, dtype=var.dtype)
                b2 = Variable(self.beta2, name="beta2_power", trainable=False, dtype=var.dtype)
            self._powers = (b1, b2)
        if var.name not in self._slots:
            self._slots[var.name] = (_slot(var, "Adam", 0.0), _slot(var, "Adam_1", 0.0))

    def _apply_dense(self, grad: Tensor, var: Variable) -> Operation:
        m, v = self._slots[var.name]
        assert self._powers is not None, "created with the slots"
        b1p, b2p = self._powers
        hyper = [_scalar(x, var) for x in (self.learning_rate, self.beta1, self.beta2, self.epsilon)]
        inputs = [var._node, m._node, v._node, b1p.value(), b2p.value(), *hyper, grad]
        return var.graph.add_op("ApplyAdam", inputs)

    def _finish(self, updates: List[Operation]) -> Operation:
        assert self._powers is not None, "created with the slots"
        b1p, b2p = self._powers
        with control_dependencies(updates):
            a = b1p.assign(b1p.value() * self.beta1).op
            b = b2p.assign(b2p.value() * self.beta2).op
            return ops.group(a, b, name="update")


from .training import Saver, TrainingSession  # noqa: E402,F401  (re-exported as weft.train.*)
