"""Booking and catalogue hooks: call them after the database commit.

A booking changes the client's own part and the company's availability (the
``CTXCACHE_BOOKING_SECTIONS``, for every client of the company); a catalogue
edit changes named company sections (:func:`company_changed`). Each hook
applies the invalidation inline first (one bounded Redis round trip), so in
the normal case every affected context is fresh when the hook returns. It then
queues a safety-net task carrying the generation that call produced; a worker
checks that the invalidation still holds and applies it again if it was lost
(a failover, a restore) or never happened (Redis failed here). An invalidation
Redis refused is also owed by this process, which applies it again once Redis
answers (:mod:`tasks.pending`). The hook raises
:class:`~ctxcache.InvalidationFailedError` when neither Redis nor the broker
took it: an invalidation is never dropped silently.

:func:`invalidate_now_and_queue` does this for any :class:`InvalidationTarget`
(what to invalidate, and which task checks it), so that other things to
invalidate plug into the same two steps.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from celery import Celery

from ctxcache import ContextCache, InvalidationFailedError, mask_phone

from . import runtime
from .app import INVALIDATE_COMPANY_TASK, INVALIDATE_TASK
from .app import app as default_app
from .sealed import seal_phone

__all__ = [
    "Booking",
    "ClientContext",
    "CompanySections",
    "InvalidationOutcome",
    "InvalidationRoute",
    "InvalidationTarget",
    "booking_cancelled",
    "booking_created",
    "company_changed",
    "invalidate_now_and_queue",
]

logger = logging.getLogger("ctxcache.tasks")

# Bounded, so a dead broker delays the booking by about a second, not minutes.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


class InvalidationOutcome(enum.Enum):
    """What a booking hook did; when it could do neither, it raises instead."""

    INLINE_AND_QUEUED = "inline_and_queued"  # applied here; a worker checks that it holds
    INLINE_ONLY = "inline_only"  # the broker failed: applied here, no safety net
    QUEUED_ONLY = "queued_only"  # Redis failed here: a worker applies it, retrying
    # The first version's names: the broker failed / only a worker will apply it.
    INLINE = "inline_only"
    QUEUED = "queued_only"

    @property
    def applied(self) -> bool:
        """Whether the context was invalidated before the hook returned."""
        return self is not InvalidationOutcome.QUEUED_ONLY

    @property
    def queued(self) -> bool:
        """Whether a worker will check (or apply) the invalidation."""
        return self is not InvalidationOutcome.INLINE_ONLY


InvalidationRoute = InvalidationOutcome  # the first version's name


class InvalidationTarget(Protocol):
    """Something a hook invalidates: applied inline, then checked by a queued task."""

    def apply(self, cache: ContextCache) -> Any:
        """Invalidate now. Return a JSON-ready receipt for the safety net, or None on failure."""
        ...

    def safety_net(self, receipt: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        """The task that checks the invalidation: its name, args and kwargs."""
        ...

    def describe(self) -> str:
        """What is invalidated, for logs and errors; phones masked."""
        ...


@dataclass(frozen=True, slots=True)
class ClientContext:
    """One client's cached full context; build it with :meth:`of` to validate the input."""

    phone: str  # normalized (E.164)
    company_id: int

    @classmethod
    def of(cls, phone: str, company_id: int | str) -> ClientContext:
        """Validated and normalized; bad input raises here, before anything is done."""
        return cls(*runtime.get_cache().identify(phone, company_id))

    def apply(self, cache: ContextCache) -> int | None:
        return cache.apply_invalidation(self.phone, self.company_id)

    def safety_net(self, receipt: int | None) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        # Without a generation the message has the first version's shape, which
        # workers of every version apply unconditionally (rolling deploys).
        kwargs = {} if receipt is None else {"generation": receipt}
        return INVALIDATE_TASK, (self.phone, self.company_id), kwargs

    def describe(self) -> str:
        return f"{mask_phone(self.phone)} / {self.company_id}"


@dataclass(frozen=True, slots=True)
class Booking:
    """What a booking changes: a client's part and its company's availability sections."""

    phone: str  # normalized (E.164)
    company_id: int

    @classmethod
    def of(cls, phone: str, company_id: int | str) -> Booking:
        """Validated and normalized; bad input raises here, before anything is done."""
        return cls(*runtime.get_cache().identify(phone, company_id))

    def apply(self, cache: ContextCache) -> dict[str, Any] | None:
        done = cache.apply_booking_invalidation(self.phone, self.company_id)
        return None if done is None else done.as_dict()

    def safety_net(
        self, receipt: dict[str, Any] | None
    ) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        # Sections the inline call did not take are sent without a generation:
        # the worker invalidates them outright.
        sections: dict[str, int | None] = dict.fromkeys(_booking_sections())
        if receipt is not None:
            sections.update(receipt["sections"])
        kwargs = {"generation": None if receipt is None else receipt["client"]}
        return INVALIDATE_TASK, (self.phone, self.company_id), {**kwargs, "sections": sections}

    def describe(self) -> str:
        return f"{mask_phone(self.phone)} / {self.company_id} and its availability"


