"""``make demo``: the spec's story, played against the sample salon database.

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
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
import redis
from celery import Celery
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress
from rich.table import Table

from ctxcache import sample_salon as salon
from ctxcache.client.connection import connect
from ctxcache.client.sync import ContextCache
from ctxcache.client.vip import VipRegistry
from ctxcache.core.phone import mask_phone
from ctxcache.errors import CtxCacheError
from ctxcache.ops.namespace import delete_namespace
from ctxcache.settings import CacheSettings, redact_url

__all__ = ["main"]

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
QUEUES = ["ctxcache.invalidate", "ctxcache.warmup"]
# Every key the demo writes to a real server starts with this (or is a hash tag
# "{ctxcache-demo:...}"): cache and Redis broker alike.
NAMESPACE = "ctxcache-demo:"
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})
WORKER_START_TIMEOUT = 60.0
TASK_TIMEOUT = 30.0
# The spec's benchmark table: operation, what the spec says, that in seconds.
SPEC = {
    "db": ("database load", "~8.2 s", 8.2),
    "hit": ("cache load (hit)", "~2.7 s", 2.7),
    "set": ("save (set)", "~7.5 s", 7.5),
    "invalidate": ("invalidation (hook → gone)", "< 100 ms", 0.1),
}
EMBEDDED_NOTE = (
    "[bold]Embedded mode[/]: the cache server is fakeredis (in memory, with Lua) and the Celery"
    " worker runs in threads of this process (memory:// broker). Nothing is written to any"
    " server.\nTo run against a real Redis and a real worker:\n"
    "  CTXCACHE_REDIS_URL=redis://127.0.0.1:6379/0 make demo\n"
    f"(the broker is CTXCACHE_BROKER_URL, by default the same server's next db; the demo"
    f" writes only keys under {NAMESPACE} there and deletes them all at the end)"
)
SPEC_NOTE = (
    "The spec timed its Node service against the production database over an SSH tunnel; here"
    " the database is a local SQLite file, so the factors say as much about the setup as about"
    " the code. Invalidation: from the booking hook's call until the key is gone."
)
EMBEDDED_WORKER: dict[str, Any] = {"pool": "threads", "concurrency": 2, "loglevel": "WARNING"}
DEFAULT_DB = f"${salon.DEFAULT_DB_ENV}, else .ctxcache-demo/salon.sqlite3; created if missing"
EMBEDDED_STATS = (
    "The worker shares this cache object, so its invalidations and warm-up loads (two at a time,"
    " in threads of this process, hence the higher average) are counted here too."
)
_WARM_LINE = re.compile(r"warm-up of \S+ / \d+: (\w+)")  # what tasks.app logs per warm-up


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


@dataclass
class Backend:
    """What the story runs against: a cache, the publishing app and a worker."""

    cache: ContextCache
    app: Celery
    where: str  # the cache server, the broker and the worker, for the reader
    outcomes: Callable[[], Counter[str]] | None  # warm-up outcomes the worker reported
    embedded: bool = False
    farewell: list[str] = field(default_factory=list)  # what it left behind, said at the end


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def _table(*headers: str) -> Table:
    return Table(*headers, box=box.SIMPLE_HEAVY, show_edge=False)  # fits 80 columns, logs well


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def _wait(predicate: Callable[[], bool], what: str, every: float = 0.0005) -> float:
    """Poll ``predicate`` until true: the seconds it took, or DemoError after TASK_TIMEOUT."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > TASK_TIMEOUT:
            raise DemoError(f"timed out after {TASK_TIMEOUT:.0f} s waiting for {what}")
        time.sleep(every)
    return time.perf_counter() - started


# -- backends ---------------------------------------------------------------------------


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
    cache = ContextCache(server, CacheSettings.load(redis_url=None))
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
                    return Counter(_WARM_LINE.findall(log.read_text(errors="replace")))

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


# -- the story --------------------------------------------------------------------------


