"""The cache's state and its one gate to Redis, without I/O.

:class:`CacheCore` holds what every operation needs (settings, key layout,
section layout, codec, circuit breaker, counters) and :meth:`CacheCore.redis`,
through which every flow sends its commands: it skips Redis while the
breaker is open, turns failures into :data:`UNAVAILABLE` (fail-open), and
lets the process's counters ride along with a call it makes anyway.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random as _random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from redis import exceptions as redis_errors

from ctxcache.core.breaker import CircuitBreaker
from ctxcache.core.crypto import ValueCipher, derived_key
from ctxcache.core.keys import ClientKeys, CompanyKeys, KeyLayout, validate_company_id
from ctxcache.core.l1 import L1Cache
from ctxcache.core.layout import SectionLayout
from ctxcache.core.phone import normalize_phone
from ctxcache.core.replication import ReplicaPolicy
from ctxcache.core.scripts import PUSH_STATS
from ctxcache.core.stats import StatsRecorder, stats_arguments
from ctxcache.core.steps import Command, Flow, RoundTrip
from ctxcache.core.wire import JsonDefault, WireCodec
from ctxcache.errors import InvalidTTLError
from ctxcache.settings import CacheSettings
from ctxcache.urls import parse_cache_url

__all__ = ["UNAVAILABLE", "CacheCore", "Identity", "Unavailable"]

logger = logging.getLogger("ctxcache")

# Transport failures count towards the breaker; other Redis errors (a server
# that answered with an error) are logged but say nothing about reachability.
# A reply that is not Redis protocol (wrong port, TLS on one side only) is a
# reachability problem too.
_TRANSPORT_ERRORS: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.InvalidResponse,
)
_MAX_TTL_SECONDS: Final = 2**40


class Unavailable:
    """Returned by :meth:`CacheCore.redis` when Redis could not be used."""

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE: Final = Unavailable()


@functools.lru_cache(maxsize=8192)
def _normalize(phone: str, region: str) -> str:
    return normalize_phone(phone, region)


class Identity:
    """A validated client (or, without a phone, a company): ids and their keys."""

    __slots__ = ("_client", "company", "company_id", "phone")

    def __init__(
        self, phone: str | None, company_id: int, client: ClientKeys | None, company: CompanyKeys
    ) -> None:
        self.phone = phone
        self.company_id = company_id
        self._client = client
        self.company = company

    @property
    def client(self) -> ClientKeys:
        """The client's keys; only flows about a client ask for them."""
        if self._client is None:
            raise TypeError("a company-only identity has no client keys")
        return self._client

    @property
    def target(self) -> str:
        """What logs name: the client's key with the phone masked, or the company."""
        return self._client.masked if self._client is not None else self.company.label


