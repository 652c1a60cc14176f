"""Celery side of ctxcache: invalidation after bookings, VIP warm-up on beat.

``celery -A tasks worker`` / ``celery -A tasks beat`` use :data:`app`.
"""

from . import beat  # noqa: F401  (connects the warm-up at beat start to beat_init)
from .app import INVALIDATE_TASK, WARM_ALL_TASK, WARM_ONE_TASK, app, create_app
from .hooks import InvalidationRoute, booking_cancelled, booking_created

__all__ = [
    "INVALIDATE_TASK",
    "WARM_ALL_TASK",
    "WARM_ONE_TASK",
    "InvalidationRoute",
    "app",
    "booking_cancelled",
    "booking_created",
    "create_app",
]
