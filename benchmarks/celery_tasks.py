"""Celery suite: invalidation latency and VIP warm-up throughput through real workers.

For each broker (Redis, RabbitMQ) one ``celery -A tasks worker -c 4`` runs as a
subprocess against the cache on ``--url`` (else ``CTXCACHE_REDIS_URL``, else
local db 0).

* Invalidation: the time from calling ``tasks.booking_created`` to the context's
  key being gone, one booking at a time, each on a freshly cached key. The
  deletion is seen through keyspace notifications (``notify-keyspace-events``
  is extended for the run and restored after), or by EXISTS every 0.5 ms when
  the server refuses ``CONFIG SET`` or ``CTXCACHE_BENCH_CELERY_WATCH=poll``.
* Warm-up: 1,000 VIPs in the registry, a loader that takes 20 ms
  (``benchmarks.loaders:fixed_20ms``), one ``ctxcache.warm_vip_contexts``;
  the time until every context is cached, against the ideal 4 / 20 ms = 200/s.

What it writes: keys under ``ctxcache-bench:`` in that one database (the cache
through ``CTXCACHE_KEY_PREFIX``, the Redis broker under ``ctxcache-bench:broker:``
through kombu's ``global_keyprefix``), deleted at start and end; the RabbitMQ
vhost ``ctxcache_bench`` (created with ``rabbitmqctl`` if missing, kept, its
queues purged; without it the RabbitMQ half is skipped, never run on ``/``);
and, for the run, ``notify-keyspace-events`` gains ``K$g`` (restored after).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import redis
from celery import Celery
from redis.client import PubSub

import tasks
from benchmarks.common import (
    NAMESPACE,
    bench_cache,
    bench_url,
    delete_bench_keys,
    ensure_room,
    machine,
    table,
    write_results,
)
from benchmarks.loaders import LOAD_SECONDS, fixture_context
from ctxcache import ContextCache, VipRegistry
from ctxcache.ops.namespace import delete_namespace
from ctxcache.settings import redact_url
from tasks import runtime

REPO = Path(__file__).resolve().parents[1]
BROKER_KEY_PREFIX = NAMESPACE + "broker:"  # the Redis broker's keys, beside the cache's
VHOST = "ctxcache_bench"
AMQP_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
LOADER = "benchmarks.loaders:fixed_20ms"
COMPANY_ID = 962302
CONCURRENCY = 4
IDEAL_PER_S = CONCURRENCY / LOAD_SECONDS
SPEC_INVALIDATION_MS = 100.0  # the spec: "invalidation < 100 ms"
UNTIMED_BOOKINGS = 10  # first bookings per broker: connections, lazy set-up
POLL_S = 0.0005
WORKER_START_TIMEOUT = 60.0
INVALIDATION_TIMEOUT = 10.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite, print the report, write ``results/celery[.quick].json``; return figures."""
    quick = bool(getattr(args, "quick", False))
    bookings = getattr(args, "iterations", None) or (40 if quick else 300)
    vips = 200 if quick else 1000
    cache_url = bench_url(args)
    admin = redis.Redis.from_url(cache_url)
    ensure_room(admin, vips * 100_000, cache_url)  # ~82 KB of Redis memory per warmed context
    amqp_url, amqp_note = rabbitmq_vhost()
    brokers = {"redis": cache_url, "rabbitmq": amqp_url}
    cache = bench_cache(cache_url)
    runtime.configure(cache=cache)
    results: dict[str, Any] = {
        "suite": "celery",
        "quick": quick,
        "environment": environment(admin, cache_url),
        "method": {
            "worker": f"celery -A tasks worker -c {CONCURRENCY} (prefork)",
            "loader": f"{LOADER} ({LOAD_SECONDS * 1000:.0f} ms, fixture context)",
            "bookings": bookings,
            "untimed_bookings": UNTIMED_BOOKINGS,
            "vips": vips,
            "rabbitmq": amqp_note,
        },
        "brokers": {},
    }
    try:
        with KeyWatcher(cache_url, cache) as watcher, tempfile.TemporaryDirectory() as logs:
            results["method"]["watch"] = watcher.method
            for name, url in brokers.items():
                delete_bench_keys(admin)  # the last broker's run, or an interrupted one
                if url is None:
                    results["brokers"][name] = {"url": "-", "skipped": amqp_note}
                    continue
                env = {"CTXCACHE_REDIS_URL": cache_url, "CTXCACHE_BROKER_URL": url}
                try:
                    results["brokers"][name] = bench_broker(
                        url, cache, watcher, env, Path(logs) / f"{name}.log", bookings, vips
                    )
                except Exception as exc:  # a broker that fails is reported, the other still runs
                    traceback.print_exc()
                    results["brokers"][name] = {"url": redact_url(url), "error": str(exc)}
    finally:
        runtime.reset()
        cache.close()  # pushes its stats (under the namespace): before the clean-up
        delete_bench_keys(admin)
        admin.close()
    print(report(results))
    out = write_results("celery", quick, results, getattr(args, "results", None))
    print(f"\nfigures written to {out}")
    return results


