"""Per-process state of a worker: its cache, loader and VIP source.

Nothing is created at import time. The cache (and its connection pool) is made
on first use in each process; a prefork child drops whatever it inherited in
``worker_process_init``, so no socket is ever shared across a fork. The loader
and the VIP source are resolved in ``worker_init`` so that a wrong dotted path
stops the worker at start instead of failing every task.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from ctxcache import ConfigurationError, ContextCache, ContextLoader, VipRegistry, VipSource
from ctxcache.ops.metrics import serve_metrics
from ctxcache.protocols import resolve_callable, resolve_loader
from ctxcache.settings import CacheSettings

from .pending import PendingInvalidations

__all__ = [
    "configure",
    "count",
    "get_cache",
    "get_loader",
    "get_pending",
    "get_vip_source",
    "reset",
]

logger = logging.getLogger("ctxcache.tasks")

_lock = threading.Lock()
_state: dict[str, Any] = {}
# The process whose objects _state holds; a fork child has another pid.
_owner = {"pid": os.getpid()}


def configure(
    *,
    cache: ContextCache | None = None,
    loader: ContextLoader | None = None,
    vip_source: VipSource | None = None,
) -> None:
    """Use these objects instead of the ones the settings name (embedding, tests)."""
    with _lock:
        for name, value in (("cache", cache), ("loader", loader), ("vip_source", vip_source)):
            if value is not None:
                _state[name] = value


def reset() -> None:
    """Forget the process's cache, loader, VIP source and owed invalidations; made again on use."""
    with _lock:
        pending = _state.get("pending")
        _state.clear()
    if pending is not None:
        pending.close()


def settings() -> CacheSettings:
    with _lock:
        if "settings" not in _state:
            _state["settings"] = CacheSettings.load()
        value: CacheSettings = _state["settings"]
        return value


def get_cache() -> ContextCache:
    current = settings()
    with _lock:
        if "cache" not in _state:
            _state["cache"] = ContextCache.from_settings(current)
        cache: ContextCache = _state["cache"]
        return cache


def count(cache: ContextCache, name: str) -> None:
    """Add one to ``cache``'s counter ``name`` (a hook or safety-net outcome of CacheStats).

    It then travels with the cache's own counts: ``stats()``, the shared hash, Prometheus.
    """
    cache.core.stats.add(name)


def get_pending() -> PendingInvalidations:
    """The invalidations this process owes Redis (see :mod:`tasks.pending`)."""
    cache = get_cache()
    with _lock:
        if "pending" not in _state:
            _state["pending"] = PendingInvalidations(
                cache, on_applied=lambda: count(cache, "hook_applied_later")
            )
        pending: PendingInvalidations = _state["pending"]
        return pending


def get_loader() -> ContextLoader:
    current = settings()
    with _lock:
        if "loader" not in _state:
            if not current.loader:
                raise ConfigurationError(
                    "CTXCACHE_LOADER is not set: name the function that loads a context, "
                    "e.g. CTXCACHE_LOADER=ctxcache.sample_salon:load_context",
                    variable="CTXCACHE_LOADER",
                )
            _state["loader"] = resolve_loader(current.loader)
        loader: ContextLoader = _state["loader"]
        return loader


def get_vip_source() -> VipSource:
    current = settings()
    with _lock:
        source = _state.get("vip_source")
        if source is None and current.vip_source:
            source = resolve_callable(current.vip_source, variable="CTXCACHE_VIP_SOURCE")
            _state["vip_source"] = source
    if source is None:
        return VipRegistry(get_cache())
    resolved: VipSource = source
    return resolved


@worker_init.connect
def _check_configuration(sender: Any = None, **_: Any) -> None:
    """Resolve dotted paths when the worker starts; a wrong one stops it with a clear message.

    Without a loader the worker still applies invalidations, but it does not
    consume the warm-up queue: its warm-ups could only fail, and leaving them
    queued lets a worker that has a loader take them.
    """
    try:
        current = settings()
        if current.loader:
            get_loader()
        if current.vip_source:
            get_vip_source()
        with _lock:
            has_loader = bool(current.loader) or "loader" in _state
        if not has_loader and sender is not None:
            _skip_warm_up(sender)
    except ConfigurationError as exc:
        logger.critical("ctxcache worker cannot start: %s", exc)
        # Celery logs and swallows exceptions from signal handlers; SystemExit stops it.
        raise SystemExit(f"ctxcache worker cannot start: {exc}") from exc


def _skip_warm_up(worker: Any) -> None:
    """Stop ``worker`` (a WorkController, queues already chosen) from consuming warm-ups."""
    from celeryconfig import WARMUP_QUEUE  # loaded already: the worker has its configuration

    queues = worker.app.amqp.queues
    if WARMUP_QUEUE not in queues.consume_from:
        return
    queues.deselect(WARMUP_QUEUE)
    if not queues.consume_from:
        raise ConfigurationError(
            f"CTXCACHE_LOADER is not set, and this worker consumes only {WARMUP_QUEUE}, "
            "whose warm-ups need it: set CTXCACHE_LOADER=package.module:function",
            variable="CTXCACHE_LOADER",
        )
    logger.warning(
        "CTXCACHE_LOADER is not set: warm-up is disabled on this worker, which consumes %s "
        "only; set CTXCACHE_LOADER=package.module:function to warm the VIP contexts",
        ", ".join(sorted(queues.consume_from)),
    )


@worker_init.connect
def _start_metrics(**_: Any) -> None:
    """Serve the fleet's metrics from the worker's main process if CTXCACHE_METRICS_PORT is set."""
    port = settings().metrics_port
    if port is None:
        return
    try:
        server = serve_metrics(get_cache(), port, "127.0.0.1")
    except OSError as exc:  # port taken: the worker still works, without its endpoint
        logger.error("cannot serve metrics on 127.0.0.1:%d: %s", port, exc)
        return
    with _lock:
        _state["metrics_server"] = server


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """A fresh connection pool in every child; the parent's sockets are not ours."""
    with _lock:
        if _owner["pid"] == os.getpid():
            return  # solo and thread pools send this signal without forking
        _owner["pid"] = os.getpid()
        _state.pop("cache", None)
        _state.pop("pending", None)  # the parent's; its thread did not fork
        server = _state.pop("metrics_server", None)
    if server is not None:
        server.socket.close()  # the listener belongs to the main process


@worker_process_shutdown.connect
@worker_shutdown.connect
def _flush_on_exit(**_: Any) -> None:
    """Push the last interval's counters before the process goes; nothing else to close."""
    with _lock:
        cache = _state.get("cache")
    if cache is not None:
        cache.flush_stats()
