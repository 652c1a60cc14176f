from __future__ import annotations

from conftest import FakeClock

from ctxcache.core.breaker import BreakerState, CircuitBreaker


def test_opens_after_threshold_and_half_opens_after_cooldown(clock: FakeClock) -> None:
    breaker = CircuitBreaker(3, 5.0, clock=clock)
    assert not breaker.record_failure()
    assert not breaker.record_failure()
    assert breaker.allow()
    assert breaker.record_failure()  # the third opens it
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.2)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # one trial call
    assert not breaker.allow()  # and only one


def test_failed_trial_reopens_for_a_full_cooldown(clock: FakeClock) -> None:
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(4.0)
    assert not breaker.allow()


def test_success_closes_and_resets_the_count(clock: FakeClock) -> None:
    breaker = CircuitBreaker(2, 5.0, clock=clock)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    clock.advance(100)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.allow()