class Story:
    """The spec's story, step by step, told as it happens."""

    def __init__(self, console: Console, backend: Backend, db: Path, runs: int, quiet: bool):
        self.console, self.say, self.backend = console, console.print, backend
        self.cache, self.app = backend.cache, backend.app
        self.db, self.runs, self.quiet = db, runs, quiet
        self.loader = salon.SqlContextLoader(db)
        self.phone, self.company = salon.FIRST_PHONE, salon.FIRST_COMPANY_ID
        self.key = self.cache.client_keys(self.phone, self.company).full_context
        self.vips = salon.list_vip_clients(db)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.say(text, style="dim")

    def progress(self) -> Progress:
        # In a log (no terminal) a progress bar would only leave blank lines behind.
        hidden = self.quiet or not self.console.is_terminal
        return Progress(console=self.console, transient=True, disable=hidden)

    def load(self) -> tuple[dict[str, Any], str, float]:
        """The spec's "load context": the context, "hit" or "miss", and the seconds it took."""
        hits = self.cache.stats().hits
        load = self.cache.load_full_context
        context, seconds = _timed(lambda: load(self.phone, self.company, self.loader))
        if context is None:
            raise DemoError(f"the sample database does not know {mask_phone(self.phone)}")
        return context, "hit" if self.cache.stats().hits > hits else "miss", seconds

    def invalidate(self) -> tuple[str, float]:
        """The booking hook, then wait until the key is gone: its route and the seconds."""
        from tasks import booking_created

        started = time.perf_counter()
        route = booking_created(self.phone, self.company, app=self.app).value
        gone = lambda: not self.cache.client.exists(self.key)  # noqa: E731
        _wait(gone, f"the invalidation to apply (outcome {route})")
        return route, time.perf_counter() - started

    def run(self) -> None:
        self.console.rule("[bold]ctxcache demo: the spec's story on the sample salon database")
        embedded = self.backend.embedded
        self.say(Panel(EMBEDDED_NOTE if embedded else f"[bold]Real mode[/]: {self.backend.where}"))
        self.say(f"database: {self.db}\nclient:   {self.phone} of company {self.company} (VIP)")
        # Only the demo's own clients are touched: invalidated, so the first load is a miss.
        clients = {(self.phone, self.company), *self.vips}
        for phone, company in clients:
            self.cache.invalidate_cached_context(phone, company)
        self.note(f"invalidated the cached contexts of the demo's {len(clients)} clients (VIPs)")
        self.booking(self.first_loads())
        self.warm_up()
        self.benchmark()
        self.statistics()

    def first_loads(self) -> dict[str, Any]:
        self.console.rule("1. Load the client's context")
        context, kind, seconds = self.load()
        self.say(f"first load: {kind}, from the database in {_ms(seconds)}; now cached")
        self.console.rule("2. Load it again")
        _, kind, hit = self.load()
        self.say(f"second load: {kind}, from the cache in {_ms(hit)}, {seconds / hit:.0f}x faster")
        size, stored = len(orjson.dumps(context)), int(self.cache.client.strlen(self.key))
        self.say(f"context: {size:,} bytes of JSON, {stored:,} stored ({stored / size:.0%}, zstd)")
        return context

    def booking(self, before: dict[str, Any]) -> None:
        self.console.rule("3. A booking: the hook, the worker, a fresh context")
        booking_id = salon.create_booking(self.db, self.phone, self.company)
        self.say(f"created booking #{booking_id} in the database")
        route, seconds = self.invalidate()
        self.say(f"booking_created hook: invalidation {route}; key gone {_ms(seconds)} later")
        context, kind, load_seconds = self.load()
        self.say(f"next load: {kind}, from the database in {_ms(load_seconds)}")
        old = [b["booking_id"] for b in (before["client"] or {}).get("upcomingBookings", [])]
        upcoming = (context["client"] or {}).get("upcomingBookings", [])
        new = next((b for b in upcoming if b["booking_id"] == booking_id), None)
        if new is None or booking_id in old:
            raise DemoError(f"booking #{booking_id} is not new in the reloaded context")
        self.say(
            f"client.upcomingBookings now lists booking #{booking_id}: {new['start']},"
            f" «{new['service_title']}» with {new['staff_name']}, {new['cost']} ₽"
            f" ({len(upcoming)} upcoming, {len(old)} before)"
        )

    def warm_up(self) -> None:
        from tasks import WARM_ALL_TASK, WARM_ONE_TASK

        self.console.rule("4. A warm-up tick for the VIP clients")
        added = sum(VipRegistry(self.cache).add(phone, company) for phone, company in self.vips)
        self.say(f"VIP registry: the database's {len(self.vips)} VIPs ({added} new)")
        keys = [self.cache.client_keys(phone, company).full_context for phone, company in self.vips]
        cached_before = [bool(self.cache.client.exists(key)) for key in keys]
        reported = self.backend.outcomes
        seen = reported() if reported is not None else Counter[str]()
        lock_ms = int(self.cache.client.pttl(self.cache.keys.warmup_lock))
        if lock_ms > 0:  # not ours to delete: a beat's run may hold it
            self.say(
                f"this interval's warm-up lock is taken ({lock_ms // 1000} s left): queueing"
                " warm_context for each VIP instead"
            )
            for phone, company in self.vips:
                self.app.tasks[WARM_ONE_TASK].delay(phone, company)
        else:
            self.app.tasks[WARM_ALL_TASK].delay()
            self.say("queued warm_vip_contexts: the worker fans out one warm_context per VIP")

        def done() -> int:  # cached, and (when we can see it) reported by the worker
            cached = sum(bool(self.cache.client.exists(key)) for key in keys)
            return cached if reported is None else min(cached, (reported() - seen).total())

        with self.progress() as bar:
            task = bar.add_task("warming the VIP contexts", total=len(keys))

            def finished() -> bool:
                bar.update(task, completed=done())
                return done() >= len(keys)

            seconds = _wait(finished, "the VIP contexts to be cached", every=0.02)
        table = _table("client", "company", "cached before", "cached now")
        for (phone, company), was in zip(self.vips, cached_before, strict=True):
            shown = phone if phone == self.phone else mask_phone(phone)
            table.add_row(shown, str(company), "yes" if was else "no", "yes")
        self.say(table)
        outcomes = "see that worker's log"
        if reported is not None:
            outcomes = ", ".join(f"{n} {name}" for name, n in (reported() - seen).most_common())
        self.say(f"all {len(keys)} VIP contexts cached after {_ms(seconds)}; worker: {outcomes}")
        self.note("fresh: had more than the refresh threshold left to live, so not reloaded")

    def benchmark(self) -> None:
        self.console.rule(f"5. The spec's benchmark table, measured (median of {self.runs})")
        samples: dict[str, list[float]] = {name: [] for name in SPEC}
        with self.progress() as bar:
            task = bar.add_task("measuring", total=self.runs)
            for _ in range(self.runs):
                context, db_seconds = _timed(lambda: self.loader(self.phone, self.company))
                started = time.perf_counter()
                self.cache.set_cached_full_context(self.phone, self.company, context)
                samples["set"].append(time.perf_counter() - started)
                _, kind, hit_seconds = self.load()
                if kind != "hit":
                    raise DemoError("a load right after a save was not a cache hit")
                samples["db"].append(db_seconds)
                samples["hit"].append(hit_seconds)
                samples["invalidate"].append(self.invalidate()[1])
                bar.advance(task)
        median = f"ctxcache (median of {self.runs})"
        table = _table("operation", median, "spec", "factor")
        for name, (label, spec_text, spec_seconds) in SPEC.items():
            ours = statistics.median(samples[name])
            ratio = spec_seconds / ours
            better, worse = ("under", "over") if name == "invalidate" else ("faster", "slower")
            factor = f"{ratio:,.0f}x {better}" if ratio >= 1 else f"{1 / ratio:,.1f}x {worse}"
            table.add_row(label, _ms(ours), spec_text, factor)
        self.say(table)
        self.note(SPEC_NOTE)

    def statistics(self) -> None:
        s = self.cache.stats()
        table = _table("cache.stats()", "value")
        table.add_row("hits / misses", f"{s.hits} / {s.misses}")
        table.add_row("hit rate / miss rate", f"{s.hit_rate:.0%} / {s.miss_rate:.0%}")
        table.add_row("loads from the database", f"{s.loads}")
        table.add_row("average load time", _ms(s.average_load_seconds))
        table.add_row("sets / invalidations", f"{s.sets} / {s.invalidations}")
        table.add_row("errors", f"{s.errors}")
        if self.backend.embedded:  # the worker shares this cache object
            table.add_row("warm-ups written / fresh", f"{s.warm_written} / {s.warm_fresh}")
        self.say(table)
        self.note(
            EMBEDDED_STATS
            if self.backend.embedded
            else "These are this process's counters; the worker counts its own, not shown."
        )