class CacheCore:
    """Settings, layouts, codec, breaker and counters shared by every flow of one cache."""

    def __init__(
        self,
        settings: CacheSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        layout: SectionLayout | None = None,
        json_default: JsonDefault | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        secret = settings.key_secret_bytes()
        self.keys = KeyLayout(settings.key_prefix, secret)
        self.layout = layout if layout is not None else settings.section_layout()
        value_keys = settings.encryption_key_list()
        cipher = ValueCipher(value_keys) if value_keys else None
        # VIP members carry phones the warm-up needs back: sealed with the value keys,
        # or (hashed keys alone) a key derived from the key secret.
        self.member_cipher = cipher
        if cipher is None and secret is not None:
            self.member_cipher = ValueCipher([derived_key(secret, "vip members")])
        self.codec = WireCodec(
            cipher=cipher,
            require_encryption=settings.require_encryption,
            compression_threshold=settings.compression_threshold,
            compression_level=settings.compression_level,
            max_context_bytes=settings.max_context_bytes,
            default=json_default if json_default is not None else settings.resolve_json_default(),
        )
        self.breaker = CircuitBreaker(
            settings.breaker_threshold, settings.breaker_cooldown, clock=clock
        )
        self.stats = StatsRecorder(clock=clock, interval=settings.stats_flush_interval)
        self.l1 = L1Cache(settings.l1_max_bytes, settings.l1_mode, count=self.stats.add)
        self.lock_ms = int(settings.lock_ttl * 1000)
        # Parts outlive their TTL by this much in Redis (stale-while-revalidate).
        self.grace_ms = int(settings.stale_grace * 1000)
        # Uniform in (0, 1], for the early-refresh draw; tests inject their own.
        self.random = random if random is not None else lambda: 1.0 - _random.random()  # noqa: S311 - not a secret
        self.refreshing: set[str] = set()  # parts this process is refreshing now
        self.refreshing_lock = threading.Lock()
        # A Cluster waits for replicas slot by slot; the client shell may correct this.
        self.cluster = parse_cache_url(settings.effective_redis_url).topology == "cluster"
        self.replicas = ReplicaPolicy(self)

    # -- input ----------------------------------------------------------------------

    def identify(self, phone: str, company_id: int | str) -> Identity:
        """The validated client; raises a ``ValueError`` subclass on bad input."""
        company = validate_company_id(company_id)
        region = self.settings.phone_region
        normalized = _normalize(phone, region) if isinstance(phone, str) else normalize_phone(phone)
        return Identity(
            normalized,
            company,
            self.keys.client(company, normalized),
            self.keys.company(company),
        )

    def identify_company(self, company_id: int | str) -> Identity:
        """A validated company, for flows about its sections alone."""
        company = validate_company_id(company_id)
        return Identity(None, company, None, self.keys.company(company))

    def ttl_ms(self, ttl: float | None) -> int:
        """A TTL in ms (the default 12 h for ``None``); raises :class:`InvalidTTLError`."""
        if ttl is None:
            return self.settings.full_context_ttl * 1000
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise InvalidTTLError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if not 0 < ttl < _MAX_TTL_SECONDS:
            raise InvalidTTLError(f"ttl must be a positive number of seconds, got {ttl!r}")
        return max(1, int(ttl * 1000))

    def stored_ms(self, ttl: float | None) -> int:
        """The TTL a part is written with: :meth:`ttl_ms` plus the stale grace.

        Reads subtract the grace again (:meth:`logical_ttl`): past its TTL a
        part is stale, still served by a load-through read while it refreshes.
        """
        return self.ttl_ms(ttl) + self.grace_ms

    def logical_ttl(self, pttl_ms: int) -> float | None:
        """Seconds a part has left before it is stale, from its PTTL (``None``: no expiry).

        Negative while the part is in its grace.
        """
        return (pttl_ms - self.grace_ms) / 1000 if pttl_ms >= 0 else None

    # -- the gate to Redis ----------------------------------------------------------

    def redis(
        self, operation: str, target: str, commands: Sequence[Command]
    ) -> Flow[list[Any] | Unavailable]:
        """Send ``commands`` in one round trip unless the breaker is open.

        Returns their results, or :data:`UNAVAILABLE` (logged and counted)
        when Redis failed or was skipped. Once per stats interval the
        process's counters go along in the same round trip.
        """
        if not self.breaker.allow():
            self.stats.add("skipped")  # not an error of its own: counted apart
            logger.debug("%s %s skipped: circuit breaker open", operation, target)
            return UNAVAILABLE
        deltas = self.stats.take_due()
        sent = tuple(commands)
        if deltas:
            sent += (self._stats_command(deltas),)
        try:
            results = yield from self._send(sent, operation, target)
            failure = next((r for r in results[: len(commands)] if isinstance(r, Exception)), None)
            if failure is not None:
                raise failure
        except _TRANSPORT_ERRORS as exc:
            self._failed(deltas)
            opened = self.breaker.record_failure()
            logger.error("redis %s failed for %s: %s", operation, target, exc)
            if opened:
                logger.error(
                    "redis unreachable: skipping it for %.1f s (circuit breaker open)",
                    self.breaker.cooldown,
                )
            return UNAVAILABLE
        except redis_errors.RedisError as exc:
            self._failed(deltas)
            self.breaker.record_success()  # the server answered
            logger.error("redis %s failed for %s: %s", operation, target, exc)
            return UNAVAILABLE
        except BaseException:
            # Interrupted (a Celery soft time limit, Ctrl-C): a half-open breaker
            # must not wait for this trial's verdict for ever.
            if deltas:
                self.stats.restore(deltas)
            self.breaker.release_trial()
            raise
        self.breaker.record_success()
        if deltas and isinstance(results[-1], Exception):
            self.stats.restore(deltas)
            logger.error("could not push the cache stats: %s", results[-1])
        return results[: len(commands)]

    @staticmethod
    def _send(commands: tuple[Command, ...], operation: str, target: str) -> Flow[list[Any]]:
        """One round trip; a script the server does not know (restart, failover) is sent again
        with its source. Results hold an exception in place of each command that failed."""
        results: list[Any] = yield RoundTrip(commands, operation, target)
        unknown = [i for i, r in enumerate(results) if isinstance(r, redis_errors.NoScriptError)]
        if unknown:
            # A WAIT counts replicas of the writes before it: after scripts sent again, again.
            unknown += [i for i, c in enumerate(commands) if c.name == "WAIT"]
            again = tuple(dataclasses.replace(commands[i], send_source=True) for i in unknown)
            retried: list[Any] = yield RoundTrip(again, operation, target)
            for i, result in zip(unknown, retried, strict=True):
                results[i] = result
        return results

    def flush_stats(self) -> Flow[bool]:
        """Push this process's counts since the last push now; ``False`` if Redis failed."""
        deltas = self.stats.take()
        if not deltas:
            return True
        try:
            results = yield from self._send((self._stats_command(deltas),), "STATS", "stats")
            if isinstance(results[0], Exception):
                raise results[0]
        except redis_errors.RedisError as exc:
            self.stats.restore(deltas)
            logger.error("could not push the cache stats: %s", exc)
            return False
        except BaseException:
            self.stats.restore(deltas)
            raise
        return True

    def _stats_command(self, deltas: dict[str, float]) -> Command:
        return Command("PUSH_STATS", tuple(stats_arguments(deltas)), PUSH_STATS, (self.keys.stats,))

    def _failed(self, deltas: dict[str, float] | None) -> None:
        self.stats.add("errors")
        if deltas:
            self.stats.restore(deltas)
