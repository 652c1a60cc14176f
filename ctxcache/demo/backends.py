"""What the demo runs against: an embedded cache and worker, or a real Redis and worker.

Embedded by default: fakeredis (with Lua) as the cache server and a Celery
worker in threads of this process on a ``memory://`` broker. With
``CTXCACHE_REDIS_URL`` set: that Redis and a real ``celery -A tasks worker``
subprocess, or with ``--no-worker`` a worker that is already running.

On a real server the demo writes only in its own namespace, ``ctxcache-demo:``:
its cache keys (``CTXCACHE_KEY_PREFIX``) and its Redis broker's keys (kombu's
``global_keyprefix``), so the user's VIP registry, fleet stats, warm-up lock,
cached contexts and queues are never read or changed. At the end it deletes
every key of that namespace, and says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import redis
from celery import Celery

from ctxcache import sample_salon as salon
from ctxcache.client.connection import connect
from ctxcache.client.sync import ContextCache
from ctxcache.client.vip import VipRegistry
from ctxcache.demo.common import NAMESPACE, QUEUES, DemoError
from ctxcache.ops.namespace import delete_namespace
from ctxcache.settings import CacheSettings, redact_url

__all__ = ["Backend", "demo_broker", "embedded_backend", "real_backend", "worker_process"]

REPO: Final = Path(__file__).resolve().parents[2]
AMQP_SCHEMES: Final = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})
WORKER_START_TIMEOUT: Final = 60.0
EMBEDDED_WORKER: Final[dict[str, Any]] = {
    "pool": "threads",
    "concurrency": 2,
    "loglevel": "WARNING",
}
WARM_LINE: Final = re.compile(r"warm-up of \S+ / \d+: (\w+)")  # what tasks.app logs per warm-up


@dataclass
class Backend:
    """What the story runs against: a cache, the publishing app and a worker."""

    cache: ContextCache
    app: Celery
    where: str  # the cache server, the broker and the worker, for the reader
    outcomes: Callable[[], Counter[str]] | None  # warm-up outcomes the worker reported
    embedded: bool = False
    farewell: list[str] = field(default_factory=list)  # what it left behind, said at the end


@contextmanager
def embedded_backend(db: Path) -> Iterator[Backend]:
    """fakeredis and an in-process worker, both using this process's cache object."""
    if not all(importlib.util.find_spec(name) for name in ("fakeredis", "lupa")):
        raise DemoError(
            "the embedded demo needs fakeredis with Lua: pip install"
            " 'fakeredis[lua]', or set CTXCACHE_REDIS_URL to use a real Redis"
        )
    import fakeredis
    from celery.contrib.testing.worker import start_worker

    from tasks import create_app, runtime

    server = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    # fakeredis has no replicas (and no ROLE to ask): nothing to wait for.
    cache = ContextCache(server, CacheSettings.load(redis_url=None, invalidation_replicas=0))
    options = {"polling_interval": 0.005}  # the memory transport polls, every second by default
    app = create_app(broker_url="memory://localhost/", broker_transport_options=options)
    app.conf.worker_hijack_root_logger = False
    root = logging.getLogger()
    saved = root.level, root.handlers[:]  # the worker's logging setup changes them
    runtime.reset()
    loader = salon.SqlContextLoader(db)
    runtime.configure(cache=cache, loader=loader, vip_source=VipRegistry(cache))
    try:
        with start_worker(app, perform_ping_check=False, queues=QUEUES, **EMBEDDED_WORKER):

            def outcomes() -> Counter[str]:
                counts = cache.stats().as_dict().items()
                return Counter({k[5:]: int(v) for k, v in counts if k.startswith("warm_")})

            backend = Backend(cache, app, "embedded", outcomes, embedded=True)
            backend.farewell.append("Embedded mode: nothing was written to any server.")
            yield backend
    finally:
        runtime.reset()
        app.close()
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def demo_broker(url: str) -> tuple[str, str | None]:
    """The demo's broker URL, and a note when ``CTXCACHE_BROKER_URL`` was set aside.

    Always Redis, where its keys get the demo's prefix: ``CTXCACHE_BROKER_URL``
    if that is Redis, else the cache's server, next database. RabbitMQ queues
    cannot be prefixed; the demo's would be the user's ``ctxcache.*`` queues,
    consumed by the user's workers (and the demo's worker would take theirs).
    """
    settings = CacheSettings.load(redis_url=url)
    broker = settings.effective_broker_url
    if urlsplit(broker).scheme not in AMQP_SCHEMES:
        return broker, None
    fallback = CacheSettings.load(redis_url=url, broker_url=None).effective_broker_url
    note = (
        f"CTXCACHE_BROKER_URL is RabbitMQ ({redact_url(broker)}): the demo uses a Redis broker"
        f" on the cache's server instead, {redact_url(fallback)}, under {NAMESPACE}, so that"
        " it cannot share queues with your workers"
    )
    return fallback, note


