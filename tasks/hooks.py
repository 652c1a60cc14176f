"""Booking hooks: call them after the booking's database commit.

They queue the invalidation on the broker; if publishing fails they
invalidate inline, and if that fails too they raise. An invalidation is
never dropped silently.
"""

from __future__ import annotations

import enum
import logging

from celery import Celery

from ctxcache import InvalidationFailedError, mask_phone

from . import runtime
from .app import INVALIDATE_TASK
from .app import app as default_app

__all__ = ["InvalidationRoute", "booking_cancelled", "booking_created"]

logger = logging.getLogger("ctxcache.tasks")

# Bounded, so a dead broker delays the booking by about a second, not minutes.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


class InvalidationRoute(enum.Enum):
    QUEUED = "queued"  # a worker will apply it
    INLINE = "inline"  # the broker failed; applied here and now


def booking_created(
    phone: str, company_id: int | str, *, app: Celery | None = None
) -> InvalidationRoute:
    """Invalidate the client's context after a booking was created (and committed)."""
    return _invalidate_after(phone, company_id, "booking created", app)


def booking_cancelled(
    phone: str, company_id: int | str, *, app: Celery | None = None
) -> InvalidationRoute:
    """Invalidate the client's context after a booking was cancelled (and committed)."""
    return _invalidate_after(phone, company_id, "booking cancelled", app)


def _invalidate_after(
    phone: str, company_id: int | str, event: str, app: Celery | None
) -> InvalidationRoute:
    if app is None:
        app = default_app
    cache = runtime.get_cache()
    normalized, company = cache.identify(phone, company_id)  # bad input raises here
    masked = mask_phone(normalized)
    try:
        app.tasks[INVALIDATE_TASK].apply_async(
            (normalized, company), retry=True, retry_policy=PUBLISH_RETRY_POLICY
        )
    except Exception as exc:  # any failure to publish: kombu, socket, broker errors
        logger.error(
            "%s for %s / %s: could not queue the invalidation (%s); invalidating inline",
            event,
            masked,
            company,
            exc,
        )
    else:
        logger.info("%s for %s / %s: invalidation queued", event, masked, company)
        return InvalidationRoute.QUEUED
    if cache.invalidate_cached_context(normalized, company):
        return InvalidationRoute.INLINE
    logger.critical(
        "%s for %s / %s: invalidation LOST: broker and Redis both failed", event, masked, company
    )
    raise InvalidationFailedError(
        f"{event}: neither the broker nor Redis took the invalidation of {masked} / {company}"
    )
