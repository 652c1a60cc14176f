"""``ctxcache stats`` and ``ctxcache metrics``: the fleet's counters, for people and Prometheus."""

import signal
import threading
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ctxcache.core.stats import HOOK_OUTCOMES, SAFETY_NET_OUTCOMES
from ctxcache.ops.doctor import human_bytes

from .base import EXIT_FAILED, EXIT_USAGE, AsJson, die, load_settings, print_json, session

__all__ = ["commands", "metrics", "stats"]

commands = typer.Typer()


@commands.command()
def stats(
    ctx: typer.Context,
    scan_limit: Annotated[int, typer.Option(min=1, help="count at most this many keys")] = 100_000,
    as_json: AsJson = False,
) -> None:
    """Hit rate, miss rate, average load time and cache size, summed over all workers."""
    from ctxcache.ops.metrics import cluster_stats

    with session(ctx) as cache:
        cache.client.ping()
        result = cluster_stats(cache, flush=False, scan_limit=scan_limit)
    if as_json:
        print_json(result.as_dict())
        return
    totals = result.totals
    table = Table("metric", "value", title="ctxcache, all workers")

    def counts(prefix: str, outcomes: tuple[str, ...]) -> str:
        return " / ".join(str(getattr(totals, prefix + name)) for name in outcomes)

    rows = [
        ("hit rate", f"{totals.hit_rate:.1%} ({totals.hits} hits)"),
        ("miss rate", f"{totals.miss_rate:.1%} ({totals.misses} misses)"),
        (
            "average load time",
            f"{totals.average_load_seconds * 1000:.1f} ms ({totals.loads} loads)",
        ),
        (
            "hits / misses by scope",
            f"client {totals.client_hits} / {totals.client_misses}, "
            f"company {totals.company_hits} / {totals.company_misses}",
        ),
        (
            "cached clients / company sections",
            f"{result.cached_contexts} / {result.cached_sections}",
        ),
        # MEMORY USAGE of the keys; `doctor` counts the values' bytes (STRLEN).
        (
            "cache size (Redis memory)",
            f"{human_bytes(result.total_bytes)} (clients {human_bytes(result.cached_bytes)}, "
            f"company sections {human_bytes(result.section_bytes)})",
        ),
        ("parts written / invalidated", f"{totals.sets} / {totals.invalidations}"),
        ("Redis errors / skipped (breaker open)", f"{totals.errors} / {totals.skipped}"),
        ("hooks: inline+queued / inline / queued / failed", counts("hook_", HOOK_OUTCOMES)),
        (
            "safety net: no-op / re-applied / unavailable",
            counts("safety_net_", SAFETY_NET_OUTCOMES),
        ),
        ("stampedes avoided", str(totals.coalesced)),
        (
            "stale hits (grace) / early refreshes",
            f"{totals.stale_hits} / {totals.early_refreshes}",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    if totals.loads:
        buckets = ", ".join(
            f"≤{bound:g} s: {count}" for bound, count in result.load_buckets.items() if count
        )
        table.add_row("loads by time (cumulative)", buckets)
    Console().print(table)


@commands.command()
def metrics(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="port (CTXCACHE_METRICS_PORT)")
    ] = None,
    addr: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Serve the Prometheus endpoint (/metrics) until Ctrl-C."""
    from ctxcache.ops.metrics import serve_metrics

    port = port or load_settings(ctx).metrics_port
    if port is None:
        die(EXIT_USAGE, "give --port or set CTXCACHE_METRICS_PORT")
    stop = threading.Event()
    with session(ctx) as cache:
        cache.client.ping()
        try:
            server = serve_metrics(cache, port, addr)
        except OSError as exc:
            die(EXIT_FAILED, f"cannot listen on {addr}:{port}: {exc}")
        typer.echo(f"serving http://{addr}:{port}/metrics; Ctrl-C stops", err=True)
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.shutdown()
