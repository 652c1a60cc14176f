"""What the sync and the asyncio client share to run the core's flows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from redis.exceptions import ClusterError

from ctxcache.core.steps import Command, Flow, Step

__all__ = ["FlowRunner", "RouteCheck", "check_routes", "queue_commands"]

# (position in the trip, the key it followed, the node it went to)
RouteCheck = tuple[int, str, str]

T = TypeVar("T")


class FlowRunner(Generic[T]):
    """Advances a flow: hands it the answer (or error) of its last step, returns the next.

    :attr:`result` holds the flow's return value once :meth:`advance`
    returned ``None``.
    """

    def __init__(self, flow: Flow[T]) -> None:
        self._flow = flow
        self._result: Any = None

    def advance(self, answer: Any, error: BaseException | None) -> Step | None:
        try:
            if error is not None:
                return self._flow.throw(error)
            return self._flow.send(answer)
        except StopIteration as stop:
            self._result = stop.value
            return None

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
    cluster = hasattr(pipe, "get_node_from_key")
    for position, command in enumerate(commands):
        script = command.script
        if command.route is not None and cluster:
            node = pipe.get_node_from_key(command.route)
            checks.append((position, command.route, node.name))
            pipe.execute_command(command.name, *command.args, target_nodes=node)
        elif script is None:
            pipe.execute_command(command.name, *command.args)
        elif command.send_source:
            pipe.execute_command(
                "EVAL", script.source, len(command.keys), *command.keys, *command.args
            )
        else:
            pipe.execute_command(
                "EVALSHA", script.sha, len(command.keys), *command.keys, *command.args
            )
    return checks


def check_routes(pipe: Any, checks: list[RouteCheck], results: list[Any]) -> list[Any]:
    """Replace the answer of a routed command whose slot moved meanwhile with an error.

    A ``WAIT`` on the old primary of a slot that failed over or was resharded
    counted replicas of writes that went elsewhere: it proves nothing.
    """
    for position, key, name in checks:
        if pipe.get_node_from_key(key).name != name:
            results[position] = ClusterError(f"the slot of {key!r} moved during the trip")
    return results
