"""The Redis and broker URLs: parsed and checked once, when the settings load, with no I/O.

redis-py and kombu are lenient in ways that hurt: ``redis://host/abc`` reads
database 0, an unknown ``?option=`` reaches the connection class and fails on
the first command, a port of 99999 fails deep inside a worker's start-up. Here
every URL is split by hand (so a malformed one gets a sentence, not a
``ValueError`` from :mod:`urllib`) and each part is checked against what the
client library will accept. Messages never repeat a password and cut long
inputs; the settings prefix them with the variable's name.

The default broker is derived here too: the cache's server, next database
(``redis+socket://`` when the cache is on a unix socket).

Highly available deployments have schemes of their own:
``redis+cluster://h1:7000,h2:7001`` (a Redis Cluster, seed nodes) and
``redis+sentinel://s1:26379,s2:26379/<master-name>/<db>`` (the master that
Sentinel names), each with a ``rediss+`` form for TLS.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, quote, unquote, urlencode

from ctxcache.errors import InvalidUrlError

__all__ = [
    "BROKER_SCHEMES",
    "CACHE_SCHEMES",
    "CLUSTER_SCHEMES",
    "SENTINEL_SCHEMES",
    "RedisTarget",
    "broker_tls",
    "check_broker_url",
    "default_broker_url",
    "parse_cache_url",
    "password_source",
    "redis_url_of_broker",
]

CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
CACHE_SCHEMES: Final = ("redis", "rediss", "unix", *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)
BROKER_SCHEMES: Final = (
    "redis",
    "rediss",
    "redis+socket",
    "sentinel",
    "amqp",
    "amqps",
    "pyamqp",
)
_TLS_SCHEMES: Final = frozenset({"rediss", "rediss+cluster", "rediss+sentinel", "amqps"})
_DEFAULT_PORTS: Final = {
    "redis": 6379,
    "rediss": 6379,
    "redis+cluster": 6379,
    "rediss+cluster": 6379,
    "redis+sentinel": 26379,
    "rediss+sentinel": 26379,
    "sentinel": 26379,
    "amqp": 5672,
    "pyamqp": 5672,
    "amqps": 5671,
}
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_SHOWN_CHARS: Final = 40
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _cut(text: str) -> str:
    """``text`` for an error message: at most 40 characters, and how long it really was."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text):,} characters)"


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("is not a number") from None
    if not 0 < number < float("inf"):
        raise ValueError("must be a positive number of seconds")
    return number


def _whole(value: str, least: int) -> int:
    if not value.isdigit() or int(value) < least:
        raise ValueError(f"must be a whole number, {least} or more")
    return int(value)


def _count(value: str) -> int:
    return _whole(value, 0)


def _positive(value: str) -> int:
    return _whole(value, 1)


def _flag(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError("must be true or false")


def _protocol(value: str) -> int:
    if value not in ("2", "3"):
        raise ValueError("must be 2 or 3 (the RESP version)")
    return int(value)


def _cert_reqs(value: str) -> str:
    if value not in ("none", "optional", "required"):
        raise ValueError("must be none, optional or required")
    return value


def _text(value: str) -> str:
    return value


# redis-py's query options that make sense for ctxcache, each with a check as
# strict as the parser redis-py applies (or stricter: redis-py reads
# socket_keepalive=maybe as True). decode_responses and the like are left out
# on purpose: the cache needs bytes.
_REDIS_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "db": _count,
    "socket_timeout": _number,
    "socket_connect_timeout": _number,
    "socket_keepalive": _flag,
    "socket_read_size": _positive,
    "retry_on_timeout": _flag,
    "max_connections": _positive,
    "health_check_interval": _count,
    "client_name": _text,
    "username": _text,
    "password": _text,
    "protocol": _protocol,
}
_TLS_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "ssl_cert_reqs": _cert_reqs,
    "ssl_ca_certs": _text,
    "ssl_ca_path": _text,
    "ssl_certfile": _text,
    "ssl_keyfile": _text,
    "ssl_password": _text,
    "ssl_check_hostname": _flag,
    "ssl_ciphers": _text,
}
# What kombu's Connection takes from a URL's query (other keys are a TypeError
# inside kombu); ssl_* keys become its ssl options.
_BROKER_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "heartbeat": _count,
    "connect_timeout": _number,
    "login_method": _text,
}
_BROKER_TLS_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "ssl_cert_reqs": lambda v: _cert_reqs(v.lower().removeprefix("cert_")),
    "ssl_ca_certs": _text,
    "ssl_certfile": _text,
    "ssl_keyfile": _text,
    "ssl_check_hostname": _flag,
}
_SECRET_OPTIONS: Final = frozenset({"password", "ssl_password", "sentinel_password"})
# Sentinels may have credentials of their own (sentinel's requirepass); without
# them, they are asked without a password.
_SENTINEL_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "sentinel_username": _text,
    "sentinel_password": _text,
}
_MASTER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


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
        return self.scheme in _TLS_SCHEMES


