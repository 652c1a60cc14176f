"""Celery side of ctxcache: invalidation after bookings, VIP warm-up on beat.

``celery -A tasks worker`` / ``celery -A tasks beat`` use :data:`app`.
"""

from . import beat  # noqa: F401  (connects the warm-up at beat start to beat_init)
from .app import (
    INVALIDATE_COMPANY_TASK,
    INVALIDATE_TASK,
    WARM_ALL_TASK,
    WARM_COMPANY_TASK,
    WARM_ONE_TASK,
    app,
    create_app,
)
from .hooks import (
    Booking,
    ClientContext,
    CompanySections,
    InvalidationOutcome,
    InvalidationRoute,
    InvalidationTarget,
    booking_cancelled,
    booking_created,
    company_changed,
    invalidate_now_and_queue,
)

__all__ = [
    "INVALIDATE_COMPANY_TASK",
    "INVALIDATE_TASK",
    "WARM_ALL_TASK",
    "WARM_COMPANY_TASK",
    "WARM_ONE_TASK",
    "Booking",
    "ClientContext",
    "CompanySections",
    "InvalidationOutcome",
    "InvalidationRoute",
    "InvalidationTarget",
    "app",
    "booking_cancelled",
    "booking_created",
    "company_changed",
    "create_app",
    "invalidate_now_and_queue",
]
