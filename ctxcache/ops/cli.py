"""The ``ctxcache`` command: look into the cache and operate it from a shell.

Configured like the library, from ``CTXCACHE_*`` variables (``--url`` overrides
``CTXCACHE_REDIS_URL``). Tables for people, ``--json`` for scripts (JSON on
stdout and nothing else). Exit codes: 0 ok; 1 a check failed or nothing was
found; 2 bad input or configuration; 3 Redis (or the broker) unreachable.
"""

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from redis import exceptions as redis_errors
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ctxcache.client.sync import ContextCache, WarmOutcome
from ctxcache.client.vip import VipRegistry
from ctxcache.core.phone import mask_phone
from ctxcache.core.wire import ENCODING_ZSTD, MAGIC
from ctxcache.errors import (
    CacheUnavailableError,
    ConfigurationError,
    CtxCacheError,
    InvalidCompanyIdError,
    InvalidPhoneError,
    UndecodableValueError,
)
from ctxcache.ops.doctor import human_bytes
from ctxcache.ops.tunnel.commands import app as tunnel_app
from ctxcache.protocols import ContextLoader, VipSource, resolve_callable
from ctxcache.settings import CacheSettings, redact_url

__all__ = ["app", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
REPO_ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger("ctxcache")

app = typer.Typer(
    name="ctxcache",
    help="Inspect and operate the ctxcache full-context cache in Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold a password
)
vip_app = typer.Typer(help="The VIP clients the warm-up keeps cached.", no_args_is_help=True)
app.add_typer(vip_app, name="vip")
app.add_typer(tunnel_app, name="tunnel")

Phone = Annotated[str, typer.Argument(help="client phone, any format (+79001234567, 8 900 ...)")]
Company = Annotated[str, typer.Argument(help="company id, a positive integer")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON for scripts, nothing else")]
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@dataclass
class _State:
    url: str | None = None


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


@app.callback()
def _main(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option("--url", help="Redis URL, instead of CTXCACHE_REDIS_URL")
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="log more (-vv: debug)")
    ] = 0,
) -> None:
    ctx.obj = _State(url=url)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)])

    def restore() -> None:  # leave the library's logger as it was (tests, embedding)
        logger.removeHandler(handler)
        logger.setLevel(level)

    ctx.call_on_close(restore)


def _die(code: int, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(ctx: typer.Context) -> CacheSettings:
    url = ctx.obj.url if isinstance(ctx.obj, _State) else None
    try:
        return CacheSettings.load(redis_url=url) if url else CacheSettings.load()
    except ConfigurationError as exc:
        _die(EXIT_USAGE, str(exc))


@contextlib.contextmanager
def _session(ctx: typer.Context) -> Iterator[ContextCache]:
    """A cache from the settings; bad input exits 2, an unreachable Redis 3."""
    settings = _settings(ctx)
    reason = "--url" if isinstance(ctx.obj, _State) and ctx.obj.url else settings.url_reason
    where = f"{redact_url(settings.effective_redis_url)} ({reason})"
    cache = ContextCache.from_settings(settings)
    try:
        yield cache
    except (ConfigurationError, InvalidPhoneError, InvalidCompanyIdError) as exc:
        _die(EXIT_USAGE, str(exc))
    except redis_errors.AuthenticationError as exc:
        _die(EXIT_UNREACHABLE, f"Redis at {where} refused the login: {exc}; set REDIS_PASSWORD")
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, CacheUnavailableError) as exc:
        _die(
            EXIT_UNREACHABLE,
            f"Redis at {where} is unreachable: {str(exc).rstrip('.')}; try `ctxcache doctor`",
        )
    except redis_errors.InvalidResponse as exc:
        _die(EXIT_UNREACHABLE, f"{where} does not answer as Redis: {exc}; wrong port or scheme?")
    except redis_errors.RedisError as exc:
        _die(EXIT_FAILED, f"Redis at {where} answered with an error: {exc}")
    finally:
        cache.close()


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data).decode() + "\n")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "no expiry"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


