"""Waiting for replicas: an invalidation counts as done once a replica has it.

Redis replicates asynchronously: a primary that dies right after an
invalidation may take it along, and the replica promoted in its place still
holds the stale context for hours. So an invalidation's round trip ends with
``WAIT <replicas> <timeout>`` on the same connection (in a Cluster, one per
slot it wrote, on that slot's primary), and is reported done only if enough
replicas acknowledged it; otherwise the caller treats it as not applied (the
hook queues it, the task retries).

``CTXCACHE_INVALIDATION_REPLICAS`` says how many: a number, or ``auto``, which
asks for one when the server reported connected replicas (``ROLE``, asked at
most once a minute per process, and again right after a wait fell short) and
for none on a server without replicas.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from ctxcache.core.steps import Command, Flow

if TYPE_CHECKING:
    from ctxcache.core.engine import CacheCore

__all__ = ["ReplicaPolicy", "hash_tag", "wait_commands", "waits_acknowledged"]

ROLE_RECHECK_SECONDS: Final = 60.0


def hash_tag(key: str) -> str:
    """The part of ``key`` that Redis Cluster hashes: the first ``{...}``, else the key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


class ReplicaPolicy:
    """How many replicas an invalidation waits for, with ``auto`` resolved from ``ROLE``."""

    def __init__(self, core: CacheCore) -> None:
        setting = core.settings.invalidation_replicas
        self.fixed: int | None = None if setting == "auto" else int(setting)
        self.timeout_ms = max(1, int(core.settings.invalidation_wait_timeout * 1000))
        self._clock = core.clock
        self._lock = threading.Lock()
        self._replicas: int | None = None  # connected replicas ROLE reported
        self._checked_at = 0.0

    def known(self) -> int | None:
        """Replicas to wait for, or None when ``auto`` must ask ``ROLE`` first."""
        if self.fixed is not None:
            return self.fixed
        with self._lock:
            fresh = self._clock() - self._checked_at < ROLE_RECHECK_SECONDS
            if self._replicas is None or not fresh:
                return None
            return min(1, self._replicas)

    def learn(self, role_reply: Any) -> None:
        """Remember what ``ROLE`` said: ``[b"master", offset, [[ip, port, offset], ...]]``."""
        replicas = 0
        if (
            isinstance(role_reply, list)
            and len(role_reply) >= 3
            and isinstance(role_reply[2], list)
        ):
            replicas = len(role_reply[2])
        with self._lock:
            self._replicas = replicas
            self._checked_at = self._clock()

    def forget(self) -> None:
        """Ask ``ROLE`` again next time (a wait fell short: did the replicas go?)."""
        with self._lock:
            self._replicas = None


def wait_commands(core: CacheCore, commands: Sequence[Command]) -> Flow[list[Command]]:
    """The ``WAIT`` commands that follow ``commands``: one per slot in a Cluster, else one."""
    policy = core.replicas
    required = policy.known()
    routes = [command.keys[0] for command in commands if command.keys]
    if not routes:
        return []
    if required is None:
        role = Command("ROLE", route=routes[0])
        replies = yield from core.redis("ROLE", "replication", [role])
        if isinstance(replies, list):
            policy.learn(replies[0])
        required = policy.known()
        if required is None:  # ROLE failed: wait for one; a shortfall only costs a retry
            required = 1
    if required == 0:
        return []
    if core.cluster:
        tags: dict[str, str] = {}
        for key in routes:
            tags.setdefault(hash_tag(key), key)
        routes = list(tags.values())
    else:
        routes = routes[:1]
    return [Command("WAIT", (required, policy.timeout_ms), route=key) for key in routes]


def waits_acknowledged(core: CacheCore, waits: Sequence[Command], replies: Sequence[Any]) -> bool:
    """Whether every ``WAIT`` reached its count; a shortfall makes ``auto`` ask ``ROLE`` again."""
    ok = all(
        isinstance(reply, int) and reply >= int(wait.args[0])
        for wait, reply in zip(waits, replies, strict=True)
    )
    if not ok:
        core.replicas.forget()
    return ok
