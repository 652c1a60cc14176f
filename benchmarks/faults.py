"""Fault suite: bookings while workers are SIGKILLed and the cache crashes; what stays stale.

For each broker layout, on servers this suite starts itself on loopback:

* ``rabbitmq``: a RabbitMQ vhost made for the run (``rabbitmqctl``), deleted after;
* ``redis-separate``: a Redis broker on a redis-server of its own;
* ``redis-same``: the default layout, the broker on the cache's server (next db).

The cache is a redis-server with ``appendfsync always``; the separate Redis
broker too. One ``celery -A tasks worker -Q ctxcache.invalidate -c 2`` runs.

1. Latency: the booking hook as it is (inline first, then the queued safety
   net) against queue-only (the first version: validate and publish), in
   alternation, on a healthy system. Also when each client's context was gone.
2. Faults: 1,000 cached clients get one ``booking_created`` each over 30 s.
   Meanwhile the worker's process group is SIGKILLed and restarted three times
   and the cache's redis-server is SIGKILLed and restarted once, at random
   moments (``CTXCACHE_BENCH_FAULTS_SEED``). The hooks' process applies what
   Redis refused once it answers; ``CTXCACHE_BENCH_FAULTS_WORKER_ONLY=1`` turns
   that off, leaving the queued task as the only carrier.
3. Then it waits at most 90 s for the stale contexts (keys still cached) to
   reach 0 (with the worker alone: the hooks that raised InvalidationFailedError).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import redis
from celery import Celery

import tasks
from benchmarks.common import iteration_options, machine, table, write_results
from benchmarks.fault_servers import CeleryWorker, RedisServer, rabbitmq_vhost
from ctxcache import CacheSettings, ContextCache, InvalidationFailedError
from tasks import runtime
from tasks.hooks import PUBLISH_RETRY_POLICY, ClientContext

__all__ = ["run"]

LAYOUTS = ("rabbitmq", "redis-separate", "redis-same")
COMPANY = 962302
WORKER_KILLS = 3
CACHE_DOWN_SECONDS = 2.0  # between the cache's SIGKILL and its restart
UNTIMED = 10  # first hooks of each path: connections, script loading
FRESH_TIMEOUT = 2.0
_SAFETY_NET_LINE = re.compile(rb"safety net for \S+ / \d+: (\w+)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every layout, print the report, write ``results/faults[.quick].json``."""
    quick, samples, _ = iteration_options(args)
    plan = {
        "bookings": 200 if quick else 1000,
        "seconds": 8.0 if quick else 30.0,
        "settle_s": 60.0 if quick else 90.0,
        "latency_samples": samples,
        "seed": int(os.environ.get("CTXCACHE_BENCH_FAULTS_SEED", "8")),
        "worker_only": os.environ.get("CTXCACHE_BENCH_FAULTS_WORKER_ONLY", "") == "1",
    }
    results: dict[str, Any] = {
        "suite": "faults",
        "quick": quick,
        "environment": environment(),
        "method": plan,
        "layouts": {},
    }
    rng = random.Random(plan["seed"])
    with tempfile.TemporaryDirectory(prefix="ctxcache-faults-") as tmp, quiet_hooks(Path(tmp)):
        for layout in LAYOUTS:
            began = time.monotonic()
            try:
                results["layouts"][layout] = run_layout(layout, Path(tmp) / layout, plan, rng)
            except Exception as exc:  # a layout that cannot run is reported; the others run
                traceback.print_exc()
                results["layouts"][layout] = {"error": f"{type(exc).__name__}: {exc}"}
            results["layouts"][layout]["wall_s"] = round(time.monotonic() - began, 1)
    print(report(results))
    suite = "faults-worker-only" if plan["worker_only"] else "faults"
    out = write_results(suite, quick, results, getattr(args, "results", None))
    print(f"\nfigures written to {out}")
    return results


