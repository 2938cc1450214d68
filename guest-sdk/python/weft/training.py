"""``tf.train.Saver`` and a ``MonitoredTrainingSession`` with the recovery
TensorFlow never had, as the Rust SDK has them (``weft_sdk::train``).

The :class:`Saver` writes each task's variables on that task (``SaveV2``
under the host's ``--checkpoint-dir``) and restores them (``RestoreV2``),
only from a step every task kept. The :class:`TrainingSession`'s chief
restores the latest checkpoint or initializes; the others wait for the
variables; the chief saves every N steps; and when a task is unreachable
or lost its variables (a restarted parameter server), every run waits or
restores them from the latest checkpoint, and training carries on.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from . import dtypes, ops
from .errors import (
    AbortedError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OpError,
    UnavailableError,
)
from .framework import Operation, Tensor, device, get_default_graph, name_scope
from .session import Session
from .variables import Variable, global_variables, global_variables_initializer, report_uninitialized_variables

T = TypeVar("T")


class _Shard:
    def __init__(self, device_name: str, nodes: List[Tensor], prefix: str, step: Optional[Variable], keep: int) -> None:
        g = nodes[0].graph
        self.device = device_name
        self.nodes = nodes
        with g.as_default(), device(device_name):
            step_value = step.value() if step is not None else ops.constant(-1, dtypes.int64)
            self.save = g.add_op("SaveV2", nodes + [step_value], {"prefix": prefix, "max_to_keep": keep}).outputs[0]
            self.restore_if_lost = g.add_op("RestoreV2", nodes, {"prefix": prefix, "only_if_uninitialized": True}).outputs[0]
            self.steps = g.add_op("CheckpointSteps", attrs={"prefix": prefix}).outputs[0]


class Saver:
    """Saves and restores variables, each on its own task (``tf.train.Saver``)."""

    def __init__(
        self,
        sess: Session,
        prefix: str,
        var_list: Optional[Sequence[Variable]] = None,
        global_step: Optional[Variable] = None,
        max_to_keep: int = 5,
    ) -> None:
        variables = list(var_list) if var_list is not None else global_variables(sess.graph)
        if not variables:
            raise InvalidArgumentError("Saver: there are no variables to save")
        self.prefix = prefix
        by_task: Dict[str, List[Tensor]] = {}
        for v in variables:
            by_task.setdefault(sess.device_of(v._node), []).append(v._node)
        with sess.graph.as_default(), name_scope("save"):
            self._shards = [_Shard(d, n, prefix, global_step, max_to_keep) for d, n in sorted(by_task.items())]

    def save(self, sess: Session) -> str:
        """Saves every task's variables; returns the checkpoint's name."""
        names = sess.run([s.save for s in self._shards])[0]
        name = names[0] if isinstance(names, list) and names else names
        return name.decode() if isinstance(name, bytes) else ""

    def common_step(self, sess: Session) -> Optional[int]:
        """The newest checkpoint step every task keeps; ``None`` if none kept any."""
        kept = sess.run([s.steps for s in self._shards])
        if all(not k for k in kept):
            return None
        for step in reversed(kept[0]):
            if all(step in k for k in kept):
                return step
        each = ", ".join(f"{s.device} keeps steps {k}" for s, k in zip(self._shards, kept))
        raise FailedPreconditionError(
            f"no checkpoint step of '{self.prefix}' that every task keeps ({each}): restoring would mix steps of the model"
        )

    def _restore_step(self, sess: Session, step: int, only_if_lost: bool) -> List[int]:
        g = sess.graph
        with g.as_default(), name_scope("save"):
            restores = []
            for s in self._shards:
                with device(s.device):
                    attrs = {"checkpoint": f"{self.prefix}-{step}", "only_if_uninitialized": only_if_lost}
                    restores.append(g.add_op("RestoreV2", s.nodes, attrs).outputs[0])
        return sess.run(restores)

    def restore_lost(self, sess: Session) -> List[Tuple[str, int]]:
        """Restores every task whose variables are all gone; ``(device, step)`` of each restored."""
        step = self.common_step(sess)
        if step is None:
            steps = sess.run([s.restore_if_lost for s in self._shards])
        else:
            steps = self._restore_step(sess, step, True)
        return [(s.device, st) for s, st in zip(self._shards, steps) if st >= 0]


def _unreachable(e: OpError) -> bool:
    return isinstance(e, (UnavailableError, AbortedError))


def _lost_variable(e: OpError) -> bool:
    return isinstance(e, FailedPreconditionError) and "uninitialized" in e.message


class TrainingSession:
    """A session that trains through restarts of the tasks it uses."""

    def __init__(
        self,
        target: str = "",
        is_chief: bool = True,
        checkpoint_prefix: Optional[str] = None,
        save_every_steps: Optional[int] = None,
        save_every_secs: Optional[float] = 600.0,
        global_step: Optional[Variable] = None,
        saved_variables: Optional[Sequence[Variable]] = None,
        local_init: Optional[Operation] = None,
        recovery_timeout: float = 120.0,
    ) -> None:
        self.graph = get_default_graph()
        self.session = Session(target, self.graph)
        self.is_chief = is_chief
        self.save_every_steps = save_every_steps
        self.save_every_secs = save_every_secs
        self.recovery_timeout = recovery_timeout
        self._last_save = time.monotonic()
        self._stop = False
        self.global_step = global_step
        self._steps_since_save = 0
        self._report = report_uninitialized_variables()
        self.saver = None
        if checkpoint_prefix is not None:
            self.saver = Saver(self.session, checkpoint_prefix, saved_variables, global_step)
        init = global_variables_initializer()
        self._start(init, local_init)

    def _start(self, init: Operation, local_init: Optional[Operation]) -> None:
        deadline = time.monotonic() + self.recovery_timeout
        if local_init is not None:
            self._retry(deadline, lambda s: s.run(local_init))
        missing = self._retry(deadline, lambda s: s.run(self._report))
        if self.is_chief:
            if not missing:
                print("TrainingSession: the variables are already initialized; joining")
                return
            restored: List[Tuple[str, int]] = []
            if self.saver is not None:
                try:
                    restored = self._retry(deadline, lambda s: self.saver.restore_lost(s))
                except NotFoundError as e:
                    if "no checkpoint for" not in e.message:
                        raise
            missing = self._retry(deadline, lambda s: s.run(self._report))
            if missing:
                # Only what is still missing: never over what was restored,
                # nor over this worker's own (local_init) variables.
                names = [m.decode() for m in missing]
                try:
                    assigns = [self.graph.get_operation_by_name(f"{n}/Assign") for n in names]
                    with self.graph.as_default():
                        init = ops.group(*assigns)
                except NotFoundError:
                    if restored:
                        raise FailedPreconditionError(
                            f"after restoring, these variables have no initializer to run: {', '.join(names)}"
                        ) from None
                self._retry(deadline, lambda s: s.run(init))
            if restored:
                print(f"TrainingSession: restored the latest checkpoint (global step {max(st for _, st in restored)})")
            else:
                print("TrainingSession: no checkpoint to restore; initialized the variables")
            return
        while missing:
            if time.monotonic() > deadline:
                names = ", ".join(m.decode() for m in missing)
                raise DeadlineExceededError(f"variables still uninitialized after {self.recovery_timeout} s: {names}")
            time.sleep(0.2)
            missing = self._retry(deadline, lambda s: s.run(self._report))

    def _retry(self, deadline: float, f: Callable[[Session], T]) -> T:
        said_waiting = False
        while True:
            try:
                return f(self.session)
            except OpError as e:
                if time.monotonic() >= deadline:
                    raise
                if _unreachable(e):
                    if not said_waiting:
                        print(f"TrainingSession: waiting for a task to come back ({e})")
                        said_waiting = True
                    time.sleep(0.2)
                elif _lost_variable(e) and self.saver is not None:
                    self._recover(e)
                else:
                    raise

    def _recover(self, cause: OpError) -> None:
        try:
            restored = self.saver.restore_lost(self.session)
        except NotFoundError as e:
            raise FailedPreconditionError(f"{cause.message}; and there is no checkpoint to restore it from ({e.message})") from None
        except (UnavailableError, AbortedError):
            time.sleep(0.2)
            return
        for dev, step in restored:
            print(
                f"TrainingSession: {dev} lost its variables; restored them from its latest checkpoint at global step "
                f"{step}: the updates after that step are lost"
            )
        if not restored:
            time.sleep(0.05)

    def run(self, fetches: Any, feed_dict: Optional[Dict[Any, Any]] = None) -> Any:
        """``session.run`` with recovery; the chief then saves if a save is due."""
        out = self._retry(time.monotonic() + self.recovery_timeout, lambda s: s.run(fetches, feed_dict=feed_dict))
        self._steps_since_save += 1
        by_steps = bool(self.save_every_steps) and self._steps_since_save >= (self.save_every_steps or 0)
        by_time = self.save_every_secs is not None and time.monotonic() - self._last_save >= self.save_every_secs
        if self.is_chief and self.saver is not None and (by_steps or by_time):
            try:
                self.save()
            except OpError as e:
                print(f"TrainingSession: saving a checkpoint failed, will try again: {e}")
                self._steps_since_save = 0
                self._last_save = time.monotonic()
        return out

    def request_stop(self) -> None:
        """Makes :meth:`should_stop` true (``MonitoredTrainingSession``'s loop condition)."""
        self._stop = True

    def should_stop(self) -> bool:
        """Whether :meth:`request_stop` was called or the session closed."""
        return self._stop

    def close(self) -> None:
        """Ends the session."""
        self._stop = True
        self.session.close()

    def __enter__(self) -> "TrainingSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def save(self) -> str:
        """Saves a checkpoint now."""
        if self.saver is None:
            raise FailedPreconditionError("no checkpoint_prefix")
        saver = self.saver
        name = self._retry(time.monotonic() + self.recovery_timeout, lambda s: saver.save(s))
        self._steps_since_save = 0
        self._last_save = time.monotonic()
        return name