@dataclass(frozen=True, slots=True)
class _Parts:
    scheme: str
    userinfo: str | None
    hostport: str
    path: str
    query: str


def _split(url: str, schemes: tuple[str, ...], example: str) -> _Parts:
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        raise InvalidUrlError(f"must be a URL such as {example}, not {_cut(url)}")
    if scheme.lower() not in schemes:
        accepted = ", ".join(f"{name}://" for name in schemes)
        raise InvalidUrlError(f"scheme {_cut(scheme)} is not one of {accepted}")
    rest, hash_sign, fragment = rest.partition("#")
    if hash_sign:
        hint = " (an unencoded '#' in the password? write it as %23)" if "@" in fragment else ""
        raise InvalidUrlError(f"has a '#...' part, which no client reads{hint}")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    return _Parts(scheme.lower(), userinfo if at else None, hostport, slash + path, query)


def _credentials(userinfo: str | None) -> tuple[str | None, str | None]:
    if userinfo is None:
        return None, None
    user, colon, secret = userinfo.partition(":")
    return unquote(user) or None, unquote(secret) if colon else None


def _host_and_port(parts: _Parts, text: str | None = None) -> tuple[str, int]:
    text = parts.hostport if text is None else text
    if text.startswith("["):
        end = text.find("]")
        after = text[end + 1 :] if end >= 0 else ""
        if end < 0 or (after and not after.startswith(":")):
            raise InvalidUrlError(
                f"malformed IPv6 address {_cut(text)}: close the bracket before the port, "
                "e.g. redis://[::1]:6379/0"
            )
        host = text[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidUrlError(f"{_cut(host)} is not an IPv6 address") from None
        port_text = after[1:] if after else ""
    else:
        if text.count(":") > 1:
            raise InvalidUrlError(
                f"{_cut(text)}: an IPv6 address goes in brackets, e.g. redis://[::1]:6379/0"
            )
        host, _, port_text = text.partition(":")
        if not host:
            hint = " (an unencoded '/' or '?' in the password? percent-encode it)"
            raise InvalidUrlError("has no host" + (hint if parts.userinfo is None else ""))
        labels_fit = len(host) <= 253 and all(len(label) <= 63 for label in host.split("."))
        if not _HOSTNAME.fullmatch(host) or not labels_fit:
            raise InvalidUrlError(f"host {_cut(host)} is not a host name or an IP address")
    if not port_text:
        return host, _DEFAULT_PORTS[parts.scheme]
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidUrlError(f"port {_cut(port_text)} is not a number from 1 to 65535")
    return host, int(port_text)


def _options(
    query: str, accepted: Mapping[str, Callable[[str], object]]
) -> tuple[tuple[str, str], ...]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidUrlError(f"query {_cut(query)} is not name=value pairs joined by &") from None
    seen: set[str] = set()
    for name, value in pairs:
        if name not in accepted:
            names = ", ".join(sorted(accepted))
            raise InvalidUrlError(f"unknown option {_cut(name)} (options taken here: {names})")
        if name in seen:
            raise InvalidUrlError(f"option {name} is given twice")
        seen.add(name)
        try:
            accepted[name](value)
        except ValueError as exc:
            shown = "***" if name in _SECRET_OPTIONS else _cut(value)
            raise InvalidUrlError(f"option {name}={shown} {exc}") from None
    return tuple(pairs)


def _database(path: str, what: str = "database") -> int | None:
    """The number in ``/N``; None for no path or ``/``."""
    number = path.strip("/") if path.count("/") <= 1 else path
    if not number:
        return None
    if not number.isdigit():
        raise InvalidUrlError(
            f"the {what} must be a number from 0 up, e.g. /0, not {_cut(path.lstrip('/'))}"
        )
    return int(number)


def _node_list(parts: _Parts, example: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port``, each checked; a node named twice is a typo."""
    nodes = []
    for text in parts.hostport.split(","):
        if not text.strip():
            raise InvalidUrlError(f"has an empty host in its node list; write e.g. {example}")
        nodes.append(_host_and_port(parts, text.strip()))
    if len(set(nodes)) != len(nodes):
        raise InvalidUrlError("names a node twice in its node list")
    return tuple(nodes)


def _ha_target(
    parts: _Parts, options: tuple[tuple[str, str], ...], username: str | None, password: str | None
) -> RedisTarget:
    """A ``redis+cluster://`` or ``redis+sentinel://`` URL's target."""
    query = dict(options)
    if parts.scheme in CLUSTER_SCHEMES:
        nodes = _node_list(parts, "redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
        if "db" in query or parts.path.strip("/"):
            raise InvalidUrlError(
                "a Redis Cluster has only database 0: drop the /<db> path and ?db= option"
            )
        return RedisTarget(
            parts.scheme, *nodes[0], None, 0, username, password, options, nodes=nodes
        )
    nodes = _node_list(parts, "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster")
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if not segments or len(segments) > 2:
        raise InvalidUrlError(
            "needs the master's name after the sentinels, and optionally a database: "
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0"
        )
    name = unquote(segments[0])
    if not _MASTER_NAME.fullmatch(name):
        raise InvalidUrlError(f"master name {_cut(name)} is not letters, digits, '.', '_' or '-'")
    path_db = _database("/" + segments[1]) if len(segments) == 2 else None
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
    parts = _split(url, CACHE_SCHEMES, "redis://127.0.0.1:6379/0")
    accepted = {**_REDIS_OPTIONS, **(_TLS_OPTIONS if parts.scheme in _TLS_SCHEMES else {})}
    if parts.scheme in SENTINEL_SCHEMES:
        accepted.update(_SENTINEL_OPTIONS)
    options = _options(parts.query, accepted)
    username, password = _credentials(parts.userinfo)
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
    host, port = _host_and_port(parts)
    path_db = _database(parts.path)
    if path_db is not None and query_db is not None and path_db != query_db:
        raise InvalidUrlError(f"two database numbers: /{path_db} and ?db={query_db}")
    db = query_db if query_db is not None else path_db or 0
    return RedisTarget(parts.scheme, host, port, None, db, username, password, options)


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
    parts = _split(url, BROKER_SCHEMES, "amqp://guest:guest@127.0.0.1:5672// or redis://...")
    if parts.scheme == "redis+socket":
        if parts.hostport or not parts.path.startswith("/") or parts.path == "/":
            raise InvalidUrlError(
                "redis+socket:// needs the socket's absolute path, "
                "e.g. redis+socket:///run/redis/redis.sock?virtual_host=1"
            )
        options = dict(_options(parts.query, {"virtual_host": _count}))
        _database(options.get("virtual_host", ""), "virtual_host")
        return
    tls = parts.scheme in ("rediss", "amqps")
    _options(parts.query, {**_BROKER_OPTIONS, **(_BROKER_TLS_OPTIONS if tls else {})})
    _host_and_port(parts)
    if parts.scheme in ("redis", "rediss", "sentinel"):
        _database(parts.path)  # kombu reads the path as the database number


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
        chosen = {k: v for k, v in cache.options if k in _BROKER_TLS_OPTIONS}
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
    wanted = _cert_reqs(options.get("ssl_cert_reqs", "required"))
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
        parts = _split(first, BROKER_SCHEMES, "redis+socket:///path")
        db = dict(parse_qsl(parts.query)).get("virtual_host", "0")
        userinfo = f"{parts.userinfo}@" if parts.userinfo is not None else ""
        return f"unix://{userinfo}{parts.path}?db={db}"
    return None


def password_source(cache: RedisTarget, env_password_set: bool) -> str | None:
    """Where the password sent to Redis comes from: ``"the URL"``, ``"REDIS_PASSWORD"`` or None."""
    if cache.password_in_url:
        return "the URL"
    return "REDIS_PASSWORD" if env_password_set else None