# -- get / invalidate ---------------------------------------------------------------------


@app.command()
def get(
    ctx: typer.Context,
    phone: Phone,
    company_id: Company,
    raw: Annotated[bool, typer.Option("--raw", help="print the cached context's JSON")] = False,
    as_json: AsJson = False,
) -> None:
    """Summarize a client's cached context: sections, sizes, compression, TTL. Exit 1 if absent."""
    if raw and as_json:
        _die(EXIT_USAGE, "use either --raw or --json")
    with _session(ctx) as cache:
        normalized, company = cache.identify(phone, company_id)
        key = cache.keys.full_context(company, normalized)
        pipe = cache.client.pipeline(transaction=True)
        pipe.get(key)
        pipe.pttl(key)
        value, pttl = pipe.execute()
    summary: dict[str, Any] = {"key": key, "phone": normalized, "company_id": company}
    if value is None:
        if as_json:
            _print_json({**summary, "cached": False})
        else:
            typer.echo(f"not cached: {key}", err=True)
        raise typer.Exit(EXIT_FAILED)
    try:
        context = cache.codec.decode(value)
    except UndecodableValueError as exc:
        _die(EXIT_FAILED, f"{key} holds a value that cannot be decoded: {exc}")
    if raw:
        sys.stdout.write(orjson.dumps(context).decode() + "\n")
        return
    json_bytes = len(orjson.dumps(context))
    if not value.startswith(MAGIC):
        encoding = "plain JSON (another writer)"
    else:
        encoding = "zstd" if value[len(MAGIC) + 1] == ENCODING_ZSTD else "JSON"
    sizes = {name: len(orjson.dumps(item)) for name, item in context.items()}
    sections = [
        {"name": name, "type": _json_type(item), "json_bytes": sizes[name]}
        for name, item in context.items()
    ]
    summary.update(
        cached=True,
        encoding=encoding,
        stored_bytes=len(value),
        json_bytes=json_bytes,
        compression_ratio=round(json_bytes / len(value), 2),
        ttl_seconds=pttl / 1000 if pttl >= 0 else None,
        sections=sections,
    )
    if as_json:
        _print_json(summary)
        return
    console = Console()
    console.print(f"[bold]{escape(key)}[/]")
    ratio, ttl = summary["compression_ratio"], _duration(summary["ttl_seconds"])
    console.print(
        f"stored {human_bytes(len(value))} ({encoding}), JSON {human_bytes(json_bytes)}, "
        f"compression {ratio}x, expires in {ttl}"
    )
    table = Table("section", "type", "JSON size", "share")
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        share = f"{size / json_bytes:.0%}"
        table.add_row(escape(name), _json_type(context[name]), human_bytes(size), share)
    console.print(table)


@app.command()
def invalidate(
    ctx: typer.Context, phone: Phone, company_id: Company, as_json: AsJson = False
) -> None:
    """Delete a client's cached context and void the loads in flight (as a booking does)."""
    with _session(ctx) as cache:
        keys = cache.client_keys(phone, company_id)
        was_cached = bool(cache.client.exists(keys.full_context))  # raises if unreachable
        if not cache.invalidate_cached_context(phone, company_id):
            _die(EXIT_UNREACHABLE, f"Redis did not take the invalidation of {keys.full_context}")
    if as_json:
        _print_json({"key": keys.full_context, "invalidated": True, "was_cached": was_cached})
    else:
        what = "the cached context was deleted" if was_cached else "nothing was cached"
        typer.echo(f"invalidated {keys.full_context}: {what}")


# -- vip ----------------------------------------------------------------------------------


