"""In-process counters behind ``ContextCache.stats()``; no Redis round trip per operation."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields

__all__ = ["CacheStats", "StatsRecorder"]


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of one process's counters (the spec's metrics and a few more)."""

    hits: int = 0
    misses: int = 0
    errors: int = 0  # Redis errors and timeouts, and calls skipped by the open breaker
    corrupt: int = 0  # values that could not be decoded (removed, counted as misses)
    loads: int = 0  # loader calls
    load_seconds: float = 0.0
    sets: int = 0  # values written
    superseded: int = 0  # writes dropped because an invalidation came first
    invalidations: int = 0
    coalesced: int = 0  # misses served by another caller's load (stampede avoided)
    # Warm-up outcomes (see WarmOutcome).
    warm_written: int = 0
    warm_fresh: int = 0
    warm_busy: int = 0
    warm_superseded: int = 0
    warm_unavailable: int = 0

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


class StatsRecorder:
    """Thread-safe counters; ``snapshot()`` returns a :class:`CacheStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, float] = {f.name: 0 for f in fields(CacheStats)}

    def add(self, name: str, amount: float = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def record_load(self, seconds: float) -> None:
        with self._lock:
            self._counts["loads"] += 1
            self._counts["load_seconds"] += seconds

    def snapshot(self) -> CacheStats:
        with self._lock:
            counts = dict(self._counts)
        load_seconds = counts.pop("load_seconds")
        return CacheStats(load_seconds=load_seconds, **{k: int(v) for k, v in counts.items()})
