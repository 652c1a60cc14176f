"""``ctxcache doctor``, ``demo`` and ``bench``: commands that run larger parts of the project."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .base import EXIT_FAILED, EXIT_USAGE, AsJson, die, load_settings, print_json, url_option

__all__ = ["bench", "commands", "demo", "doctor"]

commands = typer.Typer()

REPO_ROOT = Path(__file__).resolve().parents[3]
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@commands.command()
def doctor(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(min=0.1, max=30, help="seconds per network step")] = 2.0,
    as_json: AsJson = False,
) -> None:
    """Check Redis, the cache, the broker and the workers; each failure names its fix."""
    from ctxcache.ops.doctor import run_checks, verdict

    settings = load_settings(ctx)  # a bad setting exits 2, as for every command
    reason = "given with --url" if url_option(ctx) else None
    checks = run_checks(settings, timeout=timeout, reason=reason)
    failed = [check for check in checks if check.status == "FAIL"]
    if as_json:
        print_json(
            {
                "ok": not failed,
                "failed": len(failed),
                "skipped": sum(check.status == "SKIP" for check in checks),
                "checks": [check.as_dict() for check in checks],
            }
        )
    else:
        console = Console(highlight=False, soft_wrap=True)
        colour = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "dim"}
        for check in checks:
            status = check.status
            name, detail = escape(check.name), escape(check.detail)
            console.print(f"[{colour[status]}]{status}[/] [bold]{name}[/]: {detail}")
            if check.fix and status != "PASS":
                console.print(f"      fix: {escape(check.fix)}")
        console.print(f"[bold]{verdict(checks)}[/]")
    if failed:
        raise typer.Exit(EXIT_FAILED)


@commands.command(context_settings=PASS_THROUGH)
def demo(ctx: typer.Context) -> None:
    """Run the end-to-end demo; arguments go to it (`ctxcache demo -- --help`)."""
    from ctxcache.demo import main as demo_main

    load_settings(ctx)  # a bad setting exits 2 here, before the demo starts anything
    url = url_option(ctx)
    if url:
        os.environ["CTXCACHE_REDIS_URL"] = url
    raise typer.Exit(demo_main(list(ctx.args)))


@commands.command(context_settings=PASS_THROUGH)
def bench(
    ctx: typer.Context,
    suites: Annotated[
        list[str] | None,
        typer.Argument(help="suites (default all); options such as --quick pass on"),
    ] = None,
) -> None:
    """Run the benchmarks (python -m benchmarks) from the repository checkout."""
    if not (REPO_ROOT / "benchmarks" / "__main__.py").is_file():
        die(
            EXIT_USAGE, f"no benchmarks/ in {REPO_ROOT}: run this from a checkout of the repository"
        )
    load_settings(ctx)  # a bad setting exits 2 here, not in the benchmark subprocess
    env = dict(os.environ)
    url = url_option(ctx)
    if url:
        env["CTXCACHE_REDIS_URL"] = url
    command = [sys.executable, "-m", "benchmarks", *(suites or []), *ctx.args]
    raise typer.Exit(subprocess.call(command, cwd=REPO_ROOT, env=env))  # noqa: S603
