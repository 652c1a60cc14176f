"""In-process counters behind ``ContextCache.stats()``, pushed to Redis in batches.

Each operation only bumps a counter in memory. At most once per flush interval
the counts added since the last flush go to one Redis hash (``KeyLayout.stats``)
in a single MULTI/EXEC round trip, so every process's counts add up there and
:mod:`ctxcache.ops.metrics` can report the whole fleet. A flush that fails keeps
its counts for the next one.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Final

__all__ = [
    "COUNTER_NAMES",
    "FLOAT_FIELDS",
    "HOOK_OUTCOMES",
    "LOAD_BUCKETS",
    "SAFETY_NET_OUTCOMES",
    "CacheStats",
    "StatsRecorder",
    "bound_label",
    "bucket_field",
    "parse_bucket_field",
    "stats_arguments",
]

# Upper bounds (seconds) of the load-time histogram; the last one catches everything.
LOAD_BUCKETS: Final[tuple[float, ...]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    math.inf,
)
# Hash fields of the histogram: "load_le:<bound>", each holding the loads of that
# bucket alone (not cumulative), so the fields of many processes simply add up.
BUCKET_FIELD_PREFIX: Final = "load_le:"
FLOAT_FIELDS: Final = frozenset({"load_seconds"})  # HINCRBYFLOAT; the rest HINCRBY
# What a booking hook did with an invalidation (tasks.InvalidationOutcome's values,
# and "failed" when it raised), and what the queued safety net found
# (EnsureOutcome's values): counted as hook_<outcome> and safety_net_<outcome>.
HOOK_OUTCOMES: Final = ("inline_and_queued", "inline_only", "queued_only", "failed")
SAFETY_NET_OUTCOMES: Final = ("in_effect", "reapplied", "unavailable")

logger = logging.getLogger("ctxcache")


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of one process's counters (the spec's metrics and a few more)."""

    hits: int = 0  # whole contexts found
    misses: int = 0
    errors: int = 0  # Redis errors and timeouts that a call met
    skipped: int = 0  # calls not made because the circuit breaker was open
    corrupt: int = 0  # values that could not be decoded (removed, counted as misses)
    corrupt_fields: int = 0  # dialog / preference fields that could not be decoded (skipped)
    # Of those two: encrypted values that failed to open (tampered, copied, unknown
    # key) and plain ones refused while encryption is required.
    undecryptable: int = 0
    loads: int = 0  # loader calls
    load_seconds: float = 0.0
    sets: int = 0  # parts written
    superseded: int = 0  # writes dropped because an invalidation came first
    invalidations: int = 0  # parts invalidated
    unacknowledged: int = 0  # invalidations no replica acknowledged in time (retried)
    updates: int = 0  # partial updates of a section
    coalesced: int = 0  # misses served by another caller's load (stampede avoided)
    uncacheable: int = 0  # loaded contexts returned but not cached (JSON cannot hold them)
    # The in-process cache: parts served without decoding, parts fetched, parts
    # pushed out by the byte bound, and the bytes held (summed over processes).
    l1_hits: int = 0
    l1_misses: int = 0
    l1_evictions: int = 0
    l1_bytes: int = 0
    # Early refreshes started in the background: XFetch's before a part expired,
    # and those of stale parts served in their grace (CTXCACHE_STALE_GRACE).
    early_refreshes: int = 0
    # Of the hits: served with a part past its TTL, in its stale grace.
    stale_hits: int = 0
    # Per scope: a client's own part, and the company sections.
    client_hits: int = 0
    client_misses: int = 0
    company_hits: int = 0
    company_misses: int = 0
    # Warm-up outcomes (see WarmOutcome).
    warm_written: int = 0
    warm_fresh: int = 0
    warm_busy: int = 0
    warm_superseded: int = 0
    warm_unavailable: int = 0
    warm_unknown: int = 0
    # Booking hooks (see HOOK_OUTCOMES) and the queued safety net (SAFETY_NET_OUTCOMES).
    hook_inline_and_queued: int = 0
    hook_inline_only: int = 0
    hook_queued_only: int = 0
    hook_failed: int = 0
    hook_applied_later: int = 0  # refused by Redis in a hook, applied later by its process
    safety_net_in_effect: int = 0
    safety_net_reapplied: int = 0
    safety_net_unavailable: int = 0

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    @property
    def miss_rate(self) -> float:
        return self.misses / self.lookups if self.lookups else 0.0

    @property
    def average_load_seconds(self) -> float:
        return self.load_seconds / self.loads if self.loads else 0.0

    def as_dict(self) -> dict[str, float]:
        data: dict[str, float] = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(
            hit_rate=self.hit_rate,
            miss_rate=self.miss_rate,
            average_load_seconds=self.average_load_seconds,
        )
        return data


