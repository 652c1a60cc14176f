"""``ctxcache get`` and ``ctxcache invalidate``: one client's cached context."""

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ctxcache.core.keys import validate_company_id
from ctxcache.errors import CacheUnavailableError
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


def _span(seconds: float | None) -> str:
    """``11 h 59 min``, or ``no expiry`` for a key without a TTL."""
    if seconds is None:
        return "no expiry"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def _ttl(part: Any) -> str:
    """The part's TTL; for a stale part, the grace it has left."""
    if part.stale:
        return f"stale, {_span(part.grace_seconds)} of grace left"
    return _span(part.ttl_seconds)


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
    """Show a client's cached context part by part: found or not, sizes, TTL, age. Exit 1 if absent.

    A context is the client's own part plus its company's sections, cached once
    per company; it is cached only when every part it needs is there.
    """
    if raw and as_json:
        die(EXIT_USAGE, "use either --raw or --json")
    with session(ctx) as cache:
        normalized, company = cache.identify(phone, company_id)
        cache.client.ping()  # raises what is wrong, for the exit code and message
        report = cache.describe_cached_context(normalized, company)
        if report is None:
            raise CacheUnavailableError("the parts could not be read")
    key = cache.keys.full_context(company, normalized)
    summary: dict[str, Any] = {"key": key, "phone": normalized, "company_id": company}
    broken = [part for part in report.parts if part.problem]
    if broken:
        part = broken[0]
        die(EXIT_FAILED, f"{part.key} holds a value that cannot be decoded: {part.problem}")
    context = report.context
    if context is None:
        if as_json:
            print_json({**summary, "cached": False, "parts": [_part_json(p) for p in report.parts]})
        else:
            missing = ", ".join(p.name for p in report.parts if not p.found)
            typer.echo(f"not cached: {key} (missing: {missing})", err=True)
        raise typer.Exit(EXIT_FAILED)
    if raw:
        sys.stdout.write(orjson.dumps(context).decode() + "\n")
        return
    found = [part for part in report.parts if part.found]
    stored = sum(part.stored_bytes for part in found)
    json_bytes = sum(part.json_bytes for part in found)
    sizes = {name: len(orjson.dumps(item)) for name, item in context.items()}
    summary.update(
        cached=True,
        layout="whole context (an older writer)" if report.whole else "parts",
        stored_bytes=stored,
        json_bytes=json_bytes,
        compression_ratio=round(json_bytes / stored, 2) if stored else None,
        parts=[_part_json(part) for part in report.parts],
        sections=[
            {"name": name, "type": _json_type(item), "json_bytes": sizes[name]}
            for name, item in context.items()
        ],
    )
    if as_json:
        print_json(summary)
        return
    console = Console()
    console.print(f"[bold]{escape(key)}[/]")
    console.print(
        f"{len(found)} part(s), stored {human_bytes(stored)} for {human_bytes(json_bytes)} "
        f"of JSON (compression {summary['compression_ratio']}x)"
    )
    parts = Table("part", "scope", "found", "stored", "JSON", "TTL", "age")
    for part in report.parts:
        parts.add_row(
            escape(part.name),
            part.scope,
            "hit" if part.found else "miss",
            human_bytes(part.stored_bytes) if part.found else "",
            human_bytes(part.json_bytes) if part.found else "",
            _ttl(part) if part.found else "",
            _span(part.age_seconds) if part.age_seconds is not None else "",
        )
    console.print(parts)
    table = Table("section", "type", "JSON size", "share")
    total = sum(sizes.values()) or 1
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        table.add_row(
            escape(name), _json_type(context[name]), human_bytes(size), f"{size / total:.0%}"
        )
    console.print(table)


def _part_json(part: Any) -> dict[str, Any]:
    return {
        "name": part.name,
        "scope": part.scope,
        "key": part.key,
        "found": part.found,
        "stored_bytes": part.stored_bytes,
        "json_bytes": part.json_bytes,
        "ttl_seconds": part.ttl_seconds,
        "age_seconds": part.age_seconds,
        "stale": part.stale,
        "grace_seconds": part.grace_seconds,
    }


@commands.command()
def invalidate(
    ctx: typer.Context,
    phone: Annotated[
        str | None, typer.Argument(help="client phone, any format (omit with --company)")
    ] = None,
    company_id: Annotated[str | None, typer.Argument(help="company id of the client")] = None,
    company: Annotated[
        str | None,
        typer.Option("--company", help="invalidate this company's sections instead"),
    ] = None,
    sections: Annotated[
        list[str] | None,
        typer.Option("--section", help="with --company: only this section (repeatable)"),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Delete a client's part (as a booking does), or with --company a company's sections.

    Either way the loads in flight are voided, so none of them writes stale data back.
    """
    if company is not None:
        if phone is not None or company_id is not None:
            die(EXIT_USAGE, "give either PHONE COMPANY_ID or --company CID, not both")
        _invalidate_company(ctx, company, sections, as_json)
        return
    if phone is None or company_id is None:
        die(EXIT_USAGE, "give PHONE COMPANY_ID, or --company CID [--section NAME]")
    if sections:
        die(EXIT_USAGE, "--section goes with --company")
    with session(ctx) as cache:
        keys = cache.client_keys(phone, company_id)
        was_cached = bool(cache.client.exists(keys.full_context))  # raises if unreachable
        if not cache.invalidate_cached_context(phone, company_id):
            die(EXIT_UNREACHABLE, f"Redis did not take the invalidation of {keys.full_context}")
    if as_json:
        print_json({"key": keys.full_context, "invalidated": True, "was_cached": was_cached})
    else:
        what = "the cached part was deleted" if was_cached else "nothing was cached"
        typer.echo(f"invalidated {keys.full_context}: {what}")


def _invalidate_company(
    ctx: typer.Context, company: str, sections: list[str] | None, as_json: bool
) -> None:
    with session(ctx) as cache:
        names = cache.core.layout.company_names(sections or None)  # bad names: exit 2
        cache.client.ping()  # raises what is wrong, for the exit code and message
        done = cache.apply_company_invalidation(company, names)
        if done is None:
            die(EXIT_UNREACHABLE, f"Redis did not take the invalidation of company {company}")
    label = cache.keys.company(validate_company_id(company)).label
    if as_json:
        print_json({"company": label, "invalidated": list(done.sections)})
    else:
        typer.echo(f"invalidated {label}: {', '.join(done.sections)}")