def rabbitmq_vhost() -> tuple[str | None, str]:
    """The AMQP URL to use, vhost ``ctxcache_bench`` (created if missing), and a note.

    None when the vhost cannot be made: the default vhost ``/`` may hold
    someone's ``ctxcache.*`` queues, which the suite would purge and consume.
    """
    if os.environ.get("CTXCACHE_BENCH_CELERY_AMQP_URL"):
        url = os.environ["CTXCACHE_BENCH_CELERY_AMQP_URL"]
        return url, "CTXCACHE_BENCH_CELERY_AMQP_URL"

    def ctl(*argv: str) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *argv], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout

    try:
        if VHOST not in ctl("list_vhosts").split():
            ctl("add_vhost", VHOST)
            ctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        detail = str(getattr(exc, "stderr", "") or exc).strip()
        note = (
            f"skipped: rabbitmqctl could not make the vhost {VHOST} ({detail}); create it, or"
            " set CTXCACHE_BENCH_CELERY_AMQP_URL to a vhost of the benchmark's own"
        )
        return None, note
    return AMQP_URL, f"dedicated vhost {VHOST}"


# -- measurements -----------------------------------------------------------------------


def bench_broker(
    url: str,
    cache: ContextCache,
    watcher: KeyWatcher,
    env: dict[str, str],
    log: Path,
    bookings: int,
    vips: int,
) -> dict[str, Any]:
    with kombu.Connection(url, connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1)  # raises if unreachable, never hangs
        server = getattr(connection.connection, "server_properties", {}).get("version")
    app = tasks.create_app(broker_url=url)
    options = app.conf.broker_transport_options  # the worker's: CTXCACHE_BROKER_KEY_PREFIX
    app.conf.broker_transport_options = {**options, "global_keyprefix": BROKER_KEY_PREFIX}
    purge_queues(app)
    result: dict[str, Any] = {"url": redact_url(url), "server": server}
    try:
        with celery_worker(app, env, log) as (ready_s, pgid):
            result["worker_ready_s"] = round(ready_s, 2)
            result["invalidation"] = measure_invalidation(app, cache, watcher, bookings)
            delete_namespace(cache.client, NAMESPACE + "full_context:")  # the bookings' keys
            result["warmup"] = measure_warmup(app, cache, watcher, vips, pgid)
    finally:
        purge_queues(app)
        app.close()
    return result


