"""``ctxcache vip add|remove|list``: the registry of VIP clients the warm-up keeps cached."""

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ctxcache.client.vip import VipRegistry
from ctxcache.core.phone import mask_phone

from .base import EXIT_FAILED, AsJson, Company, Phone, print_json, session

__all__ = ["commands", "vip_add", "vip_list", "vip_remove"]

commands = typer.Typer(help="The VIP clients the warm-up keeps cached.", no_args_is_help=True)


@commands.command("add")
def vip_add(ctx: typer.Context, phone: Phone, company_id: Company, as_json: AsJson = False) -> None:
    """Add a VIP client: the warm-up keeps their context cached."""
    with session(ctx) as cache:
        normalized, company = cache.identify(phone, company_id)
        added = VipRegistry(cache).add(normalized, company)
    if as_json:
        print_json({"phone": normalized, "company_id": company, "added": added})
    else:
        typer.echo(f"{'added' if added else 'already a VIP:'} {normalized} / {company}")


@commands.command("remove")
def vip_remove(
    ctx: typer.Context, phone: Phone, company_id: Company, as_json: AsJson = False
) -> None:
    """Remove a VIP client. Exit 1 if they were not one."""
    with session(ctx) as cache:
        normalized, company = cache.identify(phone, company_id)
        removed = VipRegistry(cache).remove(normalized, company)
    if as_json:
        print_json({"phone": normalized, "company_id": company, "removed": removed})
    else:
        typer.echo(f"{'removed' if removed else 'not a VIP:'} {normalized} / {company}")
    if not removed:
        raise typer.Exit(EXIT_FAILED)


@commands.command("list")
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
    with session(ctx) as cache:
        for page in VipRegistry(cache).pages(company):
            count += len(page)
            rows.extend(page[: max(0, limit - len(rows))] if limit else page)
    shown = [(p if show_phones else mask_phone(p), c) for p, c in rows]
    if as_json:
        vips = [{"phone": p, "company_id": c} for p, c in shown]
        print_json({"count": count, "vips": vips, "truncated": len(rows) < count})
        return
    table = Table("company", "phone", title=f"{count} VIP client(s)")
    for phone, company_id in shown:
        table.add_row(str(company_id), phone)
    Console().print(table)
    if len(rows) < count:
        typer.echo(f"showing {len(rows)} of {count}; --limit 0 shows all", err=True)
