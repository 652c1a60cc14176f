"""The doctor's checks of the Celery side: the broker, its eviction policy, a worker per queue.

Each network step runs under a deadline of its own, so nothing here can hang.
Broker URLs are shown redacted.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Final, TypeVar

from redis import exceptions as redis_errors

from ctxcache.errors import ConfigurationError
from ctxcache.settings import CacheSettings, redact_url
from ctxcache.urls import redis_url_of_broker

from .persistence import BROKER_CHECK_NAMES, broker_checks, broker_client
from .report import Check

__all__ = ["BrokerDoctor", "broker_url"]

T = TypeVar("T")

# One worker per queue: a worker of ctxcache.invalidate alone recovers a killed
# worker's invalidations in seconds (tasks/transport.py).
WORKER_COMMAND: Final = "celery -A tasks worker -Q {queue}"


def broker_url(settings: CacheSettings) -> tuple[str, str]:
    """The broker the workers use and why: ``CTXCACHE_BROKER_URL``, else celeryconfig's default."""
    return settings.effective_broker_url, settings.broker_reason


def _within(seconds: float, call: Callable[[], T]) -> T:
    """``call()`` in a daemon thread; :class:`TimeoutError` if it takes over ``seconds``."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(call())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="ctxcache-doctor", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if error:
        raise error[0]
    return result[0]


class BrokerDoctor:
    """The Celery checks; ``cache_run_id`` (the cache's INFO run_id) spots a shared server."""

    def __init__(self, settings: CacheSettings, timeout: float, cache_run_id: str | None) -> None:
        self.settings = settings
        self.timeout = timeout
        self.run_id = cache_run_id

    def run(self) -> list[Check]:
        try:
            url, why = broker_url(self.settings)
        except ConfigurationError as exc:
            return [Check("broker reachable", False, str(exc), "fix the CTXCACHE_* variables")]
        shown = redact_url(url)
        try:
            _within(self.timeout * 2, lambda: self._connect_broker(url))
        except Exception as exc:
            fix = "start the broker or fix CTXCACHE_BROKER_URL (with its password)"
            checks = [Check("broker reachable", False, f"{shown} ({why}): {exc}", fix)]
            for name in (
                "broker eviction",
                *BROKER_CHECK_NAMES,
                "worker: ctxcache.invalidate",
                "worker: ctxcache.warmup",
            ):
                checks.append(Check(name, False, "not run: no broker", skipped=True))
            return checks
        checks = [Check("broker reachable", True, f"{shown} ({why})"), self.broker_eviction(url)]
        if checks[-1].name == "broker type":  # a Cluster node: nothing else is worth checking
            return checks
        checks += broker_checks(self.settings, url, self.run_id, self.timeout)
        return checks + self.worker_checks(url)

    def _connect_broker(self, url: str) -> None:
        import kombu

        options: dict[str, object] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
        }
        master = self.settings.effective_broker_master_name
        if master and url.lower().startswith("sentinel://"):
            options["master_name"] = master
        with kombu.Connection(url, connect_timeout=self.timeout, transport_options=options) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=math.ceil(self.timeout)
            )

    def broker_eviction(self, url: str) -> Check:
        server = redis_url_of_broker(url)
        if server is None:
            return Check("broker eviction", True, "not a Redis broker: messages are never evicted")
        client = broker_client(self.settings, server, self.timeout)
        try:
            info = {**client.info("server"), **client.info("memory")}
        except redis_errors.RedisError as exc:
            return Check(
                "broker eviction", True, f"INFO refused: {exc}", "make sure it is noeviction"
            )
        finally:
            client.close()
        if info.get("redis_mode") == "cluster":
            return Check(
                "broker type",
                False,
                "the broker's Redis is a Cluster node: Celery does not support Redis Cluster as a"
                " broker (kombu has no Cluster transport; a queue's keys hash to other nodes)",
                "point CTXCACHE_BROKER_URL at a Sentinel-managed Redis (sentinel://host:26379/0"
                " with CTXCACHE_BROKER_MASTER_NAME), a standalone Redis or RabbitMQ (amqp://)",
            )
        policy = str(info.get("maxmemory_policy", "?"))
        shared = self.run_id is not None and info.get("run_id") == self.run_id
        where = "the cache's own server" if shared else "its server"
        if policy != "noeviction":
            detail = f"{where} evicts ({policy}): queued invalidations can be dropped"
            fix = "give the broker its own Redis with maxmemory-policy noeviction, or RabbitMQ"
            return Check("broker eviction", False, detail, fix)
        detail = f"{where} is noeviction"
        if shared and self.settings.env == "production":
            advice = "fine for development; in production give the broker its own server"
            return Check("broker eviction", True, detail, advice)
        return Check("broker eviction", True, detail)

    def worker_checks(self, url: str) -> list[Check]:
        from celeryconfig import INVALIDATE_QUEUE, WARMUP_QUEUE

        try:
            consumers = _within(self.timeout + 3, lambda: _queue_consumers(url, self.timeout))
        except Exception as exc:
            consumers = {}
            problem: str | None = f"inspect failed: {exc}"
        else:
            problem = None
        effects = {
            INVALIDATE_QUEUE: "invalidations after bookings wait in the queue: stale contexts",
            WARMUP_QUEUE: "VIP contexts are not warmed up",
        }
        checks = []
        for queue in (INVALIDATE_QUEUE, WARMUP_QUEUE):
            workers = sorted(consumers.get(queue, ()))
            if workers:
                checks.append(Check(f"worker: {queue}", True, "consumed by " + ", ".join(workers)))
                continue
            detail = problem or f"no worker consumes {queue}: {effects[queue]}"
            fix = f"start one: {WORKER_COMMAND.format(queue=queue)}"
            checks.append(Check(f"worker: {queue}", False, detail, fix))
        return checks


def _queue_consumers(url: str, timeout: float) -> dict[str, set[str]]:
    """Queue name -> the workers consuming it, from ``inspect().active_queues()``."""
    from tasks import create_app

    app = create_app(broker_url=url, broker_connection_timeout=timeout)
    try:
        replies = app.control.inspect(timeout=min(1.0, timeout)).active_queues() or {}
    finally:
        app.close()
    consumers: dict[str, set[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or ():
            consumers.setdefault(str(queue.get("name")), set()).add(str(worker))
    return consumers
