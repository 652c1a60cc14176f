"""``ctxcache doctor``: the spec's troubleshooting list as checks that name their fix.

:func:`diagnose` returns a list of :class:`Check`; the CLI only prints them.
The Redis checks live in :mod:`.server`, the broker and worker checks in
:mod:`.broker`. Nothing here can hang, and passwords never appear in a detail.
"""

from __future__ import annotations

from ctxcache.errors import ConfigurationError
from ctxcache.settings import CacheSettings

from .broker import BrokerDoctor, broker_url
from .report import Check, human_bytes, verdict
from .server import RedisDoctor

__all__ = ["Check", "broker_url", "diagnose", "human_bytes", "run_checks", "verdict"]


def diagnose(
    url: str | None = None, *, timeout: float = 2.0, scan_limit: int = 10_000, celery: bool = True
) -> list[Check]:
    """Every check, with settings from the environment (``url`` overrides the Redis URL)."""
    try:
        settings = CacheSettings.load(redis_url=url) if url else CacheSettings.load()
    except ConfigurationError as exc:
        return [
            Check("settings", False, str(exc), f"fix {exc.variable or 'the CTXCACHE_* variables'}")
        ]
    reason = "given with --url" if url else None
    return run_checks(
        settings, timeout=timeout, scan_limit=scan_limit, celery=celery, reason=reason
    )


def run_checks(
    settings: CacheSettings,
    *,
    timeout: float = 2.0,
    scan_limit: int = 10_000,
    celery: bool = True,
    reason: str | None = None,
) -> list[Check]:
    """Run the checks against ``settings``; ``celery=False`` leaves out broker and workers.

    ``reason`` says where the Redis URL came from when not from the environment.
    """
    doctor = RedisDoctor(settings, timeout, scan_limit, reason or settings.url_reason)
    try:
        checks = doctor.run()
        if celery:
            checks += BrokerDoctor(settings, timeout, doctor.run_id).run()
        return checks
    finally:
        doctor.close()
