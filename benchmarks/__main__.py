"""``python -m benchmarks [suite ...]``: run the named suites, or every registered one."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Suite name -> module exposing ``run(args: argparse.Namespace) -> dict``.
# Registering a suite is one line here.
SUITES: dict[str, str] = {
    "core": "benchmarks.core",
    "celery": "benchmarks.celery_tasks",
    "peers": "benchmarks.peers",
    "faults": "benchmarks.faults",
    "sections": "benchmarks.sections",
    "l1": "benchmarks.l1",
    "asyncio": "benchmarks.aio",
    "security": "benchmarks.security",
    "scaleout": "benchmarks.scaleout",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run ctxcache's benchmark suites against a Redis (and RabbitMQ). They write"
        " only keys under ctxcache-bench: (and the RabbitMQ vhost ctxcache_bench) and delete"
        " those keys at the end; no database is flushed. See benchmarks/README.md.",
    )
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"suites to run (default: all): {', '.join(SUITES)}",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="timed iterations per operation (default 300, or 30 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run (30 iterations, 100 contexts): a smoke test",
    )
    parser.add_argument(
        "--url",
        default=None,
        help="the Redis to run on (default: CTXCACHE_REDIS_URL, else redis://127.0.0.1:6379/0);"
        " only keys under ctxcache-bench: are written there, and deleted at the end",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write the figures (default: benchmarks/results)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    if args.iterations is not None and args.iterations < 1:
        parser.error("--iterations must be at least 1")
    args.suites = args.suites or list(SUITES)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    args = parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    for name in args.suites:
        suite = importlib.import_module(SUITES[name])
        results[name] = suite.run(args)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
