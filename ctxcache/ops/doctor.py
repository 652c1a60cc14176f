"""``ctxcache doctor``: the spec's troubleshooting list as checks that name their fix.

:func:`diagnose` returns a list of :class:`Check`; the CLI only prints them.
Nothing here can hang: every Redis call has a short timeout, the SCAN stops at
a key count and a deadline, and the broker and worker steps run under a
deadline of their own. Passwords never appear in a detail (URLs go through
:func:`~ctxcache.settings.redact_url`), phones only masked.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import redis
from redis import exceptions as redis_errors

from ctxcache.client.connection import connect
from ctxcache.client.sync import ContextCache
from ctxcache.core.keys import KeyLayout
from ctxcache.errors import ConfigurationError
from ctxcache.settings import DEVELOPMENT_PORT, CacheSettings, redact_url

__all__ = ["Check", "broker_url", "diagnose", "human_bytes", "run_checks"]

T = TypeVar("T")

# The spec sizes memory for 10,000 active clients (~300 KB of JSON each).
SIZING_CLIENTS: Final = 10_000
# HSET with several field/value pairs (dialog and preference updates) needs 4.0.
MIN_REDIS_VERSION: Final = (4, 0)
GOOD_POLICIES: Final = frozenset({"allkeys-lru", "volatile-lru", "allkeys-lfu", "volatile-lfu"})
TUNNEL_FIX: Final = (
    "start the SSH tunnel: ctxcache tunnel start (check it with ctxcache tunnel status)"
)
WORKER_COMMAND: Final = "celery -A tasks worker -Q ctxcache.invalidate,ctxcache.warmup"
_SCRATCH_PHONE: Final = "+79990000000"  # under a scratch prefix: never a real client's key
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's report.

    A passing check may still carry advice in ``fix`` (shown as WARN); a
    ``skipped`` check could not run because an earlier one failed.
    """

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    skipped: bool = False

    @property
    def status(self) -> str:
        if self.skipped:
            return "SKIP"
        if not self.ok:
            return "FAIL"
        return "WARN" if self.fix else "PASS"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def human_bytes(size: float) -> str:
    """``3.0 GB`` style (binary multiples), for people."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def broker_url(settings: CacheSettings) -> tuple[str, str]:
    """The broker the workers use and why: ``CTXCACHE_BROKER_URL``, else celeryconfig's default."""
    return settings.effective_broker_url, settings.broker_reason


def diagnose(
    url: str | None = None, *, timeout: float = 2.0, scan_limit: int = 10_000, celery: bool = True
) -> list[Check]:
    """Every check, with settings from the environment (``url`` overrides the Redis URL)."""
    try:
        settings = CacheSettings.load(redis_url=url) if url else CacheSettings.load()
    except ConfigurationError as exc:
        return [
            Check("settings", False, str(exc), f"fix {exc.variable or 'the CTXCACHE_* variables'}")
        ]
    reason = "given with --url" if url else None
    return run_checks(
        settings, timeout=timeout, scan_limit=scan_limit, celery=celery, reason=reason
    )


def run_checks(
    settings: CacheSettings,
    *,
    timeout: float = 2.0,
    scan_limit: int = 10_000,
    celery: bool = True,
    reason: str | None = None,
) -> list[Check]:
    """Run the checks against ``settings``; ``celery=False`` leaves out broker and workers.

    ``reason`` says where the Redis URL came from when not from the environment.
    """
    doctor = _Doctor(settings, timeout, scan_limit, reason or settings.url_reason)
    try:
        return doctor.run(celery)
    finally:
        doctor.client.close()
        doctor.client.connection_pool.disconnect()


