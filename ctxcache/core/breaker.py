"""A circuit breaker, so that requests do not each pay the socket timeout while Redis is down."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    CLOSED = "closed"  # Redis is used
    OPEN = "open"  # Redis is skipped until the cool-down ends
    HALF_OPEN = "half_open"  # one trial call is let through


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures, for ``cooldown`` seconds.

    After the cool-down a single trial call goes through: success closes the
    breaker, failure opens it for another cool-down. Thread-safe; time comes
    from ``clock`` so tests can move it.
    """

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allow(self) -> bool:
        """Whether a call to Redis may be made now."""
        with self._lock:
            state = self._state()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.OPEN or self._trial_in_flight:
                return False
            self._trial_in_flight = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False

    def release_trial(self) -> None:
        """The trial call ended without an answer either way (it was interrupted)."""
        with self._lock:
            self._trial_in_flight = False

    def record_failure(self) -> bool:
        """Count a failure; return True if this one opened the breaker."""
        with self._lock:
            self._trial_in_flight = False
            self._failures += 1
            was_open = self._opened_at is not None
            if was_open or self._failures >= self.threshold:
                self._opened_at = self._clock()
                return not was_open
            return False