@dataclass(frozen=True, slots=True)
class CompanySections:
    """Company sections shared by every client of a company (a catalogue edit)."""

    company_id: int
    sections: tuple[str, ...]

    @classmethod
    def of(cls, company_id: int | str, sections: Iterable[str] | None) -> CompanySections:
        """Validated: unknown sections and bad ids raise here, before anything is done."""
        cache = runtime.get_cache()
        names = cache.core.layout.company_names(sections)
        return cls(cache.core.identify_company(company_id).company_id, names)

    def apply(self, cache: ContextCache) -> dict[str, Any] | None:
        done = cache.apply_company_invalidation(self.company_id, self.sections)
        return None if done is None else done.as_dict()

    def safety_net(
        self, receipt: dict[str, Any] | None
    ) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        sections: dict[str, int | None] = dict.fromkeys(self.sections)
        if receipt is not None:
            sections.update(receipt["sections"])
        return INVALIDATE_COMPANY_TASK, (self.company_id, sections), {}

    def describe(self) -> str:
        return f"company {self.company_id} ({', '.join(self.sections)})"


def _booking_sections() -> tuple[str, ...]:
    return runtime.get_cache().core.layout.booking_sections


def booking_created(
    phone: str, company_id: int | str, *, app: Celery | None = None
) -> InvalidationOutcome:
    """Invalidate the client's part and the company's availability after a booking was made.

    Call it after the booking's database commit.
    """
    return invalidate_now_and_queue(Booking.of(phone, company_id), "booking created", app)


def booking_cancelled(
    phone: str, company_id: int | str, *, app: Celery | None = None
) -> InvalidationOutcome:
    """Invalidate the client's part and the company's availability after a cancellation."""
    return invalidate_now_and_queue(Booking.of(phone, company_id), "booking cancelled", app)


def company_changed(
    company_id: int | str, sections: Iterable[str] | None = None, *, app: Celery | None = None
) -> InvalidationOutcome:
    """Invalidate company sections (``None``: all) after a catalogue edit was committed.

    A price change, a new staff member, a new service: every client of the
    company reloads the named sections on its next read.
    """
    target = CompanySections.of(company_id, sections)
    return invalidate_now_and_queue(target, "company changed", app)


def invalidate_now_and_queue(
    target: InvalidationTarget, event: str, app: Celery | None = None
) -> InvalidationOutcome:
    """Apply ``target``'s invalidation inline, then queue its safety net; say what happened.

    Raises :class:`~ctxcache.InvalidationFailedError` when Redis and the broker
    both failed. ``event`` names the cause in the log lines.
    """
    cache = runtime.get_cache()
    what = target.describe()
    receipt = target.apply(cache)  # bounded: the cache's socket timeout, or the open breaker
    if receipt is None:
        # Owed: this process applies it again once Redis answers, besides the queued task.
        runtime.get_pending().add(target)
        logger.error("%s for %s: Redis did not take the invalidation; queuing it", event, what)
    name, args, kwargs = target.safety_net(receipt)
    if name == INVALIDATE_TASK:  # (phone, company_id, ...): the phone goes sealed if it can
        args = (seal_phone(cache, args[0], args[1]), *args[1:])
    try:
        (app or default_app).tasks[name].apply_async(
            args, kwargs, retry=True, retry_policy=PUBLISH_RETRY_POLICY
        )
    except Exception as exc:  # any failure to publish: kombu, socket, broker errors
        queued = False
        logger.error("%s for %s: could not queue the safety net (%s)", event, what, exc)
    else:
        queued = True
    if receipt is None and not queued:
        runtime.count(cache, "hook_failed")
        logger.critical(
            "%s for %s: Redis and the broker both failed: only this process still owes the"
            " invalidation, and loses it if it exits before Redis answers",
            event,
            what,
        )
        raise InvalidationFailedError(
            f"{event}: neither Redis nor the broker took the invalidation of {what};"
            " this process applies it if Redis answers again before it exits"
        )
    if receipt is None:
        outcome = InvalidationOutcome.QUEUED_ONLY
    else:
        outcome = (
            InvalidationOutcome.INLINE_AND_QUEUED if queued else InvalidationOutcome.INLINE_ONLY
        )
    runtime.count(cache, f"hook_{outcome.value}")
    logger.info("%s for %s: invalidation %s", event, what, outcome.value)
    return outcome