@vip_app.command("add")
def vip_add(ctx: typer.Context, phone: Phone, company_id: Company, as_json: AsJson = False) -> None:
    """Add a VIP client: the warm-up keeps their context cached."""
    with _session(ctx) as cache:
        normalized, company = cache.identify(phone, company_id)
        added = VipRegistry(cache).add(normalized, company)
    if as_json:
        _print_json({"phone": normalized, "company_id": company, "added": added})
    else:
        typer.echo(f"{'added' if added else 'already a VIP:'} {normalized} / {company}")


@vip_app.command("remove")
def vip_remove(
    ctx: typer.Context, phone: Phone, company_id: Company, as_json: AsJson = False
) -> None:
    """Remove a VIP client. Exit 1 if they were not one."""
    with _session(ctx) as cache:
        normalized, company = cache.identify(phone, company_id)
        removed = VipRegistry(cache).remove(normalized, company)
    if as_json:
        _print_json({"phone": normalized, "company_id": company, "removed": removed})
    else:
        typer.echo(f"{'removed' if removed else 'not a VIP:'} {normalized} / {company}")
    if not removed:
        raise typer.Exit(EXIT_FAILED)


@vip_app.command("list")
def vip_list(
    ctx: typer.Context,
    company: Annotated[str | None, typer.Option("--company", help="only this company")] = None,
    show_phones: Annotated[
        bool, typer.Option("--show-phones", help="print full phones (masked by default)")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="rows to print, 0 = all")] = 1000,
    as_json: AsJson = False,
) -> None:
    """List the VIP clients (phones masked unless --show-phones)."""
    rows: list[tuple[str, int]] = []
    count = 0
    with _session(ctx) as cache:
        for page in VipRegistry(cache).pages(company):
            count += len(page)
            rows.extend(page[: max(0, limit - len(rows))] if limit else page)
    shown = [(p if show_phones else mask_phone(p), c) for p, c in rows]
    if as_json:
        vips = [{"phone": p, "company_id": c} for p, c in shown]
        _print_json({"count": count, "vips": vips, "truncated": len(rows) < count})
        return
    table = Table("company", "phone", title=f"{count} VIP client(s)")
    for phone, company_id in shown:
        table.add_row(str(company_id), phone)
    Console().print(table)
    if len(rows) < count:
        typer.echo(f"showing {len(rows)} of {count}; --limit 0 shows all", err=True)


# -- warm ---------------------------------------------------------------------------------


def _resolve(path: str, variable: str) -> Any:
    """Like ``celery -A``: modules in the current directory are importable."""
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        return resolve_callable(path, variable=variable)
    finally:
        sys.path.remove(cwd)


def _warm_one(cache: ContextCache, loader: ContextLoader, vip: Any, threshold: float | None) -> str:
    try:
        phone, company_id = cache.identify(*vip)
    except (CtxCacheError, TypeError, ValueError) as exc:
        logger.error("skipping a VIP entry: %s", exc)
        return "invalid"
    try:
        return cache.warm_full_context(phone, company_id, loader, threshold).value
    except Exception as exc:  # the loader's own errors: count them, warm the others
        logger.error("warm-up of %s / %s failed: %s", mask_phone(phone), company_id, exc)
        return "failed"


