"""What a failed connection to Redis most likely means, in words the operator can act on.

Shared by the ``ctxcache`` command and the doctor, so both give the same
advice. Nothing here does I/O or shows a password: a hint says where the
password came from (the URL or ``REDIS_PASSWORD``), never what it is.
"""

from __future__ import annotations

from typing import Final

from ctxcache.settings import CacheSettings
from ctxcache.urls import parse_cache_url, password_source

__all__ = ["TUNNEL_FIX", "auth_hint", "is_missing_password", "tls_hint"]

# The spec's development set-up reaches Redis through an SSH tunnel on 6380.
TUNNEL_FIX: Final = (
    "start the SSH tunnel: ctxcache tunnel start (check it with ctxcache tunnel status)"
)


def is_missing_password(message: str) -> bool:
    """The server wants a password that was not sent (RESP2 ``NOAUTH``, RESP3 ``HELLO``)."""
    return "NOAUTH" in message or "already authenticated" in message or "required" in message


def auth_hint(settings: CacheSettings, message: str) -> str:
    """One sentence for an authentication error ``message`` from Redis."""
    target = parse_cache_url(settings.effective_redis_url)
    source = password_source(target, settings.redis_password is not None)
    if "without any password" in message or "no password is set" in message:
        return f"the server has no password, yet one was sent (from {source}): remove it"
    if source is None or is_missing_password(message):
        return "authentication required: set REDIS_PASSWORD or put it in the URL"
    if source == "the URL":
        ignored = (
            "; REDIS_PASSWORD is set but not used when the URL has a password"
            if settings.redis_password is not None
            else ""
        )
        return f"the password in the URL was refused: correct it{ignored}"
    return "the password from REDIS_PASSWORD was refused: correct it (the URL has none)"


def tls_hint(settings: CacheSettings) -> str | None:
    """For a ``rediss://`` URL whose connection failed: a plain-text server is the likely cause."""
    if parse_cache_url(settings.effective_redis_url).scheme != "rediss":
        return None
    return (
        "the URL asks for TLS (rediss://): a server without TLS never answers the TLS "
        "handshake, so it times out like this; if it speaks plain text, use redis://"
    )
