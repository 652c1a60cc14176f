"""Invalidations Redis refused in a hook, applied again from the same process once it answers.

When a hook's inline call fails, the queued task is the only other carrier of
the invalidation, and kombu's Redis transport loses a message taken by a
worker killed between its BRPOP and its unacked bookkeeping (kombu #305,
#1836). So the booking process keeps what it owes here and a daemon thread
applies it again every ``interval`` seconds, through the cache's circuit
breaker, until Redis takes it. Both carriers must fail for a loss: the message
and this process (it exits before Redis is back).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ctxcache import ContextCache

if TYPE_CHECKING:
    from .hooks import InvalidationTarget

__all__ = ["PendingInvalidations"]

logger = logging.getLogger("ctxcache.tasks")


class PendingInvalidations:
    """What this process owes Redis; thread-safe, at most ``limit`` entries (oldest dropped)."""

    def __init__(
        self,
        cache: ContextCache,
        *,
        interval: float = 1.0,
        limit: int = 10_000,
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        self.cache = cache
        self.interval = interval
        self._on_applied = on_applied
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._owed: collections.deque[InvalidationTarget] = collections.deque(maxlen=limit)
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._owed)

    def add(self, target: InvalidationTarget, *, background: bool = True) -> None:
        """Owe ``target``; with ``background`` a thread retries until nothing is owed."""
        with self._lock:
            if len(self._owed) == self._owed.maxlen:
                dropped = self._owed.popleft()
                logger.error("too many invalidations owed: gave up on %s", dropped.describe())
            self._owed.append(target)
            running = self._thread is not None and self._thread.is_alive()
            if background and not running and not self._closed.is_set():
                self._thread = threading.Thread(
                    target=self._retry_until_done, name="ctxcache-owed-invalidations", daemon=True
                )
                self._thread.start()

    def retry(self) -> int:
        """Apply each owed invalidation once, keeping those Redis refused; return how many took."""
        with self._lock:
            batch = list(self._owed)
            self._owed.clear()
        applied = 0
        for position, target in enumerate(batch):
            if target.apply(self.cache) is None:
                with self._lock:  # Redis is still away: keep this and the rest, in order
                    self._owed.extendleft(reversed(batch[position:]))
                break
            applied += 1
            logger.info("owed invalidation of %s applied", target.describe())
            if self._on_applied is not None:
                self._on_applied()
        return applied

    def close(self) -> None:
        """Stop retrying in the background (what is owed stays, for :meth:`retry`)."""
        self._closed.set()

    def _retry_until_done(self) -> None:
        while not self._closed.wait(self.interval):
            self.retry()
            with self._lock:
                if not self._owed:
                    self._thread = None
                    return