# -- entry point ------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ctxcache.demo",
        description="Play the spec's story against the sample salon database: embedded"
        " (fakeredis and an in-process worker) unless CTXCACHE_REDIS_URL is set. On a real"
        f" Redis it writes only keys under {NAMESPACE} and deletes them all at the end.",
    )
    add = parser.add_argument
    add("--runs", type=int, default=5, help="runs per median (default 5)")
    add("--db", type=Path, help=f"the sample database (default: {DEFAULT_DB})")
    add("--quiet", action="store_true", help="no progress bars or explanations")
    add("--no-worker", action="store_true", help="with CTXCACHE_REDIS_URL: use a running worker")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.no_worker and not os.environ.get("CTXCACHE_REDIS_URL"):
        parser.error("--no-worker needs CTXCACHE_REDIS_URL: a real Redis and its worker")
    return args


def _database(console: Console, path: Path, quiet: bool) -> Path:
    if path.exists():
        return salon.create_sample_database(path)  # rebuilt only if incomplete
    with Progress(console=console, transient=True, disable=quiet or not console.is_terminal) as bar:
        task = bar.add_task("creating the sample salon database", total=None)

        def advance(step: str, company: int, companies: int) -> None:
            label = f"creating the sample database: company {company}/{companies}, {step}"
            bar.update(task, total=4 * companies, advance=1, description=label)

        made, seconds = _timed(lambda: salon.create_sample_database(path, progress=advance))
    console.print(f"created the sample salon database at {made} in {_ms(seconds)}")
    return made


def main(argv: list[str] | None = None) -> int:
    """Run the demo: 0 on success, 1 (and a message on stderr) otherwise."""
    args = _parse(argv)
    console, errors = Console(highlight=False), Console(stderr=True, highlight=False)
    url = os.environ.get("CTXCACHE_REDIS_URL") or None
    farewell: list[str] = []  # filled when the backend closes: what the demo left behind
    try:
        db = _database(console, (args.db or salon.default_db_path()).resolve(), args.quiet)
        with ExitStack() as stack:
            with nullcontext() if args.quiet else console.status("starting the Celery worker"):
                chosen = embedded_backend(db) if url is None else real_backend(db, url, args)
                backend = stack.enter_context(chosen)
            farewell = backend.farewell
            Story(console, backend, db, args.runs, args.quiet).run()
    except (DemoError, CtxCacheError, redis.RedisError, sqlite3.Error, OSError) as exc:
        errors.print(f"[bold red]demo failed:[/] {exc}")
        for line in farewell:
            errors.print(line)
        return 1
    except KeyboardInterrupt:
        errors.print("interrupted")
        for line in farewell:
            errors.print(line)
        return 130
    for line in farewell:
        console.print(line)
    console.print("[bold green]demo finished[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
