"""Building the Redis client: short timeouts, no hidden retries, credentials and TLS
from the settings.

One URL picks the deployment: a standalone server (``redis://``, ``rediss://``,
``unix://``), a Redis Cluster (``redis+cluster://``, redis-py's
``RedisCluster``: it routes each command by slot and follows MOVED/ASK), or
the master that Sentinel names (``redis+sentinel://``, ``Sentinel.master_for``:
it asks the sentinels again after a failover). ctxcache has no routing of its
own. :func:`primaries` gives one plain client per primary, for the views
that must read them all (stats sizes, doctor, namespaces).

The blocking and the asyncio client get the same options from one place,
:func:`connection_options`; only the classes differ.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import AbstractConnection, parse_url
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from ctxcache.errors import ConfigurationError
from ctxcache.settings import CacheSettings
from ctxcache.urls import RedisTarget, parse_cache_url

__all__ = [
    "LateCluster",
    "cluster_failure",
    "connect",
    "connect_async",
    "connection_options",
    "is_cluster",
    "primaries",
]

_NOT_CLUSTER = "cluster mode is not enabled"

logger = logging.getLogger("ctxcache")


def connection_options(
    settings: CacheSettings, *, asyncio: bool = False
) -> tuple[str, dict[str, Any]]:
    """The URL and the pool options of :attr:`CacheSettings.effective_redis_url`.

    redis-py retries failed commands by default (three times, with backoff);
    that would multiply the socket timeout a caller can wait, so retries are
    off: the circuit breaker decides when to try again. ``asyncio`` picks
    redis-py's asyncio ``Retry`` (its own class, awaited).
    """
    url = settings.effective_redis_url
    retry: Any
    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry  # only asyncio users pay for it

        retry = AsyncRetry(NoBackoff(), 0)
    else:
        retry = Retry(NoBackoff(), 0)
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": retry,
        "client_name": "ctxcache",
    }
    # No CLIENT SETINFO on connect: two fewer round trips before the first
    # command of each new connection. redis-py 8 spells it driver_info=None.
    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters:
        options["driver_info"] = None
    else:
        options.update(lib_name=None, lib_version=None)
    parts = urlsplit(url)
    if settings.redis_password is not None and parts.password is None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_username and not parts.username:
        options["username"] = settings.redis_username  # an ACL user (Redis 6+)
    if parts.scheme.startswith("rediss"):  # rediss://, rediss+cluster://, rediss+sentinel://
        options.update(settings.tls_options())  # options in the URL's query still win
    return url, options


def connect(settings: CacheSettings, **overrides: Any) -> Any:
    """A blocking client for the URL: ``redis.Redis`` (standalone, Sentinel) or ``RedisCluster``.

    A standalone or Sentinel pool connects lazily: no connection is opened
    until the first command, so a client built before a fork is safe as long
    as it is not used before it. A Cluster client reads the slot map at once,
    so a URL naming a server without cluster mode fails here, naming
    ``CTXCACHE_REDIS_URL``.
    """
    url, options = connection_options(settings)
    options.update(overrides)
    target = parse_cache_url(url)
    if target.topology == "cluster":
        return _cluster(target, options)
    if target.topology == "sentinel":
        return _sentinel_master(target, options)
    pool = redis.ConnectionPool.from_url(url, **options)
    return redis.Redis(connection_pool=pool)


def connect_async(settings: CacheSettings, **overrides: Any) -> Any:
    """An asyncio client (``redis.asyncio``) with the same options as :func:`connect`.

    Its connections belong to the event loop that first uses them. Every
    kind connects lazily, a Cluster's slot map included (read at the first
    command).
    """
    from redis import asyncio as aioredis

    url, options = connection_options(settings, asyncio=True)
    options.update(overrides)
    target = parse_cache_url(url)
    if target.topology == "cluster":
        from redis.asyncio.cluster import ClusterNode as AsyncNode
        from redis.asyncio.cluster import RedisCluster as AsyncCluster

        kwargs = _node_options(target, options)
        retry = kwargs.pop("retry")
        nodes = [AsyncNode(host, port) for host, port in target.nodes]
        return AsyncCluster(startup_nodes=nodes, retry=retry, **kwargs)
    if target.topology == "sentinel":
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel

        return _sentinel_master(target, options, AsyncSentinel)
    pool = aioredis.ConnectionPool.from_url(url, **options)
    return aioredis.Redis(connection_pool=pool)


def _node_options(target: RedisTarget, options: dict[str, Any]) -> dict[str, Any]:
    """The URL's credentials and query as connection arguments, read by redis-py's own parser."""
    query = [(k, v) for k, v in target.options if not k.startswith("sentinel_") and k != "db"]
    plain = "rediss" if target.tls else "redis"
    kwargs = parse_url(f"{plain}://h:1/0?{urlencode(query)}" if query else f"{plain}://h:1/0")  # type: ignore[no-untyped-call]
    for name in ("host", "port", "db", "connection_class"):
        kwargs.pop(name, None)
    if target.tls:
        kwargs["ssl"] = True
    if target.username:
        kwargs["username"] = target.username
    if target.password is not None:
        kwargs["password"] = target.password
    return {**options, **kwargs}  # as redis-py's from_url: the URL's own options win


def _cluster(target: RedisTarget, options: dict[str, Any]) -> Any:
    """``RedisCluster`` now, or (nodes unreachable) a :class:`LateCluster` that builds it later."""
    kwargs = _node_options(target, options)
    retry = kwargs.pop("retry")
    nodes = [ClusterNode(host, port) for host, port in target.nodes]  # type: ignore[no-untyped-call]

    def build() -> RedisCluster:
        try:
            return RedisCluster(startup_nodes=nodes, retry=retry, **kwargs)
        except RedisClusterException as exc:
            raise cluster_failure(exc) from exc

    try:
        return build()
    except redis.ConnectionError as exc:
        logger.error("cannot read the cluster's slot map yet (%s): will try again when used", exc)
        return LateCluster(build)


def cluster_failure(exc: RedisClusterException) -> Exception:
    """What a Cluster client's start-up error means: a wrong URL, or nodes not reachable (yet).

    A URL naming a server without cluster mode is a :class:`ConfigurationError`
    naming ``CTXCACHE_REDIS_URL``; anything else (nodes down, slots not all
    served) a ``ConnectionError``, which the cache's calls fail open on.
    """
    if _NOT_CLUSTER in str(exc).lower():
        return ConfigurationError(
            "CTXCACHE_REDIS_URL: redis+cluster:// names a server without cluster mode"
            f" ({exc}); use redis:// for a standalone server, redis+sentinel:// for Sentinel",
            variable="CTXCACHE_REDIS_URL",
        )
    return redis.ConnectionError(
        f"cannot read the cluster's slot map: {exc} (`redis-cli --cluster check <node>`;"
        " unserved slots: `redis-cli --cluster fix <node>`)"
    )


class LateCluster:
    """A ``RedisCluster`` built at its first use: its nodes did not answer at start-up.

    Until they do, each use raises ``ConnectionError`` (the cache fails open
    and its breaker spaces the attempts out).
    """

    connection_pool = None  # as RedisCluster: a pool per node, none of its own

    def __init__(self, build: Callable[[], RedisCluster]) -> None:
        self._build = build
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def _get(self) -> RedisCluster:
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    # Defined here, not only through __getattr__: is_cluster() must not build it.
    def get_primaries(self) -> Any:
        return self._get().get_primaries()  # type: ignore[no-untyped-call]

    def get_redis_connection(self, node: Any) -> Any:
        return self._get().get_redis_connection(node)

    def get_node_from_key(self, key: str) -> Any:
        return self._get().get_node_from_key(key)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


def _sentinel_kwargs(target: RedisTarget, kwargs: dict[str, Any]) -> dict[str, Any]:
    """How to talk to the sentinels: the same timeouts and TLS, their own credentials."""
    query = dict(target.options)
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith(("socket_", "ssl"))}
    sentinel_kwargs["retry"] = kwargs["retry"]
    if "sentinel_username" in query:
        sentinel_kwargs["username"] = query["sentinel_username"]
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query["sentinel_password"]
    return sentinel_kwargs


def _sentinel_master(
    target: RedisTarget, options: dict[str, Any], sentinel_class: Any = Sentinel
) -> Any:
    """The master the sentinels name, from redis-py's ``Sentinel`` (or its asyncio twin)."""
    kwargs = _node_options(target, options)
    sentinel = sentinel_class(list(target.nodes), sentinel_kwargs=_sentinel_kwargs(target, kwargs))
    assert target.master_name is not None  # the URL's parser requires it
    return sentinel.master_for(target.master_name, db=target.db, **kwargs)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is redis-py's ``RedisCluster`` (sync or asyncio), or a LateCluster."""
    return hasattr(type(client), "get_primaries") and hasattr(type(client), "get_node_from_key")


def primaries(client: Any) -> list[redis.Redis]:
    """One plain client per primary: the cluster's primaries, else ``client`` itself.

    For SCAN, INFO and the like, which a Cluster answers per node.
    """
    if not is_cluster(client):
        return [client]
    return [client.get_redis_connection(node) for node in client.get_primaries()]
