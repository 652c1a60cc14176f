"""``ctxcache warm``: warm the VIP contexts now, in this process or through the broker."""

import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Annotated, Any

import typer
from redis import exceptions as redis_errors
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ctxcache import ContextCache, WarmOutcome
from ctxcache.client.vip import VipRegistry
from ctxcache.core.phone import mask_phone
from ctxcache.errors import ConfigurationError, CtxCacheError
from ctxcache.protocols import ContextLoader, VipSource, resolve_callable, resolve_loader
from ctxcache.settings import redact_url

from .base import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    AsJson,
    die,
    load_settings,
    logger,
    print_json,
    session,
)

__all__ = ["commands", "warm"]

commands = typer.Typer()


def _resolve(path: str, variable: str) -> Any:
    """Like ``celery -A``: modules in the current directory are importable."""
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        if variable == "CTXCACHE_LOADER":
            return resolve_loader(path, variable=variable)
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


@commands.command()
def warm(
    ctx: typer.Context,
    queue: Annotated[
        bool, typer.Option("--queue", help="enqueue ctxcache.warm_vip_contexts instead")
    ] = False,
    refresh_threshold: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="reload contexts with fewer seconds to live (CTXCACHE_WARMUP_REFRESH_THRESHOLD)",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="loads at once")] = 1,
    as_json: AsJson = False,
) -> None:
    """Warm up the VIP contexts now, in this process (loader: CTXCACHE_LOADER)."""
    if queue:
        _enqueue_warm_up(ctx, as_json, refresh_threshold)
        return
    settings = load_settings(ctx)
    if not settings.loader:
        die(
            EXIT_USAGE,
            "CTXCACHE_LOADER is not set: name the function that loads a context, "
            "e.g. CTXCACHE_LOADER=ctxcache.sample_salon:load_context",
        )
    counts: Counter[str] = Counter({outcome.value: 0 for outcome in WarmOutcome})
    counts.update(invalid=0, failed=0)
    with session(ctx) as cache:
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
            die(EXIT_FAILED, f"the VIP source failed: {exc}")
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
        print_json({"vips": len(vips), **counts})
    else:
        table = Table("outcome", "count", title=f"{len(vips)} VIP context(s)")
        for outcome, count in counts.items():
            table.add_row(outcome, str(count))
        Console().print(table)
    if bad:
        raise typer.Exit(EXIT_FAILED)


def _enqueue_warm_up(ctx: typer.Context, as_json: bool, refresh_threshold: float | None) -> None:
    from ctxcache.ops.doctor import broker_url

    settings = load_settings(ctx)
    try:
        url, _ = broker_url(settings)
        from tasks import WARM_ALL_TASK, create_app
        from tasks.hooks import PUBLISH_RETRY_POLICY

        celery_app = create_app(broker_url=url)
    except ConfigurationError as exc:
        die(EXIT_USAGE, str(exc))
    try:
        options = {} if refresh_threshold is None else {"refresh_threshold": refresh_threshold}
        result = celery_app.tasks[WARM_ALL_TASK].apply_async(
            kwargs=options, retry=True, retry_policy=PUBLISH_RETRY_POLICY
        )
    except Exception as exc:  # kombu, socket and broker errors alike
        die(EXIT_UNREACHABLE, f"could not publish to the broker {redact_url(url)}: {exc}")
    finally:
        celery_app.close()
    if as_json:
        print_json({"queued": WARM_ALL_TASK, "task_id": result.id, "broker": redact_url(url)})
    else:
        typer.echo(
            f"queued {WARM_ALL_TASK} ({result.id}) on {redact_url(url)}; a worker on "
            "ctxcache.warmup runs it (it skips if another run holds this interval)"
        )