@contextmanager
def real_backend(db: Path, url: str, args: argparse.Namespace) -> Iterator[Backend]:
    """The Redis at ``url`` and a ``celery -A tasks worker`` (ours, or one already running).

    Everything is written under :data:`NAMESPACE` and deleted at the end.
    """
    from tasks import create_app, runtime

    settings = CacheSettings.load(redis_url=url, key_prefix=NAMESPACE)
    cache = ContextCache.from_settings(settings)
    shown = redact_url(settings.effective_redis_url)
    try:
        cache.client.ping()
    except redis.RedisError as exc:
        cache.close()
        raise DemoError(
            f"Redis at {shown} (CTXCACHE_REDIS_URL) is not reachable: {exc}\nFix: start that"
            " server (e.g. `redis-server`), correct CTXCACHE_REDIS_URL, or unset it to run the"
            " embedded demo."
        ) from exc
    broker, broker_note = demo_broker(url)
    app = create_app(broker_url=broker)
    options = app.conf.broker_transport_options
    app.conf.broker_transport_options = {**options, "global_keyprefix": NAMESPACE}
    runtime.reset()
    runtime.configure(cache=cache)  # the booking hooks' cache
    where = f"Redis {shown}; broker {redact_url(broker)}; keys under {NAMESPACE} only"
    if broker_note:
        where += f"\n{broker_note}"
    farewell: list[str] = []
    try:
        try:
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
        except Exception as exc:  # kombu raises transport-specific errors
            raise DemoError(
                f"the Celery broker at {redact_url(broker)} is not reachable: {exc}\nFix: start"
                " it, or set CTXCACHE_BROKER_URL (default: the cache's server, next db)."
            ) from exc
        cleaned = _delete_namespace(settings, broker)  # leftovers of an interrupted run
        if cleaned:
            where += (
                f"\n(deleted {cleaned} keys an earlier, interrupted demo left under {NAMESPACE})"
            )
        if not args.no_worker:
            with worker_process(db, broker) as log:

                def outcomes() -> Counter[str]:
                    return Counter(WARM_LINE.findall(log.read_text(errors="replace")))

                yield Backend(cache, app, f"{where}\nworker log {log}", outcomes, farewell=farewell)
        elif app.control.ping(timeout=2.0):
            yield Backend(cache, app, f"{where}; a worker already running", None, farewell=farewell)
        else:
            raise DemoError(
                f"--no-worker: no Celery worker answered on {redact_url(broker)} in the demo's"
                " namespace. Start one (`celery -A tasks worker -Q"
                f" ctxcache.invalidate,ctxcache.warmup` with {_worker_variables(db, broker)})"
                " or drop --no-worker."
            )
    finally:
        runtime.reset()
        app.close()
        cache.close()  # pushes this process's counters: before the namespace goes
        try:
            deleted = _delete_namespace(settings, broker)
        except redis.RedisError as exc:
            farewell.append(
                f"Could not delete the demo's keys under {NAMESPACE}: {exc}. The next run"
                " deletes them first."
            )
        else:
            farewell.append(
                f"Cleaned up: deleted the {deleted} keys the demo wrote under {NAMESPACE}"
                f" ({shown} and the broker {redact_url(broker)}); it wrote no other key. Left"
                f" behind: the sample database {db} and the worker's log"
                f" {db.parent / 'worker.log'}."
            )


def _delete_namespace(settings: CacheSettings, broker: str) -> int:
    """Delete the demo's keys from the cache's database and the broker's; how many there were."""
    cache_client = connect(settings, socket_timeout=5.0)
    broker_client = redis.Redis.from_url(broker, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        # When both are one database the second finds nothing left: no need to compare URLs.
        return delete_namespace(cache_client, NAMESPACE) + delete_namespace(
            broker_client, NAMESPACE
        )
    finally:
        cache_client.close()
        broker_client.close()


def _worker_variables(db: Path, broker: str) -> str:
    names = _worker_environment(db, broker)
    return " ".join(f"{k}={redact_url(v) if 'URL' in k else v}" for k, v in names.items())


def _worker_environment(db: Path, broker: str) -> dict[str, str]:
    """What the demo's worker is told, on top of the caller's CTXCACHE_REDIS_URL."""
    return {
        "CTXCACHE_KEY_PREFIX": NAMESPACE,
        "CTXCACHE_BROKER_URL": broker,
        "CTXCACHE_BROKER_KEY_PREFIX": NAMESPACE,
        "CTXCACHE_LOADER": "ctxcache.sample_salon:load_context",
        salon.DEFAULT_DB_ENV: str(db),
    }


@contextmanager
def worker_process(db: Path, broker: str) -> Iterator[Path]:
    """``celery -A tasks worker`` in its own session; yields its log file; always stopped."""
    log = db.parent / "worker.log"
    env = {**os.environ, **_worker_environment(db, broker)}
    env.pop("CTXCACHE_VIP_SOURCE", None)  # it warms the VIP registry the demo fills
    env.pop("CTXCACHE_METRICS_PORT", None)  # the user's metrics port is not the demo's
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", ",".join(QUEUES)]
    argv += ["-c", "2", "-n", f"ctxcache-demo-{os.getpid()}@%h", "--loglevel", "INFO"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while "ready." not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                state = "exited" if process.poll() is not None else "did not get ready in time"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise DemoError(f"the Celery worker {state} (log {log}); its last lines:\n{tail}")
            time.sleep(0.1)
        yield log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
