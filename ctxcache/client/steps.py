"""What the sync and the asyncio client share to run the core's flows.

A shell's whole loop is::

    runner = FlowRunner(flow)
    while (step := runner.next()) is not None:
        with runner:  # an exception becomes the step's answer: the flow decides
            runner.answer = <do step>          # (awaited in the asyncio client)
    return runner.result
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, Generic, TypeVar

from redis.exceptions import ClusterError, RedisClusterException

from ctxcache.core.steps import Command, Flow, Step

__all__ = ["FlowRunner", "RouteCheck", "check_routes", "command_args", "queue_commands"]

# (position in the trip, the key it followed, the node it went to)
RouteCheck = tuple[int, str, str]

T = TypeVar("T")


class FlowRunner(Generic[T]):
    """Advances a flow: hands it the answer (or error) of its last step, returns the next.

    Used as a context manager around doing a step, it catches whatever the
    step raised (``BaseException`` too: an interrupt or a cancellation must
    still let the flow release its locks) and throws it into the flow on the
    next :meth:`next`. :attr:`result` holds the flow's return value once
    :meth:`next` returned ``None``.
    """

    __slots__ = ("_flow", "_result", "answer", "error")

    def __init__(self, flow: Flow[T]) -> None:
        self._flow = flow
        self._result: Any = None
        self.answer: Any = None
        self.error: BaseException | None = None

    def next(self) -> Step | None:
        """The flow's next step, given the last one's outcome; ``None`` once it returned."""
        answer, error = self.answer, self.error
        self.answer = self.error = None
        try:
            if error is not None:
                return self._flow.throw(error)
            return self._flow.send(answer)
        except StopIteration as stop:
            self._result = stop.value
            return None

    def __enter__(self) -> FlowRunner[T]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        self.error = error
        return error is not None

    @property
    def result(self) -> T:
        result: T = self._result
        return result


def queue_commands(pipe: Any, commands: Iterable[Command]) -> list[RouteCheck]:
    """Buffer ``commands`` on a redis-py pipeline (sync, asyncio or Cluster alike).

    Returns what :func:`check_routes` needs to tell whether a routed command
    (``Command.route``) reached the primary its key's slot still has.
    """
    checks: list[RouteCheck] = []
    cluster = _cluster_of(pipe)
    for position, command in enumerate(commands):
        if command.route is not None and cluster is not None:
            node = cluster.get_node_from_key(command.route)
            checks.append((position, command.route, node.name))
            pipe.execute_command(command.name, *command.args, target_nodes=node)
        else:
            pipe.execute_command(*command_args(command))
    return checks


def command_args(command: Command) -> tuple[Any, ...]:
    """What goes on the wire for ``command``: a script by SHA1, or with its source."""
    script = command.script
    if script is None:
        return (command.name, *command.args)
    if command.send_source:
        return ("EVAL", script.source, len(command.keys), *command.keys, *command.args)
    return ("EVALSHA", script.sha, len(command.keys), *command.keys, *command.args)


def check_routes(pipe: Any, checks: list[RouteCheck], results: list[Any]) -> list[Any]:
    """Replace the answer of a routed command whose slot moved meanwhile with an error.

    A ``WAIT`` on the old primary of a slot that failed over or was resharded
    counted replicas of writes that went elsewhere: it proves nothing.
    """
    cluster = _cluster_of(pipe)
    for position, key, name in checks:
        try:
            now = cluster.get_node_from_key(key).name if cluster is not None else name
        except RedisClusterException:  # the slot has no primary right now (a failover)
            now = None
        if now != name:
            results[position] = ClusterError(f"the slot of {key!r} moved during the trip")
    return results


def _cluster_of(pipe: Any) -> Any:
    """The ``RedisCluster`` behind a Cluster pipeline (sync or asyncio), else None."""
    client = getattr(pipe, "cluster_client", pipe)  # the asyncio pipeline keeps its client
    return client if hasattr(client, "get_node_from_key") else None
