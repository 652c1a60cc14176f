"""The doctor's checks of the cache's Redis: URL, reachability, auth, version, memory, round trip.

Every Redis call has a short timeout and the SCAN stops at a key count and a
deadline, so nothing here can hang. Passwords never appear in a detail (URLs go
through :func:`~ctxcache.settings.redact_url`), phones only masked.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any, Final

import redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from ctxcache.client.connection import connect, primaries
from ctxcache.client.sync import ContextCache
from ctxcache.core.crypto import key_id
from ctxcache.core.keys import KeyLayout
from ctxcache.errors import ConfigurationError
from ctxcache.ops.hints import TUNNEL_FIX, auth_hint, tls_hint
from ctxcache.settings import DEVELOPMENT_PORT, CacheSettings, redact_url
from ctxcache.urls import RedisTarget, parse_cache_url, password_source

from .ha import cluster_slots_check, sentinel_fix
from .report import Check, human_bytes

__all__ = ["RedisDoctor", "is_loopback"]

# The spec sizes memory for 10,000 active clients (~300 KB of JSON each).
SIZING_CLIENTS: Final = 10_000
# HSET with several field/value pairs (dialog and preference updates) needs 4.0.
MIN_REDIS_VERSION: Final = (4, 0)
GOOD_POLICIES: Final = frozenset({"allkeys-lru", "volatile-lru", "allkeys-lfu", "volatile-lfu"})
_SCRATCH_PHONE: Final = "+79990000000"  # under a scratch prefix: never a real client's key
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` answers a TLS handshake (not verified: this only asks the protocol)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe of the protocol: nothing is sent over it
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except ssl.SSLError as exc:
        return "alert" in str(exc).lower()  # a TLS server that refused us (client certificate)
    except OSError:
        return False


def is_loopback(target: RedisTarget) -> bool:
    """A unix socket or a loopback address: traffic that never leaves the host."""
    host = target.host or ""
    return target.socket_path is not None or host in _LOOPBACK or host.startswith("127.")


@contextlib.contextmanager
def _captured_errors() -> Iterator[list[str]]:
    """Collect the cache's error log lines (already masked) instead of printing them."""
    messages: list[str] = []

    class Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("ctxcache")
    handler = Collector(logging.ERROR)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _write_fix(message: str, settings: CacheSettings) -> str:
    if "OOM" in message:
        return "Redis is full under maxmemory-policy noeviction: use allkeys-lru or more maxmemory"
    if "READONLY" in message:
        return "CTXCACHE_REDIS_URL points at a read-only replica: use the primary"
    if "NOPERM" in message or "NOSCRIPT" in message:
        return "the Redis user lacks permissions: allow strings, EVALSHA and SCRIPT LOAD"
    if "imeout" in message:
        return (
            "the server answers slower than CTXCACHE_SOCKET_TIMEOUT="
            f"{settings.socket_timeout:g} s: raise it (e.g. 1.0 over an SSH tunnel)"
        )
    return "see the error above; `ctxcache -v doctor` shows the cache's log"