@contextlib.contextmanager
def quiet_hooks(directory: Path) -> Iterator[None]:
    """The hooks' error lines (expected here, by the hundred) go to a file, not the report."""
    logger = logging.getLogger("ctxcache")
    handler = logging.FileHandler(directory / "hooks.log")
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        handler.close()


def run_layout(layout: str, directory: Path, plan: dict[str, Any], rng: random.Random) -> Any:
    with contextlib.ExitStack() as stack:
        cache_server = RedisServer(directory / "cache")
        cache_server.start()
        stack.callback(cache_server.stop)
        cache_url = cache_server.url + "/0"
        if layout == "rabbitmq":
            broker_url = stack.enter_context(rabbitmq_vhost())
        elif layout == "redis-separate":
            broker_server = RedisServer(directory / "broker")
            broker_server.start()
            stack.callback(broker_server.stop)
            broker_url = broker_server.url + "/0"
        else:  # what CTXCACHE_BROKER_URL unset gives: the cache's server, next db
            broker_url = CacheSettings.load(redis_url=cache_url).effective_broker_url
        cache = ContextCache.from_url(cache_url)
        runtime.configure(cache=cache)  # the booking hooks' cache
        if plan["worker_only"]:  # what Redis refused is left to the queued task alone
            runtime.get_pending().close()
        stack.callback(cache.close)
        stack.callback(runtime.reset)
        app = tasks.create_app(broker_url=broker_url)
        stack.callback(app.close)
        declare_queues(app)
        log = directory / "worker.log"
        env = {"CTXCACHE_REDIS_URL": cache_url, "CTXCACHE_BROKER_URL": broker_url}
        worker = CeleryWorker(env, log)
        worker.start()
        stack.callback(worker.stop)
        worker.wait_ready()
        result: dict[str, Any] = {"broker": broker_server_version(broker_url)}
        result["latency"] = measure_latency(app, cache, plan["latency_samples"])
        offset = log.stat().st_size  # what the worker logs from here is the fault run's
        result["faults"] = fault_run(app, cache, worker, cache_server, plan, rng)
        result["settle"] = settle(cache, result["faults"].pop("booked"), result["faults"], plan)
        result["settle"]["applied_later_by_hooks"] = cache.stats().hook_applied_later
        found = collections.Counter(_SAFETY_NET_LINE.findall(log.read_bytes()[offset:]))
        result["safety_net"] = {outcome.decode(): count for outcome, count in found.items()}
        return result


def declare_queues(app: Celery) -> None:
    with app.connection_for_write() as connection:
        for queue in app.conf.task_queues:
            queue.bind(connection.default_channel).declare()


def broker_server_version(url: str) -> str:
    with kombu.Connection(url, connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1)
        properties = getattr(connection.connection, "server_properties", {}) or {}
    version = properties.get("version")
    return f"RabbitMQ {version}" if version else "redis-server"


def context(phone: str) -> dict[str, Any]:
    return {"client": phone, "bookings": ["before"], "padding": "x" * 1024}


def queue_only(app: Celery, phone: str) -> None:
    """The first version's hook: validate, publish, nothing inline."""
    name, args, kwargs = ClientContext.of(phone, COMPANY).safety_net(None)
    app.tasks[name].apply_async(args, kwargs, retry=True, retry_policy=PUBLISH_RETRY_POLICY)


