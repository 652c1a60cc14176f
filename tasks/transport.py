"""A worker's broker transport options follow the queues it consumes.

On a Redis broker the visibility timeout is per connection, and a worker has
one. A worker that consumes ``ctxcache.invalidate`` alone lays
``celeryconfig.INVALIDATE_TRANSPORT_OPTIONS`` over its options as it starts
(``celeryd_init``): a short timeout and unacked keys of its own, so that a killed worker's
invalidations come back in seconds. A worker that also consumes warm-ups keeps
the long timeout the warm-ups need, and says so in its log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from celery.signals import celeryd_init

__all__ = ["consumed_queues", "is_redis_url", "transport_options_for"]

logger = logging.getLogger("ctxcache.tasks")

_REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+socket", "sentinel"})


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names a Redis broker (kombu's ack emulation, visibility timeout)."""
    return urlsplit(url).scheme in _REDIS_SCHEMES


def consumed_queues(
    declared: Iterable[str], include: Iterable[str] | None, exclude: Iterable[str] | None
) -> frozenset[str]:
    """The queues a worker consumes: ``-Q`` (every declared queue without it) minus ``-X``."""
    chosen = set(include) if include else set(declared)
    return frozenset(chosen - set(exclude or ()))


def transport_options_for(queues: frozenset[str], default: dict[str, Any]) -> dict[str, Any]:
    """``default`` with the invalidation options laid over it for a worker of
    ``ctxcache.invalidate`` alone; ``default`` itself for any other worker."""
    # Imported here: celeryconfig reads the settings, and a bad one must reach
    # tasks.app's one-line refusal, not fail this module's import.
    from celeryconfig import INVALIDATE_QUEUE, INVALIDATE_TRANSPORT_OPTIONS

    if queues == {INVALIDATE_QUEUE}:
        return {**default, **INVALIDATE_TRANSPORT_OPTIONS}
    return default


def _names(value: Any) -> list[str] | None:
    if not value:
        return None
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return [str(name) for name in value]


@celeryd_init.connect
def _choose_transport_options(conf: Any = None, options: Any = None, **_: Any) -> None:
    """Before the worker connects: pick the transport options for the queues it consumes."""
    from celeryconfig import INVALIDATE_QUEUE

    if conf is None or not is_redis_url(str(conf.broker_url or "")):
        return
    options = options or {}
    queues = consumed_queues(
        (queue.name for queue in conf.task_queues or ()),
        _names(options.get("queues")),
        _names(options.get("exclude_queues")),
    )
    chosen = transport_options_for(queues, conf.broker_transport_options)
    conf.broker_transport_options = chosen
    timeout = chosen.get("visibility_timeout", 3600)
    if queues == {INVALIDATE_QUEUE}:
        logger.info(
            "invalidation worker: a killed worker's invalidations come back after %g s"
            " (visibility timeout, unacked keys %s)",
            timeout,
            chosen["unacked_index_key"],
        )
    elif INVALIDATE_QUEUE in queues:
        logger.warning(
            "this worker consumes %s with the other queues' %g s visibility timeout: if it is"
            " killed, the invalidations it holds come back that late. Run a worker for"
            " `-Q %s` alone (see README)",
            INVALIDATE_QUEUE,
            timeout,
            INVALIDATE_QUEUE,
        )
