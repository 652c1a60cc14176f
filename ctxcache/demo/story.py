"""The spec's story, played step by step against the sample salon and told as it happens."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

import orjson
from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress

from ctxcache import sample_salon as salon
from ctxcache.client.vip import VipRegistry
from ctxcache.core.phone import mask_phone
from ctxcache.demo import sections
from ctxcache.demo.backends import Backend
from ctxcache.demo.common import NAMESPACE, DemoError, RecordingLoader, ms, table, timed, wait

__all__ = ["Story"]

# The spec's benchmark table: operation, what the spec says, that in seconds.
SPEC: Final = {
    "db": ("database load", "~8.2 s", 8.2),
    "hit": ("cache load (hit)", "~2.7 s", 2.7),
    "set": ("save (set)", "~7.5 s", 7.5),
    "invalidate": ("invalidation (hook → gone)", "< 100 ms", 0.1),
}
EMBEDDED_NOTE: Final = (
    "[bold]Embedded mode[/]: the cache server is fakeredis (in memory, with Lua) and the Celery"
    " worker runs in threads of this process (memory:// broker). Nothing is written to any"
    " server.\nTo run against a real Redis and a real worker:\n"
    "  CTXCACHE_REDIS_URL=redis://127.0.0.1:6379/0 make demo\n"
    f"(the broker is CTXCACHE_BROKER_URL, by default the same server's next db; the demo"
    f" writes only keys under {NAMESPACE} there and deletes them all at the end)"
)
SPEC_NOTE: Final = (
    "The spec timed its Node service against the production database over an SSH tunnel; here"
    " the database is a local SQLite file, so the factors say as much about the setup as about"
    " the code. Invalidation: from the booking hook's call until the key is gone."
)
EMBEDDED_STATS: Final = (
    "The worker shares this cache object, so its invalidations and warm-up loads (two at a time,"
    " in threads of this process, hence the higher average) are counted here too."
)


class Story:
    """The spec's story, step by step, told as it happens.

    Client A is the sample salon's first client (a VIP); client B is another
    client of the same company, not a VIP, so that the warm-up step warms
    the VIPs alone.
    """

    def __init__(self, console: Console, backend: Backend, db: Path, runs: int, quiet: bool):
        self.console, self.say, self.backend = console, console.print, backend
        self.cache, self.app = backend.cache, backend.app
        self.db, self.runs, self.quiet = db, runs, quiet
        self.loader = RecordingLoader(db)
        self.phone, self.company = salon.FIRST_PHONE, salon.FIRST_COMPANY_ID
        self.key = self.cache.client_keys(self.phone, self.company).full_context
        self.vips = salon.list_vip_clients(db)
        vip_phones = {phone for phone, company in self.vips if company == self.company}
        candidates = salon.sample_clients(db, self.company, len(vip_phones) + 2)
        others = [phone for phone in candidates if phone not in vip_phones | {self.phone}]
        if not others:
            raise DemoError(f"the sample database {db} has no client of {self.company} but VIPs")
        self.other = others[0]

    def note(self, text: str) -> None:
        if not self.quiet:
            self.say(text, style="dim")

    def progress(self) -> Progress:
        # In a log (no terminal) a progress bar would only leave blank lines behind.
        hidden = self.quiet or not self.console.is_terminal
        return Progress(console=self.console, transient=True, disable=hidden)

    def load(self, phone: str | None = None) -> tuple[dict[str, Any], str, float]:
        """The spec's "load context": the context, "hit" or "miss", and the seconds it took."""
        phone = phone or self.phone
        hits = self.cache.stats().hits
        load = self.cache.load_full_context
        context, seconds = timed(lambda: load(phone, self.company, self.loader))
        if context is None:
            raise DemoError(f"the sample database does not know {mask_phone(phone)}")
        return context, "hit" if self.cache.stats().hits > hits else "miss", seconds

    def invalidate(self) -> tuple[str, float]:
        """The booking hook, then wait until A's key is gone: its route and the seconds."""
        from tasks import booking_created

        started = time.perf_counter()
        route = booking_created(self.phone, self.company, app=self.app).value
        gone = lambda: not self.cache.client.exists(self.key)  # noqa: E731
        wait(gone, f"the invalidation to apply (outcome {route})")
        return route, time.perf_counter() - started

    def run(self) -> None:
        self.console.rule("[bold]ctxcache demo: the spec's story on the sample salon database")
        embedded = self.backend.embedded
        self.say(Panel(EMBEDDED_NOTE if embedded else f"[bold]Real mode[/]: {self.backend.where}"))
        self.say(
            f"database: {self.db}\nclient A: {self.phone} of company {self.company} (VIP)\n"
            f"client B: {mask_phone(self.other)} of the same company"
        )
        # Only the demo's own clients are touched: invalidated, so the first load is a miss.
        clients = {(self.phone, self.company), (self.other, self.company), *self.vips}
        for phone, company in clients:
            self.cache.invalidate_cached_context(phone, company)
        for company in {company for _, company in clients}:
            self.cache.invalidate_company(company)
        self.note(
            f"invalidated the cached contexts of the demo's {len(clients)} clients (A, B and the"
            " VIPs) and their companies' sections"
        )
        before = self.first_loads()
        sections.booking_for_two_clients(self, before)
        self.warm_up()
        sections.company_clients(self)
        self.benchmark()
        self.statistics()

    def first_loads(self) -> dict[str, Any]:
        self.console.rule("1. Load client A's context")
        context, kind, seconds = self.load()
        fetched = sections.fetched(self.loader.take())
        self.say(f"first load: {kind}, from the database in {ms(seconds)} ({fetched}); now cached")
        self.console.rule("2. Load it again")
        _, kind, hit = self.load()
        self.say(f"second load: {kind}, from the cache in {ms(hit)}, {seconds / hit:.0f}x faster")
        report = self.cache.describe_cached_context(self.phone, self.company)
        if report is None:
            raise DemoError("Redis could not be read to describe the cached context")
        own = sum(part.stored_bytes for part in report.parts if part.scope == "client")
        shared = [part for part in report.parts if part.scope == "company" and part.found]
        size, stored = len(orjson.dumps(context)), own + sum(p.stored_bytes for p in shared)
        self.say(
            f"context: {size:,} bytes of JSON, {stored:,} stored ({stored / size:.0%}, zstd):"
            f" A's own part {own:,}, the company's {len(shared)} sections"
            f" {stored - own:,}, stored once for all its clients"
        )
        return context

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

            seconds = wait(finished, "the VIP contexts to be cached", every=0.02)
        rows = table("client", "company", "cached before", "cached now")
        for (phone, company), was in zip(self.vips, cached_before, strict=True):
            shown = phone if phone == self.phone else mask_phone(phone)
            rows.add_row(shown, str(company), "yes" if was else "no", "yes")
        self.say(rows)
        outcomes = "see that worker's log"
        if reported is not None:
            outcomes = ", ".join(f"{n} {name}" for name, n in (reported() - seen).most_common())
        self.say(f"all {len(keys)} VIP contexts cached after {ms(seconds)}; worker: {outcomes}")
        self.note("fresh: had more than the refresh threshold left to live, so not reloaded")

    def benchmark(self) -> None:
        self.console.rule(f"6. The spec's benchmark table, measured (median of {self.runs})")
        samples: dict[str, list[float]] = {name: [] for name in SPEC}
        with self.progress() as bar:
            task = bar.add_task("measuring", total=self.runs)
            for _ in range(self.runs):
                context, db_seconds = timed(lambda: self.loader(self.phone, self.company))
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
        rows = table("operation", median, "spec", "factor")
        for name, (label, spec_text, spec_seconds) in SPEC.items():
            ours = statistics.median(samples[name])
            ratio = spec_seconds / ours
            better, worse = ("under", "over") if name == "invalidate" else ("faster", "slower")
            factor = f"{ratio:,.0f}x {better}" if ratio >= 1 else f"{1 / ratio:,.1f}x {worse}"
            rows.add_row(label, ms(ours), spec_text, factor)
        self.say(rows)
        self.note(SPEC_NOTE)

    def statistics(self) -> None:
        s = self.cache.stats()
        rows = table("cache.stats()", "value")
        rows.add_row("hits / misses", f"{s.hits} / {s.misses}")
        rows.add_row("hit rate / miss rate", f"{s.hit_rate:.0%} / {s.miss_rate:.0%}")
        rows.add_row("loads from the database", f"{s.loads}")
        rows.add_row("average load time", ms(s.average_load_seconds))
        rows.add_row("sets / invalidations", f"{s.sets} / {s.invalidations}")
        rows.add_row("errors", f"{s.errors}")
        if self.backend.embedded:  # the worker shares this cache object
            rows.add_row("warm-ups written / fresh", f"{s.warm_written} / {s.warm_fresh}")
        self.say(rows)
        self.note(
            EMBEDDED_STATS
            if self.backend.embedded
            else "These are this process's counters; the worker counts its own, not shown."
        )
