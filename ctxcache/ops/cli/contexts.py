"""``ctxcache get`` and ``ctxcache invalidate``: one client's cached context."""

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ctxcache.core.wire import ENCODING_ZSTD, MAGIC
from ctxcache.errors import UndecodableValueError
from ctxcache.ops.doctor import human_bytes

from .base import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    AsJson,
    Company,
    Phone,
    die,
    print_json,
    session,
)

__all__ = ["commands", "get", "invalidate"]

commands = typer.Typer()


def _expiry(seconds: float | None) -> str:
    """``expires in 11 h 59 min``, or ``no expiry`` for a key without a TTL."""
    if seconds is None:
        return "no expiry"
    hours, rest = divmod(int(seconds), 3600)
    left = f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
    return f"expires in {left}"


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


@commands.command()
def get(
    ctx: typer.Context,
    phone: Phone,
    company_id: Company,
    raw: Annotated[bool, typer.Option("--raw", help="print the cached context's JSON")] = False,
    as_json: AsJson = False,
) -> None:
    """Summarize a client's cached context: sections, sizes, compression, TTL. Exit 1 if absent."""
    if raw and as_json:
        die(EXIT_USAGE, "use either --raw or --json")
    with session(ctx) as cache:
        normalized, company = cache.identify(phone, company_id)
        key = cache.keys.full_context(company, normalized)
        pipe = cache.client.pipeline(transaction=True)
        pipe.get(key)
        pipe.pttl(key)
        value, pttl = pipe.execute()
    summary: dict[str, Any] = {"key": key, "phone": normalized, "company_id": company}
    if value is None:
        if as_json:
            print_json({**summary, "cached": False})
        else:
            typer.echo(f"not cached: {key}", err=True)
        raise typer.Exit(EXIT_FAILED)
    try:
        context = cache.codec.decode(value)
    except UndecodableValueError as exc:
        die(EXIT_FAILED, f"{key} holds a value that cannot be decoded: {exc}")
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
        print_json(summary)
        return
    console = Console()
    console.print(f"[bold]{escape(key)}[/]")
    ratio, expiry = summary["compression_ratio"], _expiry(summary["ttl_seconds"])
    console.print(
        f"stored {human_bytes(len(value))} ({encoding}), JSON {human_bytes(json_bytes)}, "
        f"compression {ratio}x, {expiry}"
    )
    table = Table("section", "type", "JSON size", "share")
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        share = f"{size / json_bytes:.0%}"
        table.add_row(escape(name), _json_type(context[name]), human_bytes(size), share)
    console.print(table)


@commands.command()
def invalidate(
    ctx: typer.Context, phone: Phone, company_id: Company, as_json: AsJson = False
) -> None:
    """Delete a client's cached context and void the loads in flight (as a booking does)."""
    with session(ctx) as cache:
        keys = cache.client_keys(phone, company_id)
        was_cached = bool(cache.client.exists(keys.full_context))  # raises if unreachable
        if not cache.invalidate_cached_context(phone, company_id):
            die(EXIT_UNREACHABLE, f"Redis did not take the invalidation of {keys.full_context}")
    if as_json:
        print_json({"key": keys.full_context, "invalidated": True, "was_cached": was_cached})
    else:
        what = "the cached context was deleted" if was_cached else "nothing was cached"
        typer.echo(f"invalidated {keys.full_context}: {what}")
