"""``ctxcache doctor``'s broker checks: is a queued invalidation safe, and how soon is it back.

:func:`broker_checks` returns three :class:`~ctxcache.ops.doctor.report.Check` lines:
whether the broker keeps messages across a restart, whether it shares the
cache's server (one outage then takes out an invalidation and its fallback),
and how long a killed worker's invalidations take to come back. Every Redis
call has a short timeout; passwords never appear in a detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import redis
from redis import exceptions as redis_errors

from ctxcache.settings import CacheSettings
from ctxcache.urls import redis_url_of_broker

from .report import Check

__all__ = [
    "BROKER_CHECK_NAMES",
    "SLOW_RECOVERY_SECONDS",
    "broker_checks",
    "broker_client",
    "persistence_check",
    "recovery_check",
    "shared_server_check",
]

BROKER_CHECK_NAMES: Final = ("broker persistence", "broker server", "invalidation recovery")
# A killed worker's invalidations coming back later than this is "slow".
SLOW_RECOVERY_SECONDS: Final = 60.0
_OWN_SERVER_FIX: Final = (
    "give the broker a Redis server of its own (appendonly yes, appendfsync always, "
    "maxmemory-policy noeviction) or use RabbitMQ: set CTXCACHE_BROKER_URL"
)

# Marks an INFO dict whose CONFIG GET values were refused (ACL users, managed servers).
CONFIG_REFUSED = "ctxcache:config-refused"


def broker_checks(
    settings: CacheSettings, url: str, cache_run_id: str | None, timeout: float
) -> list[Check]:
    """The three broker checks for the broker at ``url`` (reachable: checked before)."""
    server = redis_url_of_broker(url)
    if server is None:
        return [
            Check(
                BROKER_CHECK_NAMES[0],
                True,
                "RabbitMQ: durable queues, persistent messages and publisher confirms keep a"
                " queued invalidation across a broker restart (a quorum queue across a node loss)",
            ),
            Check(BROKER_CHECK_NAMES[1], True, "RabbitMQ: not the cache's server"),
            recovery_check(settings, redis_broker=False),
        ]
    client = broker_client(settings, server, timeout)
    try:
        info: dict[str, Any] = {**client.info("server"), **client.info("persistence")}
        info.update(_config(client, "appendfsync", "save"))
    except redis_errors.RedisError as exc:
        unknown = Check(BROKER_CHECK_NAMES[0], True, f"INFO refused: {exc}", "allow INFO")
        return [unknown, shared_server_check(url, settings, None, cache_run_id)]
    finally:
        client.close()
    return [
        persistence_check(info),
        shared_server_check(url, settings, str(info.get("run_id") or "") or None, cache_run_id),
        recovery_check(settings, redis_broker=True),
    ]


def broker_client(settings: CacheSettings, server: str, timeout: float) -> redis.Redis:
    """A client of the broker's Redis server, with CTXCACHE_TLS_* when it is ``rediss://``."""
    tls = settings.tls_options() if server.startswith("rediss://") else {}
    return redis.Redis.from_url(
        server, socket_timeout=timeout, socket_connect_timeout=timeout, **tls
    )


def _config(client: redis.Redis, *names: str) -> dict[str, str]:
    """CONFIG GET of ``names``; empty where the server refuses CONFIG (managed servers)."""
    found: dict[str, str] = {}
    for name in names:
        try:
            reply = client.config_get(name)
        except redis_errors.ResponseError:
            found[CONFIG_REFUSED] = "CONFIG GET"  # an ACL user without it: say so, not guess
            continue
        for key, value in reply.items():
            found[key.decode() if isinstance(key, bytes) else str(key)] = (
                value.decode() if isinstance(value, bytes) else str(value)
            )
    return found


def persistence_check(info: Mapping[str, Any]) -> Check:
    """From the broker's INFO persistence (and CONFIG appendfsync / save when allowed)."""
    name = BROKER_CHECK_NAMES[0]
    if CONFIG_REFUSED in info:
        aof = "append-only file on" if int(info.get("aof_enabled", 0)) else "no append-only file"
        return Check(
            name,
            True,
            f"{aof}; appendfsync and RDB snapshots not checked: CONFIG GET refused for this user",
            "check appendfsync by hand, or allow +config|get for the user doctor runs as",
        )
    if int(info.get("aof_enabled", 0)):
        fsync = str(info.get("appendfsync", "?"))
        detail = f"append-only file, appendfsync {fsync}"
        if fsync == "always":
            return Check(name, True, detail + ": every queued invalidation is on disk")
        loss = "the last second of" if fsync == "everysec" else "whatever the OS had not written of"
        return Check(
            name,
            True,
            f"{detail}: a crash of the broker loses {loss} the queued invalidations",
            "CONFIG SET appendfsync always on the broker's server (or use RabbitMQ)",
        )
    save = str(info.get("save", "")).strip()
    if save:
        detail = f"RDB snapshots only (save {save}): a restart loses what was queued since the last"
        fix = "CONFIG SET appendonly yes and appendfsync always on the broker's server"
        return Check(name, True, detail, fix)
    return Check(
        name,
        True,
        "no persistence: queued invalidations (and retries waiting for Redis) vanish when the"
        " broker restarts",
        "CONFIG SET appendonly yes and appendfsync always on the broker's server, or RabbitMQ",
    )


def shared_server_check(
    url: str, settings: CacheSettings, broker_run_id: str | None, cache_run_id: str | None
) -> Check:
    """Whether the Redis broker is the cache's own server (the default layout)."""
    name = BROKER_CHECK_NAMES[1]
    if broker_run_id and cache_run_id:
        shared = broker_run_id == cache_run_id
    else:  # INFO refused on one side: compare where they are
        broker, cache = urlsplit(url), urlsplit(settings.effective_redis_url)
        shared = (broker.hostname, broker.port) == (cache.hostname, cache.port)
    if not shared:
        return Check(name, True, "a Redis server of its own, not the cache's")
    detail = (
        "the cache's own server: one outage takes out the inline invalidation and its queued"
        " fallback together, and the booking hooks raise InvalidationFailedError"
    )
    return Check(name, True, detail, _OWN_SERVER_FIX)


def recovery_check(settings: CacheSettings, *, redis_broker: bool) -> Check:
    """How soon a killed worker's invalidations come back (Redis: visibility timeout + sweep)."""
    from celeryconfig import INVALIDATE_QUEUE, restore_cadence

    name = BROKER_CHECK_NAMES[2]
    if not redis_broker:
        return Check(name, True, "redelivered as soon as RabbitMQ sees the worker's connection go")
    alone = settings.invalidate_visibility_timeout
    alone += restore_cadence(alone)["unacked_restore_interval"]
    shared = settings.visibility_timeout
    shared += restore_cadence(shared)["unacked_restore_interval"]
    detail = (
        f"after ~{alone:.0f} s from workers of `-Q {INVALIDATE_QUEUE}` alone,"
        f" ~{shared:.0f} s from workers that also consume warm-ups"
    )
    if alone > SLOW_RECOVERY_SECONDS:
        now = settings.invalidate_visibility_timeout
        fix = f"lower CTXCACHE_INVALIDATE_VISIBILITY_TIMEOUT (now {now:g} s; the default is 30)"
        return Check(name, True, detail, fix)
    return Check(name, True, detail)
