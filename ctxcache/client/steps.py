"""What the sync and the asyncio client share to run the core's flows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from ctxcache.core.steps import Command, Flow, Step

__all__ = ["FlowRunner", "queue_commands"]

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


def queue_commands(pipe: Any, commands: Iterable[Command]) -> None:
    """Buffer ``commands`` on a redis-py pipeline (sync, asyncio or Cluster alike)."""
    for command in commands:
        script = command.script
        if script is None:
            pipe.execute_command(command.name, *command.args)
        elif command.send_source:
            pipe.execute_command(
                "EVAL", script.source, len(command.keys), *command.keys, *command.args
            )
        else:
            pipe.execute_command(
                "EVALSHA", script.sha, len(command.keys), *command.keys, *command.args
            )
