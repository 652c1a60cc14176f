"""Beat's start-up: one warm-up right away.

Beat's first tick of an interval schedule comes a whole interval after it
starts (600 s by default), so after every deploy the VIP contexts would stay
cold that long. On ``beat_init`` one ``warm_vip_contexts`` is queued at once.
Restarting beat often costs nothing: the task's warm-up lock turns away a run
within 90 % of an interval of the previous one.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import beat_init

from . import runtime
from .app import WARM_ALL_TASK
from .hooks import PUBLISH_RETRY_POLICY

__all__: list[str] = []

logger = logging.getLogger("ctxcache.tasks")


@beat_init.connect
def _warm_up_at_start(sender: Any = None, **_: Any) -> None:
    """Queue the first warm-up now instead of one interval from now."""
    if sender is None:
        return
    interval = runtime.settings().warmup_interval
    try:
        sender.app.send_task(
            WARM_ALL_TASK, expires=interval, retry=True, retry_policy=PUBLISH_RETRY_POLICY
        )
    except Exception as exc:  # kombu, socket and broker errors alike; beat goes on
        logger.error(
            "beat started, but the first warm-up could not be queued (%s); "
            "the schedule's first one comes in %g s",
            exc,
            interval,
        )
        return
    logger.info("beat started: first warm-up queued; then one every %g s", interval)