def measure_latency(app: Celery, cache: ContextCache, samples: int) -> dict[str, Any]:
    """Hook time and time until the context is gone, inline-first against queue-only (A B B A)."""
    hook: dict[str, list[int]] = {"inline_first": [], "queue_only": []}
    fresh: dict[str, list[int]] = {"inline_first": [], "queue_only": []}
    timeouts = 0
    for i in range(2 * (samples + UNTIMED)):
        path = "inline_first" if i % 4 in (0, 3) else "queue_only"
        phone = f"+7902{i:07d}"
        cache.set_cached_full_context(phone, COMPANY, context(phone))
        key = cache.client_keys(phone, COMPANY).full_context
        started = time.perf_counter_ns()
        if path == "inline_first":
            tasks.booking_created(phone, COMPANY, app=app)
        else:
            queue_only(app, phone)
        returned = time.perf_counter_ns()
        deadline = time.monotonic() + FRESH_TIMEOUT
        while cache.client.exists(key):
            if time.monotonic() > deadline:
                timeouts += 1
                break
            time.sleep(0.0002)
        gone = time.perf_counter_ns()
        if i >= 2 * UNTIMED:
            hook[path].append(returned - started)
            fresh[path].append(gone - started)
    return {
        "hook": {path: percentiles(ns) for path, ns in hook.items()},
        "fresh": {path: percentiles(ns) for path, ns in fresh.items()},
        "fresh_timeouts": timeouts,
    }


