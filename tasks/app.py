"""The Celery app and ctxcache's three tasks.

``create_app()`` builds an app from ``celeryconfig`` (plus overrides) and
registers the tasks on it; the module-level ``app`` is what
``celery -A tasks worker`` and ``celery -A tasks beat`` use.
"""

from __future__ import annotations

import logging
import math
import secrets
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from celery import Celery, Task, group
from redis import exceptions as redis_errors

from ctxcache import (
    CacheUnavailableError,
    ConfigurationError,
    ContextCache,
    CtxCacheError,
    EnsureOutcome,
    Invalidation,
    SectionedLoader,
    mask_phone,
)
from ctxcache.errors import MissingKeyError, UndecryptableValueError
from ctxcache.settings import CacheSettings

from . import runtime, transport  # noqa: F401  (transport: per-worker broker options)
from .sealed import open_phone, seal_phone

__all__ = [
    "INVALIDATE_COMPANY_TASK",
    "INVALIDATE_TASK",
    "WARM_ALL_TASK",
    "WARM_COMPANY_TASK",
    "WARM_ONE_TASK",
    "app",
    "create_app",
    "retry_schedule",
]

logger = logging.getLogger("ctxcache.tasks")

INVALIDATE_TASK = "ctxcache.invalidate_context"
INVALIDATE_COMPANY_TASK = "ctxcache.invalidate_company"
WARM_ALL_TASK = "ctxcache.warm_vip_contexts"
WARM_COMPANY_TASK = "ctxcache.warm_company"
WARM_ONE_TASK = "ctxcache.warm_context"

# Retries of an invalidation go on for about a day, longer than the 12 h TTL
# after which a stale context is gone anyway. Each delay stays well under the
# shorter visibility timeout (a retry waits on the worker unacknowledged; a delay
# past the timeout would be delivered again and again, celery #2481).
RETRY_SPAN_SECONDS = 24 * 60 * 60
_RETRY_BACKOFF_CAP = 300
# The exit status of a worker or beat refused for a bad setting: 2, as in the ctxcache CLI.
EXIT_CONFIGURATION = 2


def retry_schedule(settings: CacheSettings) -> tuple[int, int]:
    """``(longest delay, number of retries)`` of the invalidation task.

    The delay doubles from 1 s up to a third of the shorter visibility timeout
    (10 s by default); with full jitter a capped delay averages half of that, so
    the number of retries is what spans :data:`RETRY_SPAN_SECONDS`.
    """
    shortest = min(settings.visibility_timeout, settings.invalidate_visibility_timeout)
    cap = max(1, int(min(_RETRY_BACKOFF_CAP, shortest / 3)))
    return cap, math.ceil(RETRY_SPAN_SECONDS / (cap / 2))


def create_app(**overrides: Any) -> Celery:
    """A Celery app configured from ``celeryconfig``, with ctxcache's tasks registered."""
    celery_app = Celery("ctxcache", set_as_current=False)
    celery_app.config_from_object("celeryconfig")
    if overrides:
        celery_app.conf.update(overrides)
    _register_tasks(celery_app)
    return celery_app