def _within(seconds: float, call: Callable[[], T]) -> T:
    """``call()`` in a daemon thread; :class:`TimeoutError` if it takes over ``seconds``."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(call())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="ctxcache-doctor", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if error:
        raise error[0]
    return result[0]


def _host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or "", port


def _is_loopback(url: str) -> bool:
    host, _ = _host_port(url)
    return urlsplit(url).scheme == "unix" or host in _LOOPBACK or host.startswith("127.")


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


class _Doctor:
    def __init__(
        self, settings: CacheSettings, timeout: float, scan_limit: int, reason: str
    ) -> None:
        self.settings = settings
        self.reason = reason
        self.timeout = timeout
        self.scan_limit = scan_limit
        self.url = settings.effective_redis_url
        self.shown = redact_url(self.url)
        self.client = connect(settings, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.run_id: str | None = None

    def run(self, celery: bool) -> list[Check]:
        checks = [self.url_check()]
        checks += self.connection_checks()
        if checks[-1].ok:
            checks += self.server_checks()
        else:
            for name in ("redis version", "cached contexts", "maxmemory", "eviction policy"):
                checks.append(Check(name, False, "not run: Redis is not usable", skipped=True))
            checks.append(Check("cache round trip", False, "not run", skipped=True))
        if celery:
            checks += self.celery_checks()
        return checks

    # -- Redis ------------------------------------------------------------------------

    def url_check(self) -> Check:
        detail = f"{self.shown} ({self.reason})"
        if urlsplit(self.url).scheme == "redis" and not _is_loopback(self.url):
            return Check(
                "redis url",
                True,
                detail + "; traffic is not encrypted",
                "use rediss:// or keep Redis on a private network or VPN",
            )
        return Check("redis url", True, detail)

    def connection_checks(self) -> list[Check]:
        host, port = _host_port(self.url)
        where = f"{host}:{port}" if host else self.shown
        try:
            self.client.ping()
        except redis_errors.AuthenticationError as exc:
            reached = Check("redis reachable", True, f"{where} answers")
            return [reached, Check("redis auth", False, str(exc), self._auth_fix(str(exc)))]
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            failed = Check("redis reachable", False, f"{self.shown}: {exc}", self._reach_fix(port))
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
        password = urlsplit(self.url).password is not None or self.settings.redis_password
        if password:
            return [reached, Check("redis auth", True, "authenticated with a password")]
        if not _is_loopback(self.url):
            advice = "require a password on the server and set REDIS_PASSWORD here"
            return [
                reached,
                Check("redis auth", True, "the server accepts clients without a password", advice),
            ]
        return [reached, Check("redis auth", True, "no password needed (loopback)")]

    def _reach_fix(self, port: int | None) -> str:
        if port == DEVELOPMENT_PORT:
            return TUNNEL_FIX + "; or set CTXCACHE_REDIS_URL (CTXCACHE_ENV=production uses 6379)"
        if self.settings.redis_url is None:
            return "start Redis on this host (port 6379), or set CTXCACHE_REDIS_URL"
        return f"check that Redis runs at {self.shown} (redis-cli ping) or fix CTXCACHE_REDIS_URL"

    def _auth_fix(self, message: str) -> str:
        if "without any password" in message or "no password is set" in message:
            return "the server has no password, yet one was sent: unset REDIS_PASSWORD or the URL's"
        # Under RESP3 (redis-py's HELLO) a missing password reads "HELLO must be called
        # with the client already authenticated"; under RESP2 "NOAUTH ... required".
        if "NOAUTH" in message or "required" in message or "already authenticated" in message:
            return "the server requires a password: set REDIS_PASSWORD"
        return "the password is wrong: check REDIS_PASSWORD (or the one in CTXCACHE_REDIS_URL)"

    def server_checks(self) -> list[Check]:
        try:
            info: dict[str, Any] = {**self.client.info("server"), **self.client.info("memory")}
        except redis_errors.RedisError as exc:
            info = {}
            version = Check(
                "redis version", True, f"INFO refused: {exc}", "allow INFO for this user"
            )
        else:
            version = self.version_check(info)
            self.run_id = str(info.get("run_id") or "") or None
        contexts, count, average = self.contexts_check()
        checks = [version, contexts]
        if info:
            checks += [self.maxmemory_check(info, count, average), self.policy_check(info)]
        checks.append(self.round_trip())
        return checks

    def version_check(self, info: dict[str, Any]) -> Check:
        text = str(info.get("redis_version", "?"))
        mode = str(info.get("redis_mode", "standalone"))
        try:
            number = tuple(int(part) for part in text.split(".")[:2])
        except ValueError:
            number = MIN_REDIS_VERSION
        detail = f"Redis {text} ({mode})"
        if number < MIN_REDIS_VERSION:
            return Check(
                "redis version", False, detail, "upgrade Redis to 4.0 or later (6.2+ is best)"
            )
        if mode == "cluster":
            fix = "ctxcache connects with a plain client, which cannot follow MOVED: use a primary"
            return Check("redis version", False, detail, fix)
        return Check("redis version", True, detail)

    def contexts_check(self) -> tuple[Check, int, float | None]:
        pattern = KeyLayout(self.settings.key_prefix).full_context_pattern
        count = total = 0
        truncated = False
        deadline = time.monotonic() + self.timeout * 2
        cursor = 0
        try:
            while True:
                cursor, keys = self.client.scan(cursor, match=pattern, count=1000)
                if keys:
                    pipe = self.client.pipeline(transaction=False)
                    for key in keys:
                        pipe.strlen(key)
                    for size in pipe.execute(raise_on_error=False):
                        if isinstance(size, int):
                            count, total = count + 1, total + size
                if cursor == 0:
                    break
                if count >= self.scan_limit or time.monotonic() > deadline:
                    truncated = True
                    break
        except redis_errors.RedisError as exc:
            failed = Check("cached contexts", False, f"SCAN {pattern} failed: {exc}", "allow SCAN")
            return failed, 0, None
        average = total / count if count else None
        at_least = "at least " if truncated else ""
        detail = f"{at_least}{count} keys {pattern}, {human_bytes(total)} stored"
        if average is not None:
            detail += f", {human_bytes(average)} each on average"
        return Check("cached contexts", True, detail), count, average

    def maxmemory_check(self, info: dict[str, Any], contexts: int, average: float | None) -> Check:
        limit = int(info.get("maxmemory", 0))
        used = int(info.get("used_memory", 0))
        ttl_fix = "or lower CTXCACHE_FULL_CONTEXT_TTL (e.g. 21600 = 6 h)"
        if limit == 0:
            if average is not None and contexts >= 100:
                total = human_bytes(average * SIZING_CLIENTS)
                need = f"{total} at the {human_bytes(average)} measured here"
            else:
                need = "about 3 GB at the spec's ~300 KB of JSON each (~0.7 GB zstd-compressed)"
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

    # -- Celery -----------------------------------------------------------------------

    def celery_checks(self) -> list[Check]:
        try:
            url, why = broker_url(self.settings)
        except ConfigurationError as exc:
            return [Check("broker reachable", False, str(exc), "fix the CTXCACHE_* variables")]
        shown = redact_url(url)
        try:
            _within(self.timeout * 2, lambda: self._connect_broker(url))
        except Exception as exc:
            fix = "start the broker or fix CTXCACHE_BROKER_URL (with its password)"
            checks = [Check("broker reachable", False, f"{shown} ({why}): {exc}", fix)]
            for name in (
                "broker eviction",
                "worker: ctxcache.invalidate",
                "worker: ctxcache.warmup",
            ):
                checks.append(Check(name, False, "not run: no broker", skipped=True))
            return checks
        checks = [Check("broker reachable", True, f"{shown} ({why})"), self.broker_eviction(url)]
        return checks + self.worker_checks(url)

    def _connect_broker(self, url: str) -> None:
        import kombu

        options = {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}
        with kombu.Connection(url, connect_timeout=self.timeout, transport_options=options) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=math.ceil(self.timeout)
            )

    def broker_eviction(self, url: str) -> Check:
        if urlsplit(url).scheme not in ("redis", "rediss"):
            return Check("broker eviction", True, "not a Redis broker: messages are never evicted")
        client = redis.Redis.from_url(
            url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        try:
            info = {**client.info("server"), **client.info("memory")}
        except redis_errors.RedisError as exc:
            return Check(
                "broker eviction", True, f"INFO refused: {exc}", "make sure it is noeviction"
            )
        finally:
            client.close()
        policy = str(info.get("maxmemory_policy", "?"))
        shared = self.run_id is not None and info.get("run_id") == self.run_id
        where = "the cache's own server" if shared else "its server"
        if policy != "noeviction":
            detail = f"{where} evicts ({policy}): queued invalidations can be dropped"
            fix = "give the broker its own Redis with maxmemory-policy noeviction, or RabbitMQ"
            return Check("broker eviction", False, detail, fix)
        detail = f"{where} is noeviction"
        if shared and self.settings.env == "production":
            advice = "fine for development; in production give the broker its own server"
            return Check("broker eviction", True, detail, advice)
        return Check("broker eviction", True, detail)

    def worker_checks(self, url: str) -> list[Check]:
        from celeryconfig import INVALIDATE_QUEUE, WARMUP_QUEUE

        try:
            consumers = _within(self.timeout + 3, lambda: _queue_consumers(url, self.timeout))
        except Exception as exc:
            consumers = {}
            problem: str | None = f"inspect failed: {exc}"
        else:
            problem = None
        effects = {
            INVALIDATE_QUEUE: "invalidations after bookings wait in the queue: stale contexts",
            WARMUP_QUEUE: "VIP contexts are not warmed up",
        }
        checks = []
        for queue in (INVALIDATE_QUEUE, WARMUP_QUEUE):
            workers = sorted(consumers.get(queue, ()))
            if workers:
                checks.append(Check(f"worker: {queue}", True, "consumed by " + ", ".join(workers)))
                continue
            detail = problem or f"no worker consumes {queue}: {effects[queue]}"
            checks.append(Check(f"worker: {queue}", False, detail, f"start one: {WORKER_COMMAND}"))
        return checks


def _queue_consumers(url: str, timeout: float) -> dict[str, set[str]]:
    """Queue name -> the workers consuming it, from ``inspect().active_queues()``."""
    from tasks import create_app

    app = create_app(broker_url=url, broker_connection_timeout=timeout)
    try:
        replies = app.control.inspect(timeout=min(1.0, timeout)).active_queues() or {}
    finally:
        app.close()
    consumers: dict[str, set[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or ():
            consumers.setdefault(str(queue.get("name")), set()).add(str(worker))
    return consumers