# The counters' hash fields are CacheStats's field names; only these are floats.
COUNTER_NAMES: Final = tuple(f.name for f in fields(CacheStats))


def bound_label(bound: float) -> str:
    """A bucket bound as Prometheus writes it in ``le``: ``"0.005"``, ``"1.0"``, ``"+Inf"``."""
    return "+Inf" if bound == math.inf else repr(float(bound))


def bucket_field(bound: float) -> str:
    """The hash field of the histogram bucket with upper bound ``bound``."""
    return BUCKET_FIELD_PREFIX + bound_label(bound)


def parse_bucket_field(name: str) -> float | None:
    """The upper bound a hash field names, or None if it is not a bucket field."""
    if not name.startswith(BUCKET_FIELD_PREFIX):
        return None
    try:
        bound = float(name[len(BUCKET_FIELD_PREFIX) :])
    except ValueError:
        return None
    return None if math.isnan(bound) else bound


_BUCKET_FIELDS: Final = tuple(bucket_field(bound) for bound in LOAD_BUCKETS)


def stats_arguments(deltas: Mapping[str, float]) -> list[str | float]:
    """ARGV of the ``PUSH_STATS`` script: field, ``i`` or ``f``, amount, ..."""
    args: list[str | float] = []
    for name, amount in deltas.items():
        if name in FLOAT_FIELDS:
            args += [name, "f", repr(float(amount))]
        else:
            args += [name, "i", int(amount)]
    return args


class StatsRecorder:
    """Thread-safe counters; ``snapshot()`` returns a :class:`CacheStats`.

    Besides the totals since the process started, the recorder keeps the
    counts added since they were last taken for a push. The client takes
    them (:meth:`take_due`, at most once per ``interval`` seconds of
    ``clock``) to send along with a call it makes anyway, and gives them back
    (:meth:`restore`) if that call failed, so nothing is lost or counted twice.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, interval: float = 10.0):
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        names = (*COUNTER_NAMES, *_BUCKET_FIELDS)
        self._counts: dict[str, float] = dict.fromkeys(names, 0)
        self._pending: dict[str, float] = dict.fromkeys(names, 0)
        self._next_push = clock() + interval

    def add(self, name: str, amount: float = 1) -> None:
        with self._lock:
            self._counts[name] += amount
            self._pending[name] += amount

    def record_load(self, seconds: float) -> None:
        bucket = _BUCKET_FIELDS[bisect.bisect_left(LOAD_BUCKETS, seconds)]
        with self._lock:
            for counts in (self._counts, self._pending):
                counts["loads"] += 1
                counts["load_seconds"] += seconds
                counts[bucket] += 1

    def snapshot(self) -> CacheStats:
        with self._lock:
            counts = {name: self._counts[name] for name in COUNTER_NAMES}
        load_seconds = counts.pop("load_seconds")
        return CacheStats(load_seconds=load_seconds, **{k: int(v) for k, v in counts.items()})

    def load_buckets(self) -> dict[float, int]:
        """This process's load-time histogram: cumulative counts by upper bound."""
        with self._lock:
            counts = [int(self._counts[name]) for name in _BUCKET_FIELDS]
        total = 0
        cumulative: dict[float, int] = {}
        for bound, count in zip(LOAD_BUCKETS, counts, strict=True):
            total += count
            cumulative[bound] = total
        return cumulative

    def pending(self) -> dict[str, float]:
        """The non-zero counts not taken for a push yet, by hash field."""
        with self._lock:
            return {name: value for name, value in self._pending.items() if value}

    def take_due(self) -> dict[str, float] | None:
        """The pending counts if ``interval`` has passed since they were last taken; else None.

        Cheap when not due. Only one caller gets them; they are cleared here
        and must be given back with :meth:`restore` if they could not be pushed.
        """
        if self._clock() < self._next_push:
            return None
        return self.take(due_only=True)

    def take(self, *, due_only: bool = False) -> dict[str, float] | None:
        """The pending counts (cleared here), or None if there are none."""
        with self._lock:
            now = self._clock()
            if due_only and now < self._next_push:
                return None  # another thread took them first
            self._next_push = now + self.interval
            deltas = {name: value for name, value in self._pending.items() if value}
            for name in deltas:
                self._pending[name] = 0
        return deltas or None

    def restore(self, deltas: Mapping[str, float]) -> None:
        """Give back counts that :meth:`take` handed out but could not be pushed."""
        with self._lock:
            for name, value in deltas.items():
                self._pending[name] += value