def _chunks(items: Iterable[tuple[str, int]], size: int) -> Iterator[list[tuple[str, int]]]:
    chunk: list[tuple[str, int]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _register_tasks(celery_app: Celery) -> None:
    backoff_cap, max_retries = retry_schedule(CacheSettings.load())

    # Late-acked, retried with backoff and jitter for about a day, never deduplicated.
    safety_net: dict[str, Any] = {
        "shared": False,  # each app gets its own tasks; no global registration
        "acks_late": True,
        "reject_on_worker_lost": True,
        # A phone sealed with a key this worker lacks: another worker (or this one,
        # once configured) may hold it; the invalidation waits in the queue, not lost.
        "autoretry_for": (CacheUnavailableError, MissingKeyError),
        "retry_backoff": 1,
        "retry_backoff_max": backoff_cap,
        "retry_jitter": True,
        "max_retries": max_retries,
    }

    @celery_app.task(name=INVALIDATE_TASK, **safety_net)
    def invalidate_context(
        phone: str,
        company_id: int,
        generation: int | None = None,
        sections: dict[str, int | None] | None = None,
    ) -> str:
        """The safety net behind a booking hook; idempotent, retried until Redis takes it.

        A no-op while the invalidation that produced ``generation`` still holds
        (a context reloaded since is kept). Applied again if it was undone, and
        applied outright when ``generation`` is None: the hook's inline call
        failed, or the message is from before generations existed. ``sections``
        (company sections and the generations the hook produced, None for
        "apply outright") are checked the same way.
        """
        cache = runtime.get_cache()
        try:
            phone = open_phone(cache, phone, company_id)
        except MissingKeyError as exc:
            logger.error("safety net for a client of company %s: %s; retrying", company_id, exc)
            raise
        except UndecryptableValueError as exc:  # no key will ever open it: nothing to retry
            logger.critical(
                "safety net for a client of company %s dropped: its sealed phone cannot be"
                " opened: %s",
                company_id,
                exc,
            )
            raise
        if sections is None:  # a message of the first versions: the client's part alone
            outcome = cache.ensure_invalidated(phone, company_id, generation)
        else:
            outcome = _confirm(cache, company_id, phone, generation, sections)
        return _safety_net_outcome(cache, outcome, f"{mask_phone(phone)} / {company_id}")

    @celery_app.task(name=INVALIDATE_COMPANY_TASK, **safety_net)
    def invalidate_company(company_id: int, sections: dict[str, int | None]) -> str:
        """The safety net behind :func:`tasks.company_changed`; as ``invalidate_context``."""
        cache = runtime.get_cache()
        outcome = _confirm(cache, company_id, None, None, sections)
        return _safety_net_outcome(cache, outcome, f"company {company_id}")

    @celery_app.task(name=WARM_ALL_TASK, bind=True, shared=False)
    def warm_vip_contexts(
        self: Task[[float | None], int], refresh_threshold: float | None = None
    ) -> int:
        """Fan out ``warm_context`` for every VIP; at most one run per warm-up interval.

        ``refresh_threshold`` (seconds) overrides CTXCACHE_WARMUP_REFRESH_THRESHOLD
        for this run (``ctxcache warm --queue --refresh-threshold N``).
        """
        cache = runtime.get_cache()
        interval = cache.settings.warmup_interval
        try:
            # Held for most of an interval and never released early: a second
            # beat, or a run that overlaps, exits at once.
            acquired = cache.client.set(
                cache.keys.warmup_lock, secrets.token_hex(8), nx=True, px=int(interval * 900)
            )
        except redis_errors.RedisError as exc:
            logger.error("warm-up skipped: Redis unavailable: %s", exc)
            return 0
        if not acquired:
            logger.info("warm-up skipped: another run holds this interval")
            return 0
        warm_one = self.app.tasks[WARM_ONE_TASK]
        warm_company = self.app.tasks[WARM_COMPANY_TASK]
        # A sectioned loader loads a company's sections apart: each company once,
        # queued before its clients, whose warm-ups then load their own parts.
        by_company = isinstance(runtime.get_loader(), SectionedLoader)
        companies: set[int] = set()
        queued = 0
        for chunk in _chunks(
            _valid_vips(cache, runtime.get_vip_source()()), cache.settings.warmup_chunk_size
        ):
            new = sorted({company for _, company in chunk} - companies) if by_company else []
            for company in new:
                warm_company.apply_async((company, refresh_threshold), expires=interval)
            companies.update(new)
            group(
                warm_one.s(seal_phone(cache, phone, company), company, refresh_threshold)
                for phone, company in chunk
            ).apply_async(expires=interval)
            queued += len(chunk)
        logger.info("warm-up: queued %d companies and %d VIP contexts", len(companies), queued)
        return queued

    @celery_app.task(name=WARM_COMPANY_TASK, shared=False)
    def warm_company(company_id: int, refresh_threshold: float | None = None) -> str:
        """Load and cache a company's sections unless they are fresh (a sectioned loader)."""
        cache = runtime.get_cache()
        outcome = cache.warm_company(company_id, runtime.get_loader(), refresh_threshold)
        logger.info("warm-up of company %s: %s", company_id, outcome.value)
        return outcome.value

    @celery_app.task(name=WARM_ONE_TASK, shared=False)
    def warm_context(phone: str, company_id: int, refresh_threshold: float | None = None) -> str:
        """Load and cache one context unless it is fresh; an invalidation meanwhile wins."""
        cache = runtime.get_cache()
        try:
            phone = open_phone(cache, phone, company_id)
        except UndecryptableValueError as exc:  # the next warm-up run queues it again
            logger.error("warm-up of a client of company %s skipped: %s", company_id, exc)
            return "unreadable"
        loader = runtime.get_loader()
        outcome = cache.warm_full_context(phone, company_id, loader, refresh_threshold)
        logger.info("warm-up of %s / %s: %s", mask_phone(phone), company_id, outcome.value)
        return outcome.value


def _confirm(
    cache: ContextCache,
    company_id: int,
    phone: str | None,
    generation: int | None,
    sections: dict[str, int | None],
) -> EnsureOutcome:
    """Check an invalidation of a client's part (with ``phone``) and company sections."""
    known = {name: gen for name, gen in sections.items() if gen is not None}
    outright = [name for name, gen in sections.items() if gen is None]
    done = Invalidation(generation, known)
    return cache.confirm_invalidation(company_id, done, phone=phone, sections=outright)


def _safety_net_outcome(cache: ContextCache, outcome: EnsureOutcome, what: str) -> str:
    runtime.count(cache, f"safety_net_{outcome.value}")
    logger.info("safety net for %s: %s", what, outcome.value)
    if outcome is EnsureOutcome.UNAVAILABLE:
        raise CacheUnavailableError(f"Redis did not take the invalidation of {what}")
    return str(outcome.value)


def _valid_vips(cache: ContextCache, vips: Iterable[tuple[str, int]]) -> Iterator[tuple[str, int]]:
    """Normalized VIPs; a bad entry is logged and skipped, not queued to fail."""
    for phone, company_id in vips:
        try:
            yield cache.identify(phone, company_id)
        except CtxCacheError as exc:
            logger.error("skipping a VIP entry: %s", exc)


def _loaded_by_celery_command() -> bool:
    """Whether ``celery -A tasks ...`` is importing this module right now."""
    command = sys.modules.get("celery.bin.celery")
    if command is None:
        return False
    import click

    context = click.get_current_context(silent=True)
    return context is not None and context.find_root().command is getattr(command, "celery", None)


def _default_app() -> Celery:
    try:
        return create_app()
    except ConfigurationError as exc:
        if not _loaded_by_celery_command():
            raise
        # `celery -A tasks worker|beat` reports an error raised while importing
        # the app with its whole traceback (86 lines for one bad URL), which
        # buries the one line that matters. SystemExit passes through it.
        sys.stderr.write(f"ctxcache: cannot start: {exc}\n")
        raise SystemExit(EXIT_CONFIGURATION) from None


app = _default_app()
