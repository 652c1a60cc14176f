"""ContextCache: the spec's get / set / invalidate / load, safe under concurrency and failure."""

from __future__ import annotations

import enum
import functools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import orjson
import redis
from redis import exceptions as redis_errors

from ctxcache.client.connection import connect
from ctxcache.core import scripts
from ctxcache.core.breaker import CircuitBreaker
from ctxcache.core.keys import ClientKeys, KeyLayout, validate_company_id
from ctxcache.core.phone import normalize_phone
from ctxcache.core.stats import CacheStats, StatsRecorder, push_deltas
from ctxcache.core.wire import WireCodec
from ctxcache.errors import (
    CacheUnavailableError,
    InvalidContextError,
    InvalidTTLError,
    UndecodableValueError,
)
from ctxcache.protocols import ContextLoader
from ctxcache.settings import CacheSettings

__all__ = ["GENERATION_UNKNOWN", "ContextCache", "EnsureOutcome", "WarmOutcome"]

logger = logging.getLogger("ctxcache")

T = TypeVar("T")

# A generation that never matches: a guarded write with it is always dropped.
GENERATION_UNKNOWN: Final = "unknown"

_POLL_FIRST: Final = 0.005
_POLL_MAX: Final = 0.05
# Transport failures count towards the breaker; other Redis errors (a server
# that answered with an error) are logged but say nothing about reachability.
# A reply that is not Redis protocol (wrong port, TLS on one side only) is a
# reachability problem too.
_TRANSPORT_ERRORS: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.InvalidResponse,
)


class _Unavailable:
    """Returned by :meth:`ContextCache._redis` when Redis could not be used."""


UNAVAILABLE: Final = _Unavailable()


class WarmOutcome(enum.Enum):
    """What :meth:`ContextCache.warm_full_context` did."""

    WRITTEN = "written"
    FRESH = "fresh"  # remaining TTL above the threshold: skipped
    BUSY = "busy"  # another worker holds the load lock: skipped
    SUPERSEDED = "superseded"  # invalidated while loading: not written
    UNAVAILABLE = "unavailable"  # Redis could not be used


class EnsureOutcome(enum.Enum):
    """What :meth:`ContextCache.ensure_invalidated` found and did."""

    IN_EFFECT = "in_effect"  # the earlier invalidation still holds: nothing done
    REAPPLIED = "reapplied"  # it had been undone (or none was given): applied now
    UNAVAILABLE = "unavailable"  # Redis could not be used


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str | None) -> bytes | None:
    # The client is built without decode_responses; this only narrows the type.
    return value.encode() if isinstance(value, str) else value


@functools.lru_cache(maxsize=8192)
def _normalize(phone: str, region: str) -> str:
    return normalize_phone(phone, region)


