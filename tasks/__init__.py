"""Celery side of ctxcache: invalidation after bookings, VIP warm-up on beat.

``celery -A tasks worker`` / ``celery -A tasks beat`` use :data:`app`.
"""

from . import beat  # noqa: F401  (connects the warm-up at beat start to beat_init)
from .app import INVALIDATE_TASK, WARM_ALL_TASK, WARM_ONE_TASK, app, create_app
from .hooks import (
    ClientContext,
    InvalidationOutcome,
    InvalidationRoute,
    InvalidationTarget,
    booking_cancelled,
    booking_created,
    invalidate_now_and_queue,
)

__all__ = [
    "INVALIDATE_TASK",
    "WARM_ALL_TASK",
    "WARM_ONE_TASK",
    "ClientContext",
    "InvalidationOutcome",
    "InvalidationRoute",
    "InvalidationTarget",
    "app",
    "booking_cancelled",
    "booking_created",
    "create_app",
    "invalidate_now_and_queue",
]
