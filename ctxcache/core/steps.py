"""What the I/O-free core asks its client to do, and the type of its flows.

Every cache operation is a *flow*: a generator that yields steps and gets
their results back (``flow.send``), or their exceptions (``flow.throw``). The
sync client runs a flow with redis-py's blocking client, the asyncio client
with ``redis.asyncio``; neither holds any cache logic of its own. This is the
sans-I/O split of h11, applied to a cache.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from ctxcache.core.scripts import LuaScript

__all__ = ["Background", "CallLoader", "Command", "Flow", "Pause", "RoundTrip", "Step"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Command:
    """One Redis command (``name`` and ``args``), or one Lua script with its keys and args.

    A script goes by its SHA1 (``EVALSHA``), or with its source (``EVAL``)
    when ``send_source`` is set: the core asks for that after ``NOSCRIPT``.
    ``route`` is for a command without keys that must reach the server of a
    key's slot (``WAIT`` after that slot's writes, ``ROLE``): in a Cluster the
    client sends it to that slot's primary, and answers with an error if the
    slot moved while the trip ran (the wait then says nothing).
    """

    name: str
    args: tuple[Any, ...] = ()
    script: LuaScript | None = None
    keys: tuple[str, ...] = ()
    send_source: bool = False
    route: str | None = None


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """Commands sent together: one pipeline, one round trip on a single server.

    The client answers with their results in order, an exception in place of
    each command that failed; it throws into the flow only what failed the
    whole trip (a connection error, a timeout). ``operation`` and ``target``
    (never a raw phone) are for the logs.
    """

    commands: tuple[Command, ...]
    operation: str
    target: str


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait this long (a client's clock and sleep are its own: tests inject them)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class CallLoader:
    """Call a loader (the database) and answer with what it returned.

    The asyncio client awaits a coroutine function and runs a plain one in a
    thread, so a blocking loader never stalls the event loop.
    """

    function: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Background:
    """Start ``flow`` without waiting for it (an early refresh); answered with ``None``."""

    flow: Generator[Any, Any, Any]


Step = RoundTrip | Pause | CallLoader | Background
Flow = Generator[Step, Any, T]
