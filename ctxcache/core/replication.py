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

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from redis import exceptions as redis_errors

from ctxcache.core.breaker import BreakerState
from ctxcache.core.steps import Command, Flow, RoundTrip

if TYPE_CHECKING:
    from ctxcache.core.engine import CacheCore

__all__ = ["ReplicaPolicy", "hash_tag", "wait_commands", "waits_acknowledged"]

ROLE_RECHECK_SECONDS: Final = 60.0
DEFAULT_WAIT_SHARE: Final = 0.5  # of the socket timeout, when no wait timeout is set

logger = logging.getLogger("ctxcache")


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
        settings = core.settings
        timeout = settings.invalidation_wait_timeout
        if "invalidation_wait_timeout" not in settings.model_fields_set:
            timeout = min(timeout, settings.socket_timeout * DEFAULT_WAIT_SHARE)
        self.timeout_ms = max(1, int(timeout * 1000))
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


def wait_commands(core: CacheCore, commands: Sequence[Command]) -> Flow[list[Command] | None]:
    """The ``WAIT`` commands that follow ``commands``: one per slot in a Cluster, else one.

    ``None`` when Redis did not answer the ``ROLE`` that ``auto`` needed (counted
    like any failed call): the invalidation is then not tried.
    """
    policy = core.replicas
    required = policy.known()
    routes = [command.keys[0] for command in commands if command.keys]
    if not routes:
        return []
    if required is None:
        if core.breaker.state is BreakerState.CLOSED:  # else the invalidation is skipped anyway
            reached = yield from _probe(core, routes[0])
            if not reached:
                return None
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


def _probe(core: CacheCore, route: str) -> Flow[bool]:
    """Ask ``ROLE`` how many replicas the server has; a server that refuses it has none known.

    ``False`` when Redis could not be reached (a failure for the breaker).
    """
    policy = core.replicas
    try:
        replies = yield RoundTrip((Command("ROLE", route=route),), "ROLE", "replication")
    except redis_errors.RedisError as exc:
        core.stats.add("errors")
        core.breaker.record_failure()
        logger.error("redis ROLE failed: %s", exc)
        return False
    reply = replies[0]
    if isinstance(reply, redis_errors.ResponseError):
        # ROLE disabled (a managed server's ACL, fakeredis): nothing to wait for that we know of.
        logger.warning(
            "ROLE refused (%s): invalidations do not wait for replicas; set"
            " CTXCACHE_INVALIDATION_REPLICAS=1 to wait for one anyway",
            reply,
        )
        policy.learn(None)
    elif not isinstance(reply, Exception):
        policy.learn(reply)
    return True


def waits_acknowledged(core: CacheCore, waits: Sequence[Command], replies: Sequence[Any]) -> bool:
    """Whether every ``WAIT`` reached its count; a shortfall makes ``auto`` ask ``ROLE`` again."""
    ok = all(
        isinstance(reply, int) and reply >= int(wait.args[0])
        for wait, reply in zip(waits, replies, strict=True)
    )
    if not ok:
        core.replicas.forget()
    return ok