def fault_run(
    app: Celery,
    cache: ContextCache,
    worker: CeleryWorker,
    cache_server: RedisServer,
    plan: dict[str, Any],
    rng: random.Random,
) -> dict[str, Any]:
    bookings = plan["bookings"]
    phones = [f"+7901{i:07d}" for i in range(bookings)]
    for phone in phones:
        assert cache.set_cached_full_context(phone, COMPANY, context(phone))
    rng.shuffle(phones)
    window = range(bookings // 20, bookings - bookings // 20)
    moments = rng.sample(window, WORKER_KILLS + 1)
    kills, crash = set(moments[:WORKER_KILLS]), moments[WORKER_KILLS]
    outcomes: collections.Counter[str] = collections.Counter()
    latency: list[int] = []
    failed: list[str] = []
    events: list[dict[str, Any]] = []
    interval = plan["seconds"] / bookings
    crashed_at: float | None = None
    started = time.monotonic()
    for i, phone in enumerate(phones):
        time.sleep(max(0.0, started + i * interval - time.monotonic()))
        now = time.monotonic()
        if i in kills:
            worker.kill_restart()
            events.append({"at_s": round(now - started, 2), "event": "worker killed"})
        if i == crash:
            cache_server.kill()
            crashed_at = now
            events.append({"at_s": round(now - started, 2), "event": "cache crashed"})
        if crashed_at is not None and now - crashed_at >= CACHE_DOWN_SECONDS:
            cache_server.start(wait=False)  # its append-only file brings the contexts back
            crashed_at = None
            events.append({"at_s": round(now - started, 2), "event": "cache restarted"})
        begun = time.perf_counter_ns()
        try:
            outcomes[tasks.booking_created(phone, COMPANY, app=app).value] += 1
        except InvalidationFailedError:
            outcomes["failed"] += 1
            failed.append(phone)
        latency.append(time.perf_counter_ns() - begun)
    if crashed_at is not None:
        cache_server.start(wait=False)
    cache_server.wait_ready()
    return {
        "duration_s": round(time.monotonic() - started, 2),
        "outcomes": dict(outcomes),
        "hook_latency": percentiles(latency),
        "events": events,
        "failed": len(failed),
        "booked": phones,
    }


def settle(
    cache: ContextCache, phones: list[str], faults: dict[str, Any], plan: dict[str, Any]
) -> dict[str, Any]:
    """Wait (bounded) until no context is stale; with the worker alone carrying what Redis
    refused, until only those of the hooks that raised are (nothing else carries them)."""
    keys = [cache.client_keys(phone, COMPANY).full_context for phone in phones]
    floor = faults["failed"] if plan["worker_only"] else 0
    started = time.monotonic()
    trace: list[tuple[float, int]] = []
    while True:
        try:
            stale = int(cache.client.exists(*keys))
        except redis.RedisError:
            stale = -1  # not readable right now
        elapsed = time.monotonic() - started
        if not trace or trace[-1][1] != stale:
            trace.append((round(elapsed, 1), stale))
        if 0 <= stale <= floor or elapsed > plan["settle_s"]:
            break
        time.sleep(0.5)
    return {
        "stale": stale,
        "stale_reported_to_caller": faults["failed"],
        "settled_s": round(elapsed, 1),
        "waited_at_most_s": plan["settle_s"],
        "trace": trace,
    }


def percentiles(ns: list[int]) -> dict[str, float]:
    values = sorted(n / 1e6 for n in ns)
    cuts = (
        statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    )
    return {
        "p50_ms": round(cuts[49], 3),
        "p99_ms": round(cuts[98], 3),
        "max_ms": round(values[-1], 3),
        "n": len(values),
    }


def environment() -> dict[str, Any]:
    libraries = ("celery", "kombu", "redis")
    version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    server = version.stdout.split()
    return {
        **machine(libraries),
        "redis_server": next((w[2:] for w in server if w.startswith("v=")), "?"),
    }


def report(r: dict[str, Any]) -> str:
    env, plan = r["environment"], r["method"]
    libs = ", ".join(f"{name} {version}" for name, version in env["libraries"].items())
    faults = [["layout", "broker", "inline+queued", "queued only", "inline only", "raised"]]
    faults[0] += ["stale left", "settled", "hook p50", "hook p99", "owed, applied", "safety net"]
    latency = [["layout", "hook p50/p99: inline-first", "queue-only"]]
    latency[0] += ["context gone p50/p99: inline-first", "queue-only"]
    notes = []
    if plan["worker_only"]:
        carriers, floor = "owed invalidations left to the worker alone", "the hooks that raised"
    else:
        carriers, floor = "the hooks' process applies what Redis refused once it answers", "0"
    for name, layout in r["layouts"].items():
        if "error" in layout:
            notes.append(f"  {name}: FAILED: {layout['error']}")
            continue
        f, s, o = layout["faults"], layout["settle"], layout["faults"]["outcomes"]
        cells = [str(o.get(k, 0)) for k in ("inline_and_queued", "queued_only", "inline_only")]
        net = ", ".join(f"{k} {v}" for k, v in sorted(layout["safety_net"].items()))
        faults.append([
            name, layout["broker"], *cells, str(f["failed"]), str(s["stale"]),
            f"{s['settled_s']} s", f"{f['hook_latency']['p50_ms']:.2f} ms",
            f"{f['hook_latency']['p99_ms']:.1f} ms", str(s["applied_later_by_hooks"]), net,
        ])  # fmt: skip
        h, g = layout["latency"]["hook"], layout["latency"]["fresh"]

        def pair(d: dict[str, float]) -> str:
            return f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f} ms"

        latency.append([
            name, pair(h["inline_first"]), pair(h["queue_only"]),
            pair(g["inline_first"]), pair(g["queue_only"]),
        ])  # fmt: skip
        events = "; ".join(f"{e['event']} at {e['at_s']} s" for e in f["events"])
        notes.append(f"  {name}: {events}; stale over time {s['trace']}")
    return "\n".join([
        f"ctxcache fault benchmark{' (quick)' if r['quick'] else ''}, {env['date']}",
        f"  platform   {env['platform']}; {env['cpu']}",
        f"  python     {env['python']} ({libs}); redis-server {env['redis_server']}",
        f"  method     {plan['bookings']} bookings over {plan['seconds']:g} s, worker group"
        f" SIGKILLed {WORKER_KILLS}x, cache redis-server SIGKILLed once and restarted"
        f" {CACHE_DOWN_SECONDS:g} s later (seed {plan['seed']}); {carriers};"
        f" then at most {plan['settle_s']:g} s for the stale count to reach {floor}",
        "",
        table(faults),
        *notes,
        "",
        f"latency on a healthy system, {plan['latency_samples']} hooks per path, alternating:",
        table(latency),
    ])  # fmt: skip
