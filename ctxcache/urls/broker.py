"""The Celery broker's URL: checked, or derived from the cache's; its TLS options."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlencode

from ctxcache.errors import InvalidUrlError
from ctxcache.urls.cache import RedisTarget
from ctxcache.urls.parsing import (
    BROKER_OPTIONS,
    BROKER_SCHEMES,
    BROKER_TLS_OPTIONS,
    CLUSTER_SCHEMES,
    cert_reqs,
    checked_options,
    count_option,
    host_and_port,
    parse_database,
    split_url,
)

__all__ = ["broker_tls", "check_broker_url", "default_broker_url", "redis_url_of_broker"]


def check_broker_url(url: str) -> None:
    """Check a Celery broker URL as kombu will read it; ``;`` separates failover URLs."""
    for one in url.split(";"):
        _check_one_broker(one.strip())


def _check_one_broker(url: str) -> None:
    scheme = url.strip().partition("://")[0].lower()
    if scheme in CLUSTER_SCHEMES:
        raise InvalidUrlError(
            "Celery cannot use a Redis Cluster as its broker (kombu has no Cluster transport): "
            "use a Sentinel-managed Redis (sentinel://host:26379/0 with "
            "CTXCACHE_BROKER_MASTER_NAME) or RabbitMQ (amqp://)"
        )
    parts = split_url(url, BROKER_SCHEMES, "amqp://guest:guest@127.0.0.1:5672// or redis://...")
    if parts.scheme == "redis+socket":
        if parts.hostport or not parts.path.startswith("/") or parts.path == "/":
            raise InvalidUrlError(
                "redis+socket:// needs the socket's absolute path, "
                "e.g. redis+socket:///run/redis/redis.sock?virtual_host=1"
            )
        options = dict(checked_options(parts.query, {"virtual_host": count_option}))
        parse_database(options.get("virtual_host", ""), "virtual_host")
        return
    tls = parts.scheme in ("rediss", "amqps")
    checked_options(parts.query, {**BROKER_OPTIONS, **(BROKER_TLS_OPTIONS if tls else {})})
    host_and_port(parts)
    if parts.scheme in ("redis", "rediss", "sentinel"):
        parse_database(parts.path)  # kombu reads the path as the database number


def default_broker_url(
    cache: RedisTarget,
    fallback_password: str | None,
    *,
    fallback_username: str | None = None,
    tls: Mapping[str, str] | None = None,
) -> str:
    """The cache's server, next database number (the one below for db 15: never a wrap to 0).

    Fine for development; in production the broker belongs on its own server.
    ``fallback_password`` (REDIS_PASSWORD) is written into the URL when the
    cache URL has none, since a broker only has its URL. TLS options carry
    over, and ``rediss://`` keeps redis-py's default of verifying the
    certificate (kombu's would be not to); ``tls`` (``CTXCACHE_TLS_*``) fills
    in what the URL does not say. ``fallback_username`` is the ACL user.

    A Sentinel cache gets a ``sentinel://`` broker on the same sentinels (the
    master name goes to Celery as a transport option, see
    ``CacheSettings.broker_master_name``). A Cluster cache has no default:
    Celery cannot use a Cluster, so this raises :class:`InvalidUrlError`.
    """
    if cache.topology == "cluster":
        raise InvalidUrlError(
            "must be set when CTXCACHE_REDIS_URL is a Redis Cluster: Celery cannot use a "
            "Cluster as its broker; use a Sentinel-managed Redis (sentinel://host:26379/0 "
            "with CTXCACHE_BROKER_MASTER_NAME) or RabbitMQ (amqp://)"
        )
    neighbour = cache.db + 1 if cache.db < 15 else cache.db - 1  # 16 databases by default
    password = cache.password if cache.password is not None else fallback_password
    username = cache.username or fallback_username
    userinfo = ""
    if username or password is not None:
        userinfo = quote(username or "", safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    if cache.socket_path is not None:
        path = quote(cache.socket_path)
        return f"redis+socket://{userinfo}{path}?virtual_host={neighbour}"
    if cache.topology == "sentinel":
        # kombu reads the password of the first URL for the master (and each URL's host).
        return ";".join(
            f"sentinel://{userinfo if i == 0 else ''}{_bracketed(host)}:{port}/{neighbour}"
            for i, (host, port) in enumerate(cache.nodes)
        )
    url = f"{cache.scheme}://{userinfo}{_bracketed(cache.host or '')}:{cache.port}/{neighbour}"
    if cache.scheme == "rediss":
        chosen = {k: v for k, v in cache.options if k in BROKER_TLS_OPTIONS}
        for name, value in (tls or {}).items():
            chosen.setdefault(name, value)
        chosen.setdefault("ssl_cert_reqs", "required")
        url += "?" + urlencode(chosen)
    return url


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def broker_tls(options: Mapping[str, str]) -> dict[str, object]:
    """Celery's ``broker_use_ssl`` for a Redis broker from redis-py style TLS options."""
    chosen: dict[str, object] = dict(options)
    wanted = cert_reqs(options.get("ssl_cert_reqs", "required"))
    chosen["ssl_cert_reqs"] = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[wanted]
    return chosen


def redis_url_of_broker(url: str) -> str | None:
    """The first broker URL as a redis-py URL, to look at its server; None if not Redis."""
    first = url.split(";")[0].strip()
    scheme = first.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        return first.partition("?")[0]
    if scheme == "redis+socket":
        parts = split_url(first, BROKER_SCHEMES, "redis+socket:///path")
        db = dict(parse_qsl(parts.query)).get("virtual_host", "0")
        userinfo = f"{parts.userinfo}@" if parts.userinfo is not None else ""
        return f"unix://{userinfo}{parts.path}?db={db}"
    return None
