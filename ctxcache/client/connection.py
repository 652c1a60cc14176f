"""Building the Redis client: short timeouts, no hidden retries, credentials and TLS
from the settings.

The blocking and the asyncio client get the same options from one place,
:func:`connection_options`; only the classes differ.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from ctxcache.settings import CacheSettings

if TYPE_CHECKING:
    from redis import asyncio as aioredis

__all__ = ["connect", "connect_async", "connection_options"]


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
    if parts.scheme == "rediss":
        options.update(settings.tls_options())  # options in the URL's query still win
    return url, options


def connect(settings: CacheSettings, **overrides: Any) -> redis.Redis:
    """A blocking client for :attr:`CacheSettings.effective_redis_url`.

    The pool is created lazily by redis-py: no connection is opened until
    the first command, so a client built before a fork is safe as long as it
    is not used before it.
    """
    url, options = connection_options(settings)
    pool = redis.ConnectionPool.from_url(url, **{**options, **overrides})
    return redis.Redis(connection_pool=pool)


def connect_async(settings: CacheSettings, **overrides: Any) -> aioredis.Redis:
    """An asyncio client (``redis.asyncio``) with the same options as :func:`connect`.

    Its connections belong to the event loop that first uses them.
    """
    from redis import asyncio as aioredis

    url, options = connection_options(settings, asyncio=True)
    pool = aioredis.ConnectionPool.from_url(url, **{**options, **overrides})
    return aioredis.Redis(connection_pool=pool)
