"""Splitting and checking the parts of a URL: schemes, hosts, ports, databases, options."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote

from ctxcache.errors import InvalidUrlError

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
TLS_SCHEMES: Final = frozenset({"rediss", "rediss+cluster", "rediss+sentinel", "amqps"})
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

__all__ = [
    "BROKER_OPTIONS",
    "BROKER_SCHEMES",
    "BROKER_TLS_OPTIONS",
    "CACHE_SCHEMES",
    "CLUSTER_SCHEMES",
    "MASTER_NAME",
    "REDIS_OPTIONS",
    "SENTINEL_OPTIONS",
    "SENTINEL_SCHEMES",
    "TLS_OPTIONS",
    "TLS_SCHEMES",
    "UrlParts",
    "cert_reqs",
    "checked_options",
    "count_option",
    "cut_text",
    "host_and_port",
    "node_list",
    "parse_database",
    "split_credentials",
    "split_url",
]


def cut_text(text: str) -> str:
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


def count_option(value: str) -> int:
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


def cert_reqs(value: str) -> str:
    if value not in ("none", "optional", "required"):
        raise ValueError("must be none, optional or required")
    return value


def _text(value: str) -> str:
    return value


# redis-py's query options that make sense for ctxcache, each with a check as
# strict as the parser redis-py applies (or stricter: redis-py reads
# socket_keepalive=maybe as True). decode_responses and the like are left out
# on purpose: the cache needs bytes.
REDIS_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "db": count_option,
    "socket_timeout": _number,
    "socket_connect_timeout": _number,
    "socket_keepalive": _flag,
    "socket_read_size": _positive,
    "retry_on_timeout": _flag,
    "max_connections": _positive,
    "health_check_interval": count_option,
    "client_name": _text,
    "username": _text,
    "password": _text,
    "protocol": _protocol,
}
TLS_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "ssl_cert_reqs": cert_reqs,
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
BROKER_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "heartbeat": count_option,
    "connect_timeout": _number,
    "login_method": _text,
}
BROKER_TLS_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "ssl_cert_reqs": lambda v: cert_reqs(v.lower().removeprefix("cert_")),
    "ssl_ca_certs": _text,
    "ssl_certfile": _text,
    "ssl_keyfile": _text,
    "ssl_check_hostname": _flag,
}
_SECRET_OPTIONS: Final = frozenset({"password", "ssl_password", "sentinel_password"})
# Sentinels may have credentials of their own (sentinel's requirepass); without
# them, they are asked without a password.
SENTINEL_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "sentinel_username": _text,
    "sentinel_password": _text,
}
MASTER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


@dataclass(frozen=True, slots=True)
class UrlParts:
    scheme: str
    userinfo: str | None
    hostport: str
    path: str
    query: str


def split_url(url: str, schemes: tuple[str, ...], example: str) -> UrlParts:
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        raise InvalidUrlError(f"must be a URL such as {example}, not {cut_text(url)}")
    if scheme.lower() not in schemes:
        accepted = ", ".join(f"{name}://" for name in schemes)
        raise InvalidUrlError(f"scheme {cut_text(scheme)} is not one of {accepted}")
    rest, hash_sign, fragment = rest.partition("#")
    if hash_sign:
        hint = " (an unencoded '#' in the password? write it as %23)" if "@" in fragment else ""
        raise InvalidUrlError(f"has a '#...' part, which no client reads{hint}")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    return UrlParts(scheme.lower(), userinfo if at else None, hostport, slash + path, query)


def split_credentials(userinfo: str | None) -> tuple[str | None, str | None]:
    if userinfo is None:
        return None, None
    user, colon, secret = userinfo.partition(":")
    return unquote(user) or None, unquote(secret) if colon else None


def host_and_port(parts: UrlParts, text: str | None = None) -> tuple[str, int]:
    text = parts.hostport if text is None else text
    if text.startswith("["):
        end = text.find("]")
        after = text[end + 1 :] if end >= 0 else ""
        if end < 0 or (after and not after.startswith(":")):
            raise InvalidUrlError(
                f"malformed IPv6 address {cut_text(text)}: close the bracket before the port, "
                "e.g. redis://[::1]:6379/0"
            )
        host = text[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidUrlError(f"{cut_text(host)} is not an IPv6 address") from None
        port_text = after[1:] if after else ""
    else:
        if text.count(":") > 1:
            raise InvalidUrlError(
                f"{cut_text(text)}: an IPv6 address goes in brackets, e.g. redis://[::1]:6379/0"
            )
        host, _, port_text = text.partition(":")
        if not host:
            hint = " (an unencoded '/' or '?' in the password? percent-encode it)"
            raise InvalidUrlError("has no host" + (hint if parts.userinfo is None else ""))
        labels_fit = len(host) <= 253 and all(len(label) <= 63 for label in host.split("."))
        if not _HOSTNAME.fullmatch(host) or not labels_fit:
            raise InvalidUrlError(f"host {cut_text(host)} is not a host name or an IP address")
    if not port_text:
        return host, _DEFAULT_PORTS[parts.scheme]
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidUrlError(f"port {cut_text(port_text)} is not a number from 1 to 65535")
    return host, int(port_text)


def checked_options(
    query: str, accepted: Mapping[str, Callable[[str], object]]
) -> tuple[tuple[str, str], ...]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidUrlError(
            f"query {cut_text(query)} is not name=value pairs joined by &"
        ) from None
    seen: set[str] = set()
    for name, value in pairs:
        if name not in accepted:
            names = ", ".join(sorted(accepted))
            raise InvalidUrlError(f"unknown option {cut_text(name)} (options taken here: {names})")
        if name in seen:
            raise InvalidUrlError(f"option {name} is given twice")
        seen.add(name)
        try:
            accepted[name](value)
        except ValueError as exc:
            shown = "***" if name in _SECRET_OPTIONS else cut_text(value)
            raise InvalidUrlError(f"option {name}={shown} {exc}") from None
    return tuple(pairs)


def parse_database(path: str, what: str = "database") -> int | None:
    """The number in ``/N``; None for no path or ``/``."""
    number = path.strip("/") if path.count("/") <= 1 else path
    if not number:
        return None
    if not number.isdigit():
        raise InvalidUrlError(
            f"the {what} must be a number from 0 up, e.g. /0, not {cut_text(path.lstrip('/'))}"
        )
    return int(number)


def node_list(parts: UrlParts, example: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port``, each checked; a node named twice is a typo."""
    nodes = []
    for text in parts.hostport.split(","):
        if not text.strip():
            raise InvalidUrlError(f"has an empty host in its node list; write e.g. {example}")
        nodes.append(host_and_port(parts, text.strip()))
    if len(set(nodes)) != len(nodes):
        raise InvalidUrlError("names a node twice in its node list")
    return tuple(nodes)