class RedisDoctor:
    """The checks of the cache's Redis server; :attr:`run_id` identifies the server."""

    def __init__(
        self, settings: CacheSettings, timeout: float, scan_limit: int, reason: str
    ) -> None:
        self.settings = settings
        self.reason = reason
        self.timeout = timeout
        self.scan_limit = scan_limit
        self.url = settings.effective_redis_url
        self.target = parse_cache_url(self.url)
        self.shown = redact_url(self.url)
        self.run_id: str | None = None
        self.connect_error: ConfigurationError | None = None
        try:
            self.client: Any = connect(
                settings, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except ConfigurationError as exc:  # a Cluster client reads the slot map when built
            self.client = None
            self.connect_error = exc

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            pool = getattr(self.client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()

    def run(self) -> list[Check]:
        checks = [self.url_check(), self.protection_check()]
        if self.connect_error is not None:
            detail, _, fix = str(self.connect_error).partition("; ")
            checks.append(Check("redis reachable", False, detail, fix or "fix CTXCACHE_REDIS_URL"))
        else:
            checks += self.connection_checks()
        if checks[-1].ok:
            checks += self.server_checks()
        else:
            for name in ("redis version", "cached contexts", "maxmemory", "eviction policy"):
                checks.append(Check(name, False, "not run: Redis is not usable", skipped=True))
            checks.append(Check("cache round trip", False, "not run", skipped=True))
        return checks

    # -- Redis ------------------------------------------------------------------------

    def url_check(self) -> Check:
        detail = f"{self.shown} ({self.reason})"
        plain = self.target.scheme in ("redis", "redis+cluster", "redis+sentinel")
        if plain and not is_loopback(self.target):
            return Check(
                "redis url",
                True,
                detail + "; traffic is not encrypted",
                "use rediss:// or keep Redis on a private network or VPN",
            )
        return Check("redis url", True, detail)

    def protection_check(self) -> Check:
        """Which of the opt-in protections of personal data are on (README "Security")."""
        keys = self.settings.encryption_key_list()
        if keys:
            ids = [key_id(key).hex() for key in keys]
            values = f"values encrypted with key {ids[0]}"
            if len(ids) > 1:
                values += f" (also opened: {', '.join(ids[1:])})"
            if self.settings.require_encryption:
                values += "; plain values refused"
        else:
            values = "values not encrypted (CTXCACHE_ENCRYPTION_KEYS)"
        hashed = self.settings.key_secret is not None
        phones = "phones in keys hashed" if hashed else "phones in key names (CTXCACHE_KEY_SECRET)"
        return Check("data protection", True, f"{values}; {phones}")

    def connection_checks(self) -> list[Check]:
        target = self.target
        where = f"{target.host}:{target.port}" if target.host else self.shown
        port = target.port
        source = password_source(target, self.settings.redis_password is not None)
        try:
            self.client.ping()
        except redis_errors.AuthenticationError as exc:
            reached = Check("redis reachable", True, f"{where} answers")
            sent = f"password from {source}" if source else "no password"
            detail = f"{exc} (sent: {sent})"
            return [reached, Check("redis auth", False, detail, auth_hint(self.settings, str(exc)))]
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            fix = self._reach_fix(port, str(exc))
            failed = Check("redis reachable", False, f"{self.shown}: {exc}", fix)
            return [failed, Check("redis auth", False, "not run", skipped=True)]
        except redis_errors.InvalidResponse as exc:
            detail = f"{where} answers, but not as Redis: {exc}"
            fix = "wrong port or scheme (rediss:// for TLS)? fix CTXCACHE_REDIS_URL"
            failed = Check("redis reachable", False, detail, fix)
            return [failed, Check("redis auth", False, "not run", skipped=True)]
        except redis_errors.RedisError as exc:  # answered, but refused PING (ACL)
            reached = Check("redis reachable", True, f"{where} answers")
            return [
                reached,
                Check(
                    "redis auth", False, f"PING refused: {exc}", _write_fix(str(exc), self.settings)
                ),
            ]
        via = " through the SSH tunnel" if port == DEVELOPMENT_PORT else ""
        reached = Check("redis reachable", True, f"PING answered by {where}{via}")
        if source:
            detail = f"authenticated with the password from {source}"
            return [reached, Check("redis auth", True, detail)]
        if not is_loopback(target):
            advice = "require a password on the server and set REDIS_PASSWORD here"
            return [
                reached,
                Check("redis auth", True, "the server accepts clients without a password", advice),
            ]
        return [reached, Check("redis auth", True, "no password needed (loopback)")]

    def _reach_fix(self, port: int | None, message: str = "") -> str:
        if "certificate verify failed" in message.lower():
            ca = self.settings.tls_ca_file or "the system's CAs (CTXCACHE_TLS_CA_FILE is not set)"
            return (
                f"the server's certificate is not trusted by {ca}, or names another host: "
                "set CTXCACHE_TLS_CA_FILE to the CA that signed it"
            )
        if "certificate required" in message.lower() or "alert" in message.lower():
            return (
                "the server refused the TLS handshake: it likely wants a client certificate "
                "(CTXCACHE_TLS_CERT_FILE and CTXCACHE_TLS_KEY_FILE)"
            )
        if self.target.scheme == "redis" and speaks_tls(
            self.target.host or "localhost", port or 6379, self.timeout
        ):
            return (
                f"the server at {self.target.host}:{port} speaks TLS: use rediss:// "
                "(and CTXCACHE_TLS_CA_FILE for a private CA)"
            )
        if self._speaks_plain_text():
            return (
                f"the server at {self.target.host}:{port} answers without TLS: "
                "use redis:// instead of rediss://, or turn TLS on in the server"
            )
        tls = tls_hint(self.settings)
        if tls:
            return tls
        if port == DEVELOPMENT_PORT:
            return TUNNEL_FIX + "; or set CTXCACHE_REDIS_URL (CTXCACHE_ENV=production uses 6379)"
        if self.settings.redis_url is None:
            return "start Redis on this host (port 6379), or set CTXCACHE_REDIS_URL"
        if self.target.topology == "sentinel":
            return sentinel_fix(self.target, self.timeout)
        return f"check that Redis runs at {self.shown} (redis-cli ping) or fix CTXCACHE_REDIS_URL"

    def _speaks_plain_text(self) -> bool:
        """For ``rediss://``: does the same host and port answer Redis without TLS?"""
        if self.target.scheme != "rediss":
            return False
        probe = redis.Redis(
            host=self.target.host or "localhost",
            port=self.target.port or 6379,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            probe.ping()
        except (redis_errors.AuthenticationError, redis_errors.ResponseError):
            return True  # it refused us, in plain-text Redis
        except redis_errors.RedisError:
            return False
        finally:
            probe.close()
        return True

    def server_checks(self) -> list[Check]:
        try:
            info = self._info()
        except redis_errors.RedisError as exc:
            info = {}
            version = Check(
                "redis version", True, f"INFO refused: {exc}", "allow +info for this user"
            )
        else:
            version = self.version_check(info)
            self.run_id = str(info.get("run_id") or "") or None
        contexts, count, average = self.contexts_check()
        checks = [version, contexts]
        if self.target.topology == "cluster":
            checks.append(cluster_slots_check(self.client))
        if info:
            checks += [self.maxmemory_check(info, count, average), self.policy_check(info)]
        else:  # a restricted ACL user: say what was not checked, and how to check it
            fix = "allow +info for the user doctor runs as, or check it on the server"
            checks += [
                Check(name, True, "not checked: INFO refused for this user", fix)
                for name in ("maxmemory", "eviction policy")
            ]
        checks.append(self.round_trip())
        return checks

    def _info(self) -> dict[str, Any]:
        """INFO server and memory; in a Cluster memory added up over the primaries."""
        shards = primaries(self.client)
        info: dict[str, Any] = {**shards[0].info("server"), **shards[0].info("memory")}
        for shard in shards[1:]:
            memory = shard.info("memory")
            for name in ("used_memory", "maxmemory"):
                info[name] = int(info.get(name, 0)) + int(memory.get(name, 0))
        if len(shards) > 1:
            info["primaries"] = len(shards)
        return info

    def version_check(self, info: dict[str, Any]) -> Check:
        text = str(info.get("redis_version", "?"))
        mode = str(info.get("redis_mode", "standalone"))
        try:
            number = tuple(int(part) for part in text.split(".")[:2])
        except ValueError:
            number = MIN_REDIS_VERSION
        detail = f"Redis {text} ({mode})"
        if "primaries" in info:
            detail = f"Redis {text} ({mode}, {info['primaries']} primaries; memory added up)"
        if number < MIN_REDIS_VERSION:
            return Check(
                "redis version", False, detail, "upgrade Redis to 4.0 or later (6.2+ is best)"
            )
        if mode == "cluster" and self.target.topology != "cluster":
            fix = (
                "a plain client cannot follow MOVED: write CTXCACHE_REDIS_URL as"
                " redis+cluster://host:port[,host:port...]"
            )
            return Check("redis version", False, detail, fix)
        return Check("redis version", True, detail)

    def contexts_check(self) -> tuple[Check, int, float | None]:
        """What the cache holds, per scope: clients' parts and company sections."""
        layout = KeyLayout(self.settings.key_prefix)
        deadline = time.monotonic() + self.timeout * 2
        try:
            clients = self._value_sizes(layout.full_context_pattern, deadline)
            sections = self._value_sizes(layout.company_section_pattern, deadline)
        except redis_errors.RedisError as exc:
            failed = Check("cached contexts", False, f"SCAN failed: {exc}", "allow SCAN")
            return failed, 0, None
        (count, total, cut), (section_count, section_total, section_cut) = clients, sections
        average = total / count if count else None
        # STRLEN: the values' own bytes. `ctxcache stats` reports Redis memory
        # (MEMORY USAGE), which adds Redis's overhead per key.
        detail = (
            f"clients' parts: {'at least ' if cut else ''}{count} keys, values {human_bytes(total)}"
        )
        if average is not None:
            detail += f" ({human_bytes(average)} each on average)"
        detail += (
            f"; company sections: {'at least ' if section_cut else ''}{section_count} keys, "
            f"values {human_bytes(section_total)}"
        )
        return Check("cached contexts", True, detail), count, average

    def _value_sizes(self, pattern: str, deadline: float) -> tuple[int, int, bool]:
        """Keys matching ``pattern``, their values' bytes, and whether the scan was cut short."""
        count = total = 0
        for shard in primaries(self.client):  # a Cluster: every primary, one after the other
            cursor = 0
            while True:
                cursor, keys = shard.scan(cursor, match=pattern, count=1000)
                if keys:
                    pipe = shard.pipeline(transaction=False)
                    for key in keys:
                        pipe.strlen(key)
                    for size in pipe.execute(raise_on_error=False):
                        if isinstance(size, int):
                            count, total = count + 1, total + size
                if cursor == 0:
                    break
                if count >= self.scan_limit or time.monotonic() > deadline:
                    return count, total, True
        return count, total, False

    def maxmemory_check(self, info: dict[str, Any], contexts: int, average: float | None) -> Check:
        limit = int(info.get("maxmemory", 0))
        used = int(info.get("used_memory", 0))
        ttl_fix = "or lower CTXCACHE_FULL_CONTEXT_TTL (e.g. 21600 = 6 h)"
        if limit == 0:
            if average is not None and contexts >= 100:
                total = human_bytes(average * SIZING_CLIENTS)
                need = f"{total} at the {human_bytes(average)} per client part measured here"
            else:
                need = "about 0.1 GB: ~10 KB per client part, the company's sections once"
            detail = (
                f"unlimited (0); {human_bytes(used)} used; {SIZING_CLIENTS:,} contexts take {need}"
            )
            fix = f"CONFIG SET maxmemory to what this server can spare, {ttl_fix}"
            return Check("maxmemory", True, detail, fix)
        detail = f"{human_bytes(limit)}, {used / limit:.0%} used"
        if used > 0.9 * limit:
            return Check("maxmemory", True, detail, f"nearly full: raise maxmemory {ttl_fix}")
        return Check("maxmemory", True, detail)

    def policy_check(self, info: dict[str, Any]) -> Check:
        policy = str(info.get("maxmemory_policy", "?"))
        limited = int(info.get("maxmemory", 0)) > 0
        move_broker = "; the Celery broker must then be on another server (CTXCACHE_BROKER_URL)"
        if policy in GOOD_POLICIES:
            detail = f"{policy}: least-used contexts go first, right for a cache server"
            if policy.startswith("allkeys"):
                detail += " (it may also evict the VIP registry, which has no TTL)"
            return Check("eviction policy", True, detail)
        fix = "CONFIG SET maxmemory-policy allkeys-lru (or volatile-lru)" + move_broker
        if policy == "noeviction":
            if limited:
                detail = (
                    "noeviction: when maxmemory is reached every write fails and nothing is cached"
                )
                return Check("eviction policy", False, detail, fix)
            detail = (
                "noeviction: harmless while memory is unlimited; writes fail once a limit is hit"
            )
            return Check("eviction policy", True, detail, fix)
        return Check(
            "eviction policy", True, f"{policy}: works, LRU keeps the contexts in use", fix
        )

    def round_trip(self) -> Check:
        """SET, GET and invalidate under a scratch prefix, with the cache's own timeouts."""
        prefix = f"{self.settings.key_prefix}ctxcache:doctor:{secrets.token_hex(4)}:"
        scratch = self.settings.model_copy(update={"key_prefix": prefix})
        cache = ContextCache(connect(scratch), scratch)
        context = {"doctor": prefix, "padding": "ctxcache " * 512}  # above the zstd threshold
        keys = cache.client_keys(_SCRATCH_PHONE, 1)
        started = time.perf_counter()
        with _captured_errors() as errors:
            try:
                step = "set"
                if cache.set_cached_full_context(_SCRATCH_PHONE, 1, context, ttl=60):
                    step = "get"
                    if cache.get_cached_full_context(_SCRATCH_PHONE, 1) == context:
                        step = "invalidate"
                        if cache.invalidate_cached_context(_SCRATCH_PHONE, 1):
                            step = "get after invalidate"
                            if cache.get_cached_full_context(_SCRATCH_PHONE, 1) is None:
                                step = ""
            finally:
                cache.close()  # flushes its counts to the scratch stats key, deleted next
                with contextlib.suppress(redis_errors.RedisError):
                    self.client.delete(
                        keys.full_context, keys.generation, keys.lock, cache.keys.stats
                    )
        elapsed = (time.perf_counter() - started) * 1000
        if not step:
            detail = f"set, get and invalidate of scratch key {keys.masked} in {elapsed:.0f} ms"
            return Check("cache round trip", True, detail)
        error = errors[0] if errors else "no error logged"
        detail = f"{step} of scratch key {keys.masked} did not work: {error}"
        return Check("cache round trip", False, detail, _write_fix(error, self.settings))