@app.command()
def warm(
    ctx: typer.Context,
    queue: Annotated[
        bool, typer.Option("--queue", help="enqueue ctxcache.warm_vip_contexts instead")
    ] = False,
    refresh_threshold: Annotated[
        float | None,
        typer.Option(
            help="reload contexts with fewer seconds to live (CTXCACHE_WARMUP_REFRESH_THRESHOLD)"
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="loads at once")] = 1,
    as_json: AsJson = False,
) -> None:
    """Warm up the VIP contexts now, in this process (loader: CTXCACHE_LOADER)."""
    if queue:
        _enqueue_warm_up(ctx, as_json)
        return
    settings = _settings(ctx)
    if not settings.loader:
        _die(
            EXIT_USAGE,
            "CTXCACHE_LOADER is not set: name the function that loads a context, "
            "e.g. CTXCACHE_LOADER=ctxcache.sample_salon:load_context",
        )
    counts: Counter[str] = Counter({outcome.value: 0 for outcome in WarmOutcome})
    counts.update(invalid=0, failed=0)
    with _session(ctx) as cache:
        loader: ContextLoader = _resolve(settings.loader, "CTXCACHE_LOADER")
        source: VipSource = (
            _resolve(settings.vip_source, "CTXCACHE_VIP_SOURCE")
            if settings.vip_source
            else VipRegistry(cache)
        )
        cache.client.ping()
        try:
            vips = list(source())
        except redis_errors.RedisError:
            raise
        except Exception as exc:
            _die(EXIT_FAILED, f"the VIP source failed: {exc}")
        if not vips:
            typer.echo(
                "no VIP clients: add some with `ctxcache vip add PHONE COMPANY_ID`", err=True
            )
        progress = Progress(console=Console(stderr=True), disable=as_json)
        with progress, ThreadPoolExecutor(concurrency) as pool:
            task = progress.add_task("warming VIP contexts", total=len(vips))
            futures = [pool.submit(_warm_one, cache, loader, v, refresh_threshold) for v in vips]
            for future in as_completed(futures):
                counts[future.result()] += 1
                progress.advance(task)
    bad = counts["failed"] + counts["invalid"] + counts[WarmOutcome.UNAVAILABLE.value]
    if as_json:
        _print_json({"vips": len(vips), **counts})
    else:
        table = Table("outcome", "count", title=f"{len(vips)} VIP context(s)")
        for outcome, count in counts.items():
            table.add_row(outcome, str(count))
        Console().print(table)
    if bad:
        raise typer.Exit(EXIT_FAILED)


def _enqueue_warm_up(ctx: typer.Context, as_json: bool) -> None:
    from ctxcache.ops.doctor import broker_url

    settings = _settings(ctx)
    try:
        url, _ = broker_url(settings)
        from tasks import WARM_ALL_TASK, create_app
        from tasks.hooks import PUBLISH_RETRY_POLICY

        celery_app = create_app(broker_url=url)
    except ConfigurationError as exc:
        _die(EXIT_USAGE, str(exc))
    try:
        result = celery_app.tasks[WARM_ALL_TASK].apply_async(
            retry=True, retry_policy=PUBLISH_RETRY_POLICY
        )
    except Exception as exc:  # kombu, socket and broker errors alike
        _die(EXIT_UNREACHABLE, f"could not publish to the broker {redact_url(url)}: {exc}")
    finally:
        celery_app.close()
    if as_json:
        _print_json({"queued": WARM_ALL_TASK, "task_id": result.id, "broker": redact_url(url)})
    else:
        typer.echo(
            f"queued {WARM_ALL_TASK} ({result.id}) on {redact_url(url)}; a worker on "
            "ctxcache.warmup runs it (it skips if another run holds this interval)"
        )


# -- stats / metrics ----------------------------------------------------------------------


