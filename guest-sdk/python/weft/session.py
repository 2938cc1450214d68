"""``tf.Session``: ``run(fetches, feed_dict)`` on a private engine
(``weft.Session()``, TensorFlow's in-process session), on this program's
own task (``Session(server.target)``), on any task (``"/job:ps/task:0"``)
or address (``"grpc://host:port"``). Fetches may be tensors, variables,
operations (run, fetched as ``None``) or lists, tuples and dicts of them;
values come back as Python scalars and nested lists."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from . import dtypes
from ._host import call, wit_session
from .framework import Graph, Operation, Tensor, get_default_graph
from .variables import Variable


class RunOptions:
    """Options for one run (``tf.RunOptions``): ``trace_level`` and ``timeout_in_ms``."""

    NO_TRACE = 0
    FULL_TRACE = 3

    def __init__(self, trace_level: int = NO_TRACE, timeout_in_ms: Optional[int] = None) -> None:
        self.trace_level = trace_level
        self.timeout_in_ms = timeout_in_ms


class NodeExecStats:
    """One node's execution in a traced run."""

    def __init__(self, node_name: str, all_start_micros: int, all_end_rel_micros: int) -> None:
        self.node_name = node_name
        self.all_start_micros = all_start_micros
        self.all_end_rel_micros = all_end_rel_micros


class DeviceStepStats:
    """The nodes one device ran, in order."""

    def __init__(self, device: str, node_stats: List[NodeExecStats]) -> None:
        self.device = device
        self.node_stats = node_stats


class StepStats:
    """Per-device stats of a traced run."""

    def __init__(self) -> None:
        self.dev_stats: List[DeviceStepStats] = []


class RunMetadata:
    """What a traced run fills in (``tf.RunMetadata``): ``step_stats.dev_stats``."""

    def __init__(self) -> None:
        self.step_stats = StepStats()


class Session:
    """A connection to an execution engine, for one graph."""

    def __init__(self, target: str = "local", graph: Optional[Graph] = None, timeout_ms: Optional[int] = None) -> None:
        self.graph = graph or get_default_graph()
        options = wit_session.SessionOptions(timeout_ms=timeout_ms, place_on_own_task=False)
        self._wit = call(wit_session.Session.open, target, self.graph._wit, options)
        self._closed = False

    @property
    def target(self) -> str:
        """The resolved target (``local``, ``/job:local/replica:0/task:0``)."""
        return self._wit.target()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Releases the session (its engine, for a local one); again, nothing."""
        if not self._closed:
            self._closed = True
            self._wit.__exit__(None, None, None)

    def _resolve(self, fetch: Any) -> Any:
        if isinstance(fetch, str):
            if ":" in fetch:
                return self.graph.get_tensor_by_name(fetch)
            return self.graph.get_operation_by_name(fetch)
        if isinstance(fetch, Variable):  # fetching a variable reads it
            fetch = fetch._node
        if isinstance(fetch, (Tensor, Operation)):
            if fetch.graph is not self.graph:
                from .errors import InvalidArgumentError

                raise InvalidArgumentError(f"{fetch!r} is not of this session's graph")
            return fetch
        raise TypeError(f"cannot fetch {type(fetch).__name__}: give tensors, variables, operations or names")

    def run(
        self,
        fetches: Any,
        feed_dict: Optional[Dict[Any, Any]] = None,
        options: Optional[RunOptions] = None,
        run_metadata: Optional[RunMetadata] = None,
        timeout_ms: Optional[int] = None,
    ) -> Any:
        """Runs what ``fetches`` need, with ``feed_dict`` values replacing
        outputs (placeholders), and returns the fetched values in the shape
        of ``fetches``. With ``options.trace_level`` ``FULL_TRACE``,
        ``run_metadata.step_stats`` says which device ran which node."""
        if self._closed:
            from .errors import FailedPreconditionError

            raise FailedPreconditionError("this session was closed")
        outputs: List[Tensor] = []
        targets: List[int] = []

        def collect(f: Any) -> Any:
            if isinstance(f, (list, tuple)):
                return type(f)(collect(x) for x in f)
            if isinstance(f, dict):
                return {k: collect(v) for k, v in f.items()}
            r = self._resolve(f)
            if isinstance(r, Operation):
                targets.append(r.id)
                return None
            outputs.append(r)
            return len(outputs) - 1

        plan = collect(fetches)
        feeds = []
        for key, value in (feed_dict or {}).items():
            t = self._resolve(key)
            if isinstance(t, Operation):
                t = t.outputs[0]
            feeds.append(wit_session.Feed(target=t._wit, value=dtypes.to_tensor(value, t.dtype, cast=True)))
        trace = options is not None and options.trace_level >= RunOptions.FULL_TRACE
        if options is not None and options.timeout_in_ms:  # 0: no limit, as in TensorFlow
            timeout_ms = options.timeout_in_ms
        level = wit_session.TraceLevel.FULL if trace else wit_session.TraceLevel.NONE
        wit_options = wit_session.RunOptions(trace_level=level, timeout_ms=timeout_ms)
        out = call(self._wit.run, [o._wit for o in outputs], feeds, targets, wit_options)
        if run_metadata is not None:
            run_metadata.step_stats.dev_stats = [
                DeviceStepStats(
                    d.device,
                    [NodeExecStats(n.node_name, n.start_micros, n.duration_micros) for n in d.nodes],
                )
                for d in out.step_stats
            ]
        values = [dtypes.from_tensor(v) for v in out.values]

        def build(p: Any) -> Any:
            if isinstance(p, (list, tuple)):
                return type(p)(build(x) for x in p)
            if isinstance(p, dict):
                return {k: build(v) for k, v in p.items()}
            return None if p is None else values[p]

        return build(plan)

    def device_of(self, op: Any) -> str:
        """The device ``op`` runs on under this session's placement."""
        r = self._resolve(op)
        node = r.id if isinstance(r, Operation) else r.op.id
        return call(self._wit.device_of, node)