def purge_queues(app: Celery) -> None:
    """Declare and empty the ``ctxcache.*`` queues (and nothing else) on the app's broker."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            bound = queue.bind(channel)
            bound.declare()
            bound.purge()


@contextlib.contextmanager
def celery_worker(app: Celery, env: dict[str, str], log: Path) -> Iterator[tuple[float, int]]:
    """A ``-c 4`` worker in its own session; yields the seconds it took to answer, its group id."""
    name = f"bench{os.getpid()}"
    node = f"{name}@{socket.gethostname()}"  # what celery makes of "%h"
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker"]
    argv += ["-Q", "ctxcache.invalidate,ctxcache.warmup", "-c", str(CONCURRENCY)]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    argv += ["-n", f"{name}@%h", "--loglevel", "WARNING"]
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO), "CTXCACHE_LOADER": LOADER}
    full_env.update(CTXCACHE_KEY_PREFIX=NAMESPACE, CTXCACHE_BROKER_KEY_PREFIX=BROKER_KEY_PREFIX)
    full_env.pop("CTXCACHE_VIP_SOURCE", None)  # the warm-up must read the registry
    full_env.pop("CTXCACHE_METRICS_PORT", None)  # not the user's metrics port
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while not app.control.ping(destination=[node], timeout=1.0):
            gone = exited(process)
            if gone or time.monotonic() - started > WORKER_START_TIMEOUT:
                tail = log.read_text(errors="replace")[-2000:].strip()
                last = tail.splitlines()[-1] if tail else "(empty log)"
                what = "exited" if gone else f"did not answer a ping in {WORKER_START_TIMEOUT} s"
                raise RuntimeError(f"worker {what}: {last}\n--- worker log ---\n{tail}")
        yield time.monotonic() - started, process.pid
    finally:
        stop(process)


def exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the worker's main process exited; left unreaped, so its group id stays ours."""
    return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def stop(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM to the main process), then SIGKILL what is left of its group."""
    deadline = time.monotonic() + 10
    if not exited(process):
        process.send_signal(signal.SIGTERM)
        while not exited(process) and time.monotonic() < deadline:
            time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the unreaped main process keeps the group
    process.wait(timeout=10)


def measure_invalidation(
    app: Celery, cache: ContextCache, watcher: KeyWatcher, bookings: int
) -> dict[str, Any]:
    context = fixture_context()
    untimed: list[tuple[int, int]] = []  # (publish, latency)
    publish: list[int] = []
    latency: list[int] = []
    for i in range(UNTIMED_BOOKINGS + bookings):
        phone = f"+7900{i:07d}"
        assert cache.set_cached_full_context(phone, COMPANY_ID, context)
        key = cache.client_keys(phone, COMPANY_ID).full_context
        start = time.perf_counter_ns()
        route = tasks.booking_created(phone, COMPANY_ID, app=app)
        published = time.perf_counter_ns()
        assert route.queued, route
        gone = watcher.wait_deleted(key, time.monotonic() + INVALIDATION_TIMEOUT)
        if i < UNTIMED_BOOKINGS:
            untimed.append((published - start, gone - start))
        else:
            publish.append(published - start)
            latency.append(gone - start)
    over = sum(ns > SPEC_INVALIDATION_MS * 1e6 for ns in latency)
    figures = percentiles(latency)
    return {
        "latency": figures,
        "publish": percentiles(publish),
        "untimed_ms": [
            {"publish": round(pub / 1e6, 3), "latency": round(lat / 1e6, 3)} for pub, lat in untimed
        ],
        "over_spec": over,
        "spec_ms": SPEC_INVALIDATION_MS,
        "pass": figures["p99_ms"] < SPEC_INVALIDATION_MS,
    }


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time so far of the live processes in process group ``pgid``."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # from field 3, "state"
            if int(fields[2]) == pgid:
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def measure_warmup(
    app: Celery, cache: ContextCache, watcher: KeyWatcher, vips: int, pgid: int
) -> dict[str, Any]:
    registry = VipRegistry(cache)
    phones = [f"+7902{i:07d}" for i in range(vips)]
    for phone in phones:
        registry.add(phone, COMPANY_ID)
    keys = [cache.client_keys(phone, COMPANY_ID).full_context for phone in phones]
    timeout = max(30.0, 3 * vips / IDEAL_PER_S + 15)  # three times the ideal duration, and some
    cpu_before = group_cpu_seconds(pgid)
    start = time.perf_counter_ns()
    app.tasks[tasks.WARM_ALL_TASK].delay()
    arrivals = watcher.wait_all_set(keys, time.monotonic() + timeout)
    cpu = group_cpu_seconds(pgid) - cpu_before
    cached = int(cache.client.exists(*keys))
    seconds = [(t - start) / 1e9 for t in arrivals]
    total = seconds[-1] if seconds else timeout
    rate = len(seconds) / total
    return {
        "contexts": vips,
        "cached": cached,
        "timed_out": len(seconds) < vips,
        "total_s": round(total, 3),
        "first_s": round(seconds[0], 3) if seconds else None,
        "half_s": round(seconds[len(seconds) // 2], 3) if seconds else None,
        "contexts_per_s": round(rate, 1),
        "ideal_per_s": IDEAL_PER_S,
        "of_ideal": round(rate / IDEAL_PER_S, 3),
        "worker_cpu_s": round(cpu, 2),
        "worker_cpu_ms_per_context": round(1000 * cpu / max(1, len(seconds)), 2),
        "worker_cores_used": round(cpu / total, 2),
    }


def percentiles(ns: list[int]) -> dict[str, float]:
    ms = sorted(n / 1e6 for n in ns)
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {
        "p50_ms": round(cuts[49], 3),
        "p90_ms": round(cuts[89], 3),
        "p99_ms": round(cuts[98], 3),
        "max_ms": round(ms[-1], 3),
        "n": len(ms),
    }


class KeyWatcher:
    """Tells when cache keys are deleted or written: keyspace notifications, else EXISTS polling."""

    def __init__(self, url: str, cache: ContextCache) -> None:
        self.client = redis.Redis.from_url(url)
        db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.prefix = f"__keyspace@{db}__:".encode()
        self.previous: str | None = None
        self.pubsub: PubSub | None = None
        self.method = f"EXISTS polling every {POLL_S * 1000} ms"
        if os.environ.get("CTXCACHE_BENCH_CELERY_WATCH") == "poll":
            return
        try:
            setting = "notify-keyspace-events"
            previous = str(self.client.config_get(setting)[setting])
            flags = "".join(sorted(set(previous) | set("K$g")))
            self.client.config_set(setting, flags)
            self.previous = previous  # restored on exit
            self.pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
            self.pubsub.psubscribe(self.prefix + cache.keys.full_context_pattern.encode())
            confirmation = self.pubsub.get_message(timeout=5)
            if confirmation is None or confirmation["type"] != "psubscribe":
                raise redis.RedisError(f"PSUBSCRIBE not confirmed: {confirmation}")
            self.method = f"keyspace notifications (notify-keyspace-events {flags!r})"
        except redis.RedisError as exc:
            self.method += f" (keyspace notifications unavailable: {exc})"
            self._stop_notifications()

    def __enter__(self) -> KeyWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop_notifications()
        self.client.close()

    def _stop_notifications(self) -> None:
        if self.pubsub is not None:
            self.pubsub.close()
            self.pubsub = None
        if self.previous is not None:
            self.client.config_set("notify-keyspace-events", self.previous)
            self.previous = None

    def _events(self, pubsub: PubSub, deadline: float) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, event, perf_counter_ns) of each notification until ``deadline``."""
        while (remaining := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "pmessage":
                key = message["channel"][len(self.prefix) :]
                yield key, message["data"], time.perf_counter_ns()

    def wait_deleted(self, key: str, deadline: float) -> int:
        """perf_counter_ns when ``key`` was seen gone; TimeoutError after ``deadline``."""
        if self.pubsub is None:
            while self.client.exists(key):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{key} still cached")
                time.sleep(POLL_S)
            return time.perf_counter_ns()
        wanted = key.encode()
        for name, event, now in self._events(self.pubsub, deadline):
            if name == wanted and event == b"del":
                return now
        raise TimeoutError(
            f"no deletion of {key} notified (still cached: {self.client.exists(key)})"
        )

    def wait_all_set(self, keys: list[str], deadline: float) -> list[int]:
        """perf_counter_ns of each key's first write, in order; fewer if ``deadline`` passed."""
        arrivals: list[int] = []
        if self.pubsub is None:
            while len(arrivals) < len(keys) and time.monotonic() < deadline:
                count = int(self.client.exists(*keys))
                arrivals += [time.perf_counter_ns()] * (count - len(arrivals))
                time.sleep(0.005)
            return arrivals
        pending = {key.encode() for key in keys}
        for name, event, now in self._events(self.pubsub, deadline):
            if event == b"set" and name in pending:
                pending.discard(name)
                arrivals.append(now)
                if not pending:
                    break
        return arrivals


# -- environment and report --------------------------------------------------------------


def environment(admin: redis.Redis, cache_url: str) -> dict[str, Any]:
    libraries = ("celery", "kombu", "amqp", "redis", "hiredis")
    return {
        **machine(libraries),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "redis_server": str(admin.info("server")["redis_version"]),
        "cache_url": redact_url(cache_url),
    }


def report(r: dict[str, Any]) -> str:
    env, method = r["environment"], r["method"]
    libs = ", ".join(f"{name} {version}" for name, version in env["libraries"].items())
    inval = [["invalidation", "p50", "p90", "p99", "max", "> 100 ms", "publish p50", "spec", ""]]
    warm = [[f"warm-up, {method['vips']:,} VIPs", "all cached", "contexts/s", "ideal", "of ideal"]]
    warm[0] += ["first", "half", "worker CPU/context", "cores used"]
    brokers, untimed = [], []
    for name, b in r["brokers"].items():
        if "error" in b:
            brokers.append(f"  {name:<13} {b['url']}: FAILED: {b['error'].splitlines()[0]}")
            continue
        if "skipped" in b:
            brokers.append(f"  {name:<13} {b['skipped']}")
            continue
        server = b["server"] or "server version n/a"
        brokers.append(f"  {name:<13} {b['url']} ({server}), worker up in {b['worker_ready_s']} s")
        i, lat, w = b["invalidation"], b["invalidation"]["latency"], b["warmup"]
        cells = [f"{lat[k]:.1f} ms" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
        cells += [f"{i['over_spec']}/{lat['n']}", f"{i['publish']['p50_ms']:.2f} ms"]
        inval.append([name, *cells, "p99 < 100 ms", "PASS" if i["pass"] else "MISS"])
        first = ", ".join(f"{u['latency']:.0f} ({u['publish']:.0f})" for u in i["untimed_ms"][:4])
        untimed.append(f"{name} {first} ms")
        done = f"TIMEOUT, {w['cached']} cached" if w["timed_out"] else f"{w['total_s']:.2f} s"
        cells = [done, f"{w['contexts_per_s']:.1f}", f"{w['ideal_per_s']:.0f}/s"]
        cells += [f"{w['of_ideal']:.0%}", f"{w['first_s']} s", f"{w['half_s']} s"]
        cpu = [f"{w['worker_cpu_ms_per_context']:.1f} ms", f"{w['worker_cores_used']:.2f}"]
        warm.append([name, *cells, *cpu])
    return "\n".join(
        [
            f"ctxcache celery benchmark{' (quick)' if r['quick'] else ''}, {env['date']}",
            f"  platform      {env['platform']}",
            f"  cpu           {env['cpu']}, load average {env['load_average']} at start",
            f"  python        {env['python']} ({libs})",
            f"  redis-server  {env['redis_server']}, cache at {env['cache_url']}",
            *brokers,
            f"  amqp vhost    {method['rabbitmq']}",
            f"  worker        {method['worker']}, loader {method['loader']}",
            f"  method        {method['bookings']} timed bookings per broker after"
            f" {method['untimed_bookings']} untimed, one at a time, each on a freshly cached key;",
            f"                deletion seen by {method['watch']}",
            "",
            table(inval) if len(inval) > 1 else "invalidation: no broker ran",
            "  latency: booking_created() called -> key deleted; publish: booking_created()"
            " returned",
            f"  first untimed bookings, latency (publish): {'; '.join(untimed) or 'n/a'}",
            "",
            table(warm) if len(warm) > 1 else "warm-up: no broker ran",
            "  from warm_vip_contexts.delay() to the last (first, half) context cached;"
            f" ideal = {CONCURRENCY} processes / {LOAD_SECONDS * 1000:.0f} ms;",
            f"  CPU: the worker's process group (main + pool), user + system, over"
            f" {os.cpu_count()} logical CPUs shared with whatever else runs",
        ]
    )
