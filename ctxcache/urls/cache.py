"""The cache's URL: standalone, unix socket, Cluster or Sentinel, as a :class:`RedisTarget`."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from ctxcache.errors import InvalidUrlError
from ctxcache.urls.parsing import (
    CACHE_SCHEMES,
    CLUSTER_SCHEMES,
    MASTER_NAME,
    REDIS_OPTIONS,
    SENTINEL_OPTIONS,
    SENTINEL_SCHEMES,
    TLS_OPTIONS,
    TLS_SCHEMES,
    UrlParts,
    checked_options,
    cut_text,
    host_and_port,
    node_list,
    parse_database,
    split_credentials,
    split_url,
)

__all__ = ["RedisTarget", "parse_cache_url", "password_source"]


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A checked cache URL: where the server is, which database, with which options.

    For a Cluster ``nodes`` are the seed nodes, for Sentinel the sentinels
    (``master_name`` names the master they watch); ``host`` and ``port`` are
    the first of them.
    """

    scheme: str
    host: str | None  # None for a unix socket
    port: int | None
    socket_path: str | None
    db: int
    username: str | None
    password: str | None = field(repr=False)
    options: tuple[tuple[str, str], ...] = ()
    nodes: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None

    @property
    def password_in_url(self) -> bool:
        """A password in the URL's user part or its ``?password=``: REDIS_PASSWORD is not used."""
        return self.password is not None

    @property
    def topology(self) -> str:
        """``"standalone"``, ``"cluster"`` or ``"sentinel"``."""
        if self.scheme in CLUSTER_SCHEMES:
            return "cluster"
        if self.scheme in SENTINEL_SCHEMES:
            return "sentinel"
        return "standalone"

    @property
    def tls(self) -> bool:
        return self.scheme in TLS_SCHEMES


def _ha_target(
    parts: UrlParts,
    options: tuple[tuple[str, str], ...],
    username: str | None,
    password: str | None,
) -> RedisTarget:
    """A ``redis+cluster://`` or ``redis+sentinel://`` URL's target."""
    query = dict(options)
    if parts.scheme in CLUSTER_SCHEMES:
        nodes = node_list(parts, "redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
        if "db" in query or parts.path.strip("/"):
            raise InvalidUrlError(
                "a Redis Cluster has only database 0: drop the /<db> path and ?db= option"
            )
        return RedisTarget(
            parts.scheme, *nodes[0], None, 0, username, password, options, nodes=nodes
        )
    nodes = node_list(parts, "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster")
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if not segments or len(segments) > 2:
        raise InvalidUrlError(
            "needs the master's name after the sentinels, and optionally a database: "
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0"
        )
    name = unquote(segments[0])
    if not MASTER_NAME.fullmatch(name):
        raise InvalidUrlError(
            f"master name {cut_text(name)} is not letters, digits, '.', '_' or '-'"
        )
    path_db = parse_database("/" + segments[1]) if len(segments) == 2 else None
    query_db = int(query["db"]) if "db" in query else None
    if path_db is not None and query_db is not None and path_db != query_db:
        raise InvalidUrlError(f"two database numbers: /{path_db} and ?db={query_db}")
    db = query_db if query_db is not None else path_db or 0
    return RedisTarget(parts.scheme, *nodes[0], None, db, username, password, options, nodes, name)


def parse_cache_url(url: str) -> RedisTarget:
    """Check a cache URL as redis-py will read it.

    ``redis://``, ``rediss://``, ``unix://``; ``redis+cluster://`` and
    ``redis+sentinel://`` (and their ``rediss+`` forms) for Cluster and Sentinel.
    """
    parts = split_url(url, CACHE_SCHEMES, "redis://127.0.0.1:6379/0")
    accepted = {**REDIS_OPTIONS, **(TLS_OPTIONS if parts.scheme in TLS_SCHEMES else {})}
    if parts.scheme in SENTINEL_SCHEMES:
        accepted.update(SENTINEL_OPTIONS)
    options = checked_options(parts.query, accepted)
    username, password = split_credentials(parts.userinfo)
    query = dict(options)
    password = password if password is not None else query.get("password")
    username = username or query.get("username")
    if parts.scheme in CLUSTER_SCHEMES or parts.scheme in SENTINEL_SCHEMES:
        return _ha_target(parts, options, username, password)
    query_db = int(query["db"]) if "db" in query else None
    if parts.scheme == "unix":
        if parts.hostport or not parts.path.startswith("/") or parts.path == "/":
            raise InvalidUrlError(
                "unix:// needs the socket's absolute path after the slashes, "
                "e.g. unix:///run/redis/redis.sock?db=0"
            )
        return RedisTarget(
            "unix", None, None, unquote(parts.path), query_db or 0, username, password, options
        )
    host, port = host_and_port(parts)
    path_db = parse_database(parts.path)
    if path_db is not None and query_db is not None and path_db != query_db:
        raise InvalidUrlError(f"two database numbers: /{path_db} and ?db={query_db}")
    db = query_db if query_db is not None else path_db or 0
    return RedisTarget(parts.scheme, host, port, None, db, username, password, options)


def password_source(cache: RedisTarget, env_password_set: bool) -> str | None:
    """Where the password sent to Redis comes from: ``"the URL"``, ``"REDIS_PASSWORD"`` or None."""
    if cache.password_in_url:
        return "the URL"
    return "REDIS_PASSWORD" if env_password_set else None