class ContextCache:
    """The full-context cache of one Redis server.

    Reads return ``None`` and writes ``False`` when Redis is unreachable or
    slow; bad input raises a :class:`~ctxcache.errors.CtxCacheError` that is
    also a ``ValueError``. Thread-safe: share one instance per process.
    """

    def __init__(
        self,
        client: redis.Redis,
        settings: CacheSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings if settings is not None else CacheSettings.load()
        self.client = client
        self.keys = KeyLayout(self.settings.key_prefix)
        self.codec = WireCodec(
            compression_threshold=self.settings.compression_threshold,
            compression_level=self.settings.compression_level,
            max_context_bytes=self.settings.max_context_bytes,
        )
        self.breaker = CircuitBreaker(
            self.settings.breaker_threshold, self.settings.breaker_cooldown, clock=clock
        )
        self._clock = clock
        self._sleep = sleep
        self._lock_ms = int(self.settings.lock_ttl * 1000)
        self._stats = StatsRecorder(
            clock=clock, interval=self.settings.stats_flush_interval, push=self._push_stats
        )
        self._lease = client.register_script(scripts.LEASE)
        self._warm_lease = client.register_script(scripts.WARM_LEASE)
        self._store = client.register_script(scripts.STORE_IF_GENERATION)
        self._release = client.register_script(scripts.RELEASE_LOCK)
        self._invalidate = client.register_script(scripts.INVALIDATE)
        self._invalidate_if_behind = client.register_script(scripts.INVALIDATE_IF_BEHIND)
        self._update_section = client.register_script(scripts.UPDATE_SECTION)

    @classmethod
    def from_settings(cls, settings: CacheSettings | None = None, **kwargs: Any) -> ContextCache:
        """A cache configured from ``CTXCACHE_*`` environment variables (or ``settings``)."""
        settings = settings if settings is not None else CacheSettings.load()
        return cls(connect(settings), settings, **kwargs)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ContextCache:
        """A cache on ``url``; other settings come from the environment."""
        settings = CacheSettings.load(redis_url=url)
        return cls(connect(settings), settings, **kwargs)

    def close(self) -> None:
        self.flush_stats()
        self.client.close()
        self.client.connection_pool.disconnect()

    def __enter__(self) -> ContextCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the spec's API -------------------------------------------------------------

    def get_cached_full_context(self, phone: str, company_id: int | str) -> dict[str, Any] | None:
        """The cached context, or ``None`` on a miss, a corrupt value or a Redis failure."""
        cached = self._get(self.client_keys(phone, company_id))
        return None if isinstance(cached, _Unavailable) else cached

    def set_cached_full_context(
        self,
        phone: str,
        company_id: int | str,
        context: Mapping[str, Any],
        ttl: float | None = None,
        *,
        generation: str | None = None,
    ) -> bool:
        """Store ``context`` for ``ttl`` seconds (default 12 h); ``False`` if not written.

        With ``generation`` (from :meth:`current_generation`, read before the
        context was loaded) the write is dropped if the context was
        invalidated since. Bad input raises before anything is written.
        """
        keys = self.client_keys(phone, company_id)
        ttl_ms = self._ttl_ms(ttl)
        started = time.perf_counter()
        value = self.codec.encode(context)
        if generation is None:
            result = self._redis(
                "SET", keys.masked, lambda: self.client.set(keys.full_context, value, px=ttl_ms)
            )
            written = not isinstance(result, _Unavailable) and bool(result)
        else:
            outcome = self._store_guarded(keys, value, ttl_ms, generation, token="")
            written = outcome is WarmOutcome.WRITTEN
        if written:
            self._stats.add("sets")
            logger.info(
                "cached %s (%d bytes stored) in %.1f ms",
                keys.masked,
                len(value),
                (time.perf_counter() - started) * 1000,
            )
        return written

    def invalidate_cached_context(self, phone: str, company_id: int | str) -> bool:
        """Delete the cached context and void every load in flight; ``False`` on failure."""
        return self.apply_invalidation(phone, company_id) is not None

    def apply_invalidation(self, phone: str, company_id: int | str) -> int | None:
        """Invalidate as :meth:`invalidate_cached_context` does; return the generation it produced.

        ``None`` if Redis did not take it. Hand the generation to
        :meth:`ensure_invalidated` later (the booking hooks queue it to a
        worker) to check that this invalidation was not undone meanwhile.
        """
        keys = self.client_keys(phone, company_id)
        result = self._redis(
            "INVALIDATE",
            keys.masked,
            lambda: self._invalidate(
                keys=[keys.full_context, keys.generation], args=[self.settings.generation_ttl]
            ),
        )
        if isinstance(result, _Unavailable):
            return None
        self._stats.add("invalidations")
        logger.info("invalidated %s (%s)", keys.masked, "deleted" if result[0] else "was absent")
        return int(result[1])

    def ensure_invalidated(
        self, phone: str, company_id: int | str, generation: int | None
    ) -> EnsureOutcome:
        """Make sure the invalidation that produced ``generation`` is still in effect.

        A no-op while the client's generation is at or past ``generation``
        (a context loaded since then is kept). If it is behind or gone, the
        earlier write was lost, for example to a failover, and the
        invalidation is applied again. ``None`` means no earlier invalidation
        is known to have happened: it is applied unconditionally.
        """
        if generation is None:
            applied = self.apply_invalidation(phone, company_id) is not None
            return EnsureOutcome.REAPPLIED if applied else EnsureOutcome.UNAVAILABLE
        keys = self.client_keys(phone, company_id)
        result = self._redis(
            "INVALIDATE_IF_BEHIND",
            keys.masked,
            lambda: self._invalidate_if_behind(
                keys=[keys.full_context, keys.generation],
                args=[self.settings.generation_ttl, generation],
            ),
        )
        if isinstance(result, _Unavailable):
            return EnsureOutcome.UNAVAILABLE
        if not int(result[0]):
            logger.debug("invalidation of %s still in effect", keys.masked)
            return EnsureOutcome.IN_EFFECT
        self._stats.add("invalidations")
        logger.warning("invalidation of %s had been undone: applied again", keys.masked)
        return EnsureOutcome.REAPPLIED

    def current_generation(self, phone: str, company_id: int | str) -> str:
        """The client's generation, for a guarded :meth:`set_cached_full_context`.

        Returns :data:`GENERATION_UNKNOWN` (which no write matches) when Redis
        cannot be read.
        """
        keys = self.client_keys(phone, company_id)
        result = self._redis("GET", keys.masked, lambda: self.client.get(keys.generation))
        if isinstance(result, _Unavailable):
            return GENERATION_UNKNOWN
        return _text(result) if result is not None else "0"

    def load_full_context(
        self, phone: str, company_id: int | str, loader: ContextLoader
    ) -> dict[str, Any]:
        """The spec's "load context": the cache, else ``loader`` once across all callers.

        Concurrent callers that miss the same key wait (at most ``lock_wait``
        seconds) for the one that holds the load lock, then read its result;
        if it dies they load themselves. A result loaded while the context was
        invalidated is returned but not cached. Loader errors propagate.
        """
        normalized, company = self.identify(phone, company_id)
        keys = self.keys.client(company, normalized)
        cached = self._get(keys)
        if isinstance(cached, _Unavailable):
            # Redis just failed: do not spend another timeout on the lease, and
            # without a generation nothing may be written. Just load.
            return self._load(loader, normalized, company, keys)
        if cached is not None:
            return cached
        token = secrets.token_hex(16)
        deadline = self._clock() + self.settings.lock_wait
        delay = _POLL_FIRST
        while True:
            lease = self._redis(
                "LEASE",
                keys.masked,
                lambda: self._lease(keys=keys.lease, args=[token, self._lock_ms]),
            )
            if isinstance(lease, _Unavailable):
                # Without a generation nothing may be written: just load.
                return self._load(loader, normalized, company, keys)
            status, generation = int(lease[0]), _text(lease[1])
            if status == scripts.LEASE_HIT:
                context = self._decode(keys, lease[2])
                if context is not None:
                    self._stats.add("coalesced")
                    return context
                continue  # a corrupt value was removed; try again
            if status == scripts.LEASE_WON:
                return self._load_and_store(loader, normalized, company, keys, generation, token)[0]
            if self._clock() >= deadline:
                logger.info("gave up waiting for the load of %s; loading here", keys.masked)
                return self._load_and_store(loader, normalized, company, keys, generation, "")[0]
            self._sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def warm_full_context(
        self,
        phone: str,
        company_id: int | str,
        loader: ContextLoader,
        refresh_threshold: float | None = None,
    ) -> WarmOutcome:
        """Load and cache the context unless it has more than ``refresh_threshold`` s to live.

        Writes through the same generation guard as :meth:`load_full_context`,
        so an invalidation during the warm-up wins.
        """
        normalized, company = self.identify(phone, company_id)
        keys = self.keys.client(company, normalized)
        threshold = (
            self.settings.warmup_refresh_threshold
            if refresh_threshold is None
            else refresh_threshold
        )
        token = secrets.token_hex(16)
        lease = self._redis(
            "WARM_LEASE",
            keys.masked,
            lambda: self._warm_lease(
                keys=keys.lease, args=[token, self._lock_ms, int(threshold * 1000)]
            ),
        )
        if isinstance(lease, _Unavailable):
            outcome = WarmOutcome.UNAVAILABLE
        elif int(lease[0]) == scripts.LEASE_HIT:
            outcome = WarmOutcome.FRESH
        elif int(lease[0]) == scripts.LEASE_LOCKED:
            outcome = WarmOutcome.BUSY
        else:
            generation = _text(lease[1])
            outcome = self._load_and_store(loader, normalized, company, keys, generation, token)[1]
        self._stats.add(f"warm_{outcome.value}")
        return outcome

    def stats(self) -> CacheStats:
        """This process's counters: hits, misses, hit rate, errors, loads, average load time."""
        return self._stats.snapshot()

    def flush_stats(self) -> bool:
        """Add this process's counts since the last flush to the shared stats hash now.

        Otherwise they go at most every ``stats_flush_interval`` seconds, with a
        cache call. ``False`` if Redis could not be used: the counts are kept.
        """
        return self._stats.flush()

    def _push_stats(self, deltas: Mapping[str, float]) -> bool:
        call = functools.partial(push_deltas, self.client, self.keys.stats, deltas)
        return not isinstance(self._redis("STATS", self.keys.stats, call), _Unavailable)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis_errors.RedisError:
            return False

    def client_keys(self, phone: str, company_id: int | str) -> ClientKeys:
        """Validate the identity and return the client's keys; raises on bad input."""
        normalized, company = self.identify(phone, company_id)
        return self.keys.client(company, normalized)

    # -- internals -----------------------------------------------------------------

    def identify(self, phone: str, company_id: int | str) -> tuple[str, int]:
        """The normalized phone and validated company id; raises on bad input."""
        company = validate_company_id(company_id)
        if not isinstance(phone, str):
            return normalize_phone(phone, self.settings.phone_region), company
        return _normalize(phone, self.settings.phone_region), company

    def _ttl_ms(self, ttl: float | None) -> int:
        if ttl is None:
            return self.settings.full_context_ttl * 1000
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < 2**40:
            raise InvalidTTLError(f"ttl must be a positive number of seconds, got {ttl!r}")
        return max(1, int(ttl * 1000))

    def run_guarded(self, operation: str, target: str, call: Callable[[], T]) -> T:
        """Run a Redis ``call`` through the breaker, logging and error counters.

        For code beside the cache (metrics, tools) that must know whether the
        call happened: raises :class:`CacheUnavailableError` when it did not.
        ``target`` names what is touched, for the log; never a raw phone.
        """
        result = self._redis(operation, target, call)
        if isinstance(result, _Unavailable):
            raise CacheUnavailableError(f"redis {operation} on {target} failed or was skipped")
        return result

    def _redis(self, operation: str, target: str, call: Callable[[], T]) -> T | _Unavailable:
        """Run ``call`` unless the breaker is open; log and swallow Redis errors."""
        if not self.breaker.allow():
            self._stats.add("errors")
            logger.debug("%s %s skipped: circuit breaker open", operation, target)
            return UNAVAILABLE
        try:
            result = call()
        except _TRANSPORT_ERRORS as exc:
            self._stats.add("errors")
            opened = self.breaker.record_failure()
            logger.error("redis %s failed for %s: %s", operation, target, exc)
            if opened:
                logger.error(
                    "redis unreachable: skipping it for %.1f s (circuit breaker open)",
                    self.breaker.cooldown,
                )
            return UNAVAILABLE
        except redis_errors.RedisError as exc:
            self._stats.add("errors")
            self.breaker.record_success()  # the server answered
            logger.error("redis %s failed for %s: %s", operation, target, exc)
            return UNAVAILABLE
        except BaseException:
            # Interrupted (a Celery soft time limit, Ctrl-C): a half-open breaker
            # must not wait for this trial's verdict for ever.
            self.breaker.release_trial()
            raise
        self.breaker.record_success()
        # At most once per stats_flush_interval, after this call's own command
        # succeeded: the counters ride along instead of costing a call of their own.
        self._stats.flush_if_due()
        return result

    def _get(self, keys: ClientKeys) -> dict[str, Any] | _Unavailable | None:
        """The context, None on a miss, or UNAVAILABLE when Redis failed (also a miss)."""
        started = time.perf_counter()
        raw = self._redis("GET", keys.masked, lambda: _bytes(self.client.get(keys.full_context)))
        context = None if isinstance(raw, _Unavailable) else self._decode(keys, raw)
        self._count_lookup(keys, context, raw, started)
        return UNAVAILABLE if isinstance(raw, _Unavailable) else context

    def _decode(self, keys: ClientKeys, raw: bytes | None) -> dict[str, Any] | None:
        if raw is None:
            return None
        try:
            return self.codec.decode(raw)
        except UndecodableValueError as exc:
            self._stats.add("corrupt")
            logger.error("removing undecodable value at %s: %s", keys.masked, exc)
            self._redis("DEL", keys.masked, lambda: self.client.delete(keys.full_context))
            return None

    def _count_lookup(
        self,
        keys: ClientKeys,
        context: dict[str, Any] | None,
        raw: bytes | _Unavailable | None,
        started: float,
    ) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        if context is None:
            self._stats.add("misses")
            logger.debug("cache miss %s in %.1f ms", keys.masked, elapsed_ms)
            return
        self._stats.add("hits")
        size = len(raw) if isinstance(raw, bytes) else 0
        logger.info("cache hit %s in %.1f ms", keys.masked, elapsed_ms)
        logger.debug("cache hit %s: %d bytes stored", keys.masked, size)

    def _load(
        self, loader: ContextLoader, phone: str, company_id: int, keys: ClientKeys
    ) -> dict[str, Any]:
        logger.info("loading %s from the database", keys.masked)
        started = self._clock()
        context = loader(phone, company_id)
        elapsed = self._clock() - started
        self._stats.record_load(elapsed)
        logger.debug("loaded %s in %.1f ms", keys.masked, elapsed * 1000)
        if not isinstance(context, Mapping):
            raise InvalidContextError(
                f"loader returned {type(context).__name__}, not a mapping, for {keys.masked}"
            )
        return context if isinstance(context, dict) else dict(context)

    def _load_and_store(
        self,
        loader: ContextLoader,
        phone: str,
        company_id: int,
        keys: ClientKeys,
        generation: str,
        token: str,
    ) -> tuple[dict[str, Any], WarmOutcome]:
        try:
            context = self._load(loader, phone, company_id, keys)
            value = self.codec.encode(context)
        except BaseException:
            if token:
                self._redis(
                    "RELEASE", keys.masked, lambda: self._release(keys=[keys.lock], args=[token])
                )
            raise
        outcome = self._store_guarded(keys, value, self._ttl_ms(None), generation, token)
        if outcome is WarmOutcome.WRITTEN:
            self._stats.add("sets")
            logger.info("cached %s (%d bytes stored)", keys.masked, len(value))
        return context, outcome

    def _store_guarded(
        self, keys: ClientKeys, value: bytes, ttl_ms: int, generation: str, token: str
    ) -> WarmOutcome:
        result = self._redis(
            "STORE",
            keys.masked,
            lambda: self._store(
                keys=keys.lease,
                args=[generation, value, ttl_ms, token],
            ),
        )
        if isinstance(result, _Unavailable):
            return WarmOutcome.UNAVAILABLE
        if not result:
            self._stats.add("superseded")
            logger.info("not caching %s: invalidated while it was loading", keys.masked)
            return WarmOutcome.SUPERSEDED
        return WarmOutcome.WRITTEN

    # -- the neighbouring stores: dialog context (30 days), client preferences (1 year) ----

    def get_dialog_context(self, phone: str, company_id: int | str) -> dict[str, Any] | None:
        keys = self.client_keys(phone, company_id)
        return self._get_section(keys, keys.dialog)

    def update_dialog_context(
        self, phone: str, company_id: int | str, fields: Mapping[str, Any]
    ) -> bool:
        """Merge ``fields`` into the dialog context and invalidate the full context."""
        keys = self.client_keys(phone, company_id)
        return self._update(keys, keys.dialog, fields, self.settings.dialog_context_ttl)

    def get_client_preferences(self, phone: str, company_id: int | str) -> dict[str, Any] | None:
        keys = self.client_keys(phone, company_id)
        return self._get_section(keys, keys.preferences)

    def update_client_preferences(
        self, phone: str, company_id: int | str, fields: Mapping[str, Any]
    ) -> bool:
        """Merge ``fields`` into the client's preferences and invalidate the full context."""
        keys = self.client_keys(phone, company_id)
        return self._update(keys, keys.preferences, fields, self.settings.preferences_ttl)

    def _get_section(self, keys: ClientKeys, section_key: str) -> dict[str, Any] | None:
        raw = self._redis("HGETALL", keys.masked, lambda: self.client.hgetall(section_key))
        if isinstance(raw, _Unavailable) or not raw:
            return None
        try:
            return {_text(field): orjson.loads(value) for field, value in raw.items()}
        except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
            self._stats.add("corrupt")
            logger.error("removing undecodable section %s of %s: %s", section_key, keys.masked, exc)
            self._redis("DEL", keys.masked, lambda: self.client.delete(section_key))
            return None

    def _update(
        self, keys: ClientKeys, section_key: str, fields: Mapping[str, Any], ttl: int
    ) -> bool:
        if not isinstance(fields, Mapping) or not fields:
            raise InvalidContextError("fields must be a non-empty mapping of str to JSON values")
        args: list[str | bytes | int] = [ttl, self.settings.generation_ttl]
        size = 0
        for name, value in fields.items():
            if not isinstance(name, str):
                raise InvalidContextError(f"field names must be strings, got {name!r}")
            try:
                encoded = orjson.dumps(value)
            except TypeError as exc:
                raise InvalidContextError(f"field {name!r} cannot be encoded: {exc}") from exc
            size += len(encoded)
            args += [name, encoded]
        if size > self.settings.max_context_bytes:
            raise InvalidContextError(f"update of {size} bytes is over the cap")
        result = self._redis(
            "UPDATE",
            keys.masked,
            lambda: self._update_section(
                keys=[section_key, keys.full_context, keys.generation], args=args
            ),
        )
        if isinstance(result, _Unavailable):
            return False
        self._stats.add("invalidations")
        logger.info("updated %d field(s) of %s and invalidated it", len(fields), keys.masked)
        return True