@app.command()
def stats(
    ctx: typer.Context,
    scan_limit: Annotated[int, typer.Option(min=1, help="count at most this many keys")] = 100_000,
    as_json: AsJson = False,
) -> None:
    """Hit rate, miss rate, average load time and cache size, summed over all workers."""
    from ctxcache.ops.metrics import cluster_stats

    with _session(ctx) as cache:
        cache.client.ping()
        result = cluster_stats(cache, flush=False, scan_limit=scan_limit)
    if as_json:
        _print_json(result.as_dict())
        return
    totals = result.totals
    table = Table("metric", "value", title="ctxcache, all workers")
    rows = [
        ("hit rate", f"{totals.hit_rate:.1%} ({totals.hits} hits)"),
        ("miss rate", f"{totals.miss_rate:.1%} ({totals.misses} misses)"),
        (
            "average load time",
            f"{totals.average_load_seconds * 1000:.1f} ms ({totals.loads} loads)",
        ),
        ("cached contexts", f"{result.cached_contexts}"),
        ("cache size", human_bytes(result.cached_bytes)),
        ("written / invalidated", f"{totals.sets} / {totals.invalidations}"),
        ("Redis errors", str(totals.errors)),
        ("stampedes avoided", str(totals.coalesced)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    if totals.loads:
        buckets = ", ".join(
            f"≤{bound:g} s: {count}" for bound, count in result.load_buckets.items() if count
        )
        table.add_row("loads by time (cumulative)", buckets)
    Console().print(table)


@app.command()
def metrics(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="port (CTXCACHE_METRICS_PORT)")
    ] = None,
    addr: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Serve the Prometheus endpoint (/metrics) until Ctrl-C."""
    from ctxcache.ops.metrics import serve_metrics

    port = port or _settings(ctx).metrics_port
    if port is None:
        _die(EXIT_USAGE, "give --port or set CTXCACHE_METRICS_PORT")
    stop = threading.Event()
    with _session(ctx) as cache:
        cache.client.ping()
        try:
            server = serve_metrics(cache, port, addr)
        except OSError as exc:
            _die(EXIT_FAILED, f"cannot listen on {addr}:{port}: {exc}")
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


# -- doctor / demo / bench ----------------------------------------------------------------


@app.command()
def doctor(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(min=0.1, max=30, help="seconds per network step")] = 2.0,
    as_json: AsJson = False,
) -> None:
    """Check Redis, the cache, the broker and the workers; each failure names its fix."""
    from ctxcache.ops.doctor import diagnose

    url = ctx.obj.url if isinstance(ctx.obj, _State) else None
    checks = diagnose(url, timeout=timeout)
    failed = [check for check in checks if not check.ok]
    if as_json:
        _print_json({"ok": not failed, "checks": [check.as_dict() for check in checks]})
    else:
        console = Console(highlight=False, soft_wrap=True)
        colour = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "dim"}
        for check in checks:
            status = check.status
            name, detail = escape(check.name), escape(check.detail)
            console.print(f"[{colour[status]}]{status}[/] [bold]{name}[/]: {detail}")
            if check.fix and status != "PASS":
                console.print(f"      fix: {escape(check.fix)}")
        verdict = f"{len(failed)} of {len(checks)} checks failed" if failed else "all checks passed"
        console.print(f"[bold]{verdict}[/]")
    if failed:
        raise typer.Exit(EXIT_FAILED)


@app.command(context_settings=PASS_THROUGH)
def demo(ctx: typer.Context) -> None:
    """Run the end-to-end demo; arguments go to it (`ctxcache demo -- --help`)."""
    from ctxcache.demo import main as demo_main

    if isinstance(ctx.obj, _State) and ctx.obj.url:
        os.environ["CTXCACHE_REDIS_URL"] = ctx.obj.url
    raise typer.Exit(demo_main(list(ctx.args)))


@app.command(context_settings=PASS_THROUGH)
def bench(
    ctx: typer.Context,
    suites: Annotated[
        list[str] | None,
        typer.Argument(help="suites (default all); options such as --quick pass on"),
    ] = None,
) -> None:
    """Run the benchmarks (python -m benchmarks) from the repository checkout."""
    if not (REPO_ROOT / "benchmarks" / "__main__.py").is_file():
        _die(
            EXIT_USAGE, f"no benchmarks/ in {REPO_ROOT}: run this from a checkout of the repository"
        )
    env = dict(os.environ)
    if isinstance(ctx.obj, _State) and ctx.obj.url:
        env["CTXCACHE_REDIS_URL"] = ctx.obj.url
    command = [sys.executable, "-m", "benchmarks", *(suites or []), *ctx.args]
    raise typer.Exit(subprocess.call(command, cwd=REPO_ROOT, env=env))  # noqa: S603


def main() -> None:
    app()


if __name__ == "__main__":
    main()
