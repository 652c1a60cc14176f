"""The demo's command line: ``make demo``, ``python -m ctxcache.demo``, ``ctxcache demo``."""

from __future__ import annotations

import argparse
import os
import sqlite3
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Final

import redis
from rich.console import Console
from rich.progress import Progress

from ctxcache import sample_salon as salon
from ctxcache.demo.backends import embedded_backend, real_backend
from ctxcache.demo.common import NAMESPACE, DemoError, ms, timed
from ctxcache.demo.story import Story
from ctxcache.errors import CtxCacheError

__all__ = ["main"]

DEFAULT_DB: Final = (
    f"${salon.DEFAULT_DB_ENV}, else .ctxcache-demo/salon.sqlite3; created if missing"
)


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

        made, seconds = timed(lambda: salon.create_sample_database(path, progress=advance))
    console.print(f"created the sample salon database at {made} in {ms(seconds)}")
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
