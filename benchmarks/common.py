"""What every benchmark suite shares: options, the fixture, the bench namespace, reports.

Every suite writes only keys under :data:`NAMESPACE` (its cache through
``CTXCACHE_KEY_PREFIX``, the Redis broker through kombu's ``global_keyprefix``,
the floors and peers under explicit names), deletes them all at its start and
its end, and never flushes a database: the server it runs on may hold real data.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import redis

from ctxcache import ContextCache
from ctxcache.ops.namespace import delete_namespace
from ctxcache.settings import CacheSettings, redact_url

# The sample context ships with the repository, next to the tests that use it too.
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "full_context_300k.json"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
# Every key a suite writes starts with this, or is ctxcache's "{ctxcache-bench:...}" hash tag.
NAMESPACE = "ctxcache-bench:"
HEADROOM = 1.5  # room to keep below maxmemory beyond what a suite will write at its peak


def bench_url(args: argparse.Namespace) -> str:
    """``--url``, else ``CTXCACHE_REDIS_URL`` (``ctxcache --url ... bench`` sets it), else local."""
    return getattr(args, "url", None) or os.environ.get("CTXCACHE_REDIS_URL") or DEFAULT_URL


def iteration_options(args: argparse.Namespace) -> tuple[bool, int, int]:
    """``(quick, iterations, warm-up iterations)`` from the command line."""
    quick = bool(getattr(args, "quick", False))
    iterations = getattr(args, "iterations", None) or (30 if quick else 300)
    return quick, iterations, max(5, iterations // 10)


def load_fixture() -> tuple[Path, bytes, dict[str, Any]]:
    """The ~300 KB context (``CTXCACHE_FIXTURE`` overrides): path, raw JSON, parsed."""
    path = Path(os.environ.get("CTXCACHE_FIXTURE", FIXTURE))
    raw = path.read_bytes()
    context: dict[str, Any] = orjson.loads(raw)
    return path, raw, context


def bench_cache(url: str, prefix: str = NAMESPACE, **settings: Any) -> ContextCache:
    """A cache on ``url`` whose every key starts with ``prefix``.

    ``settings`` override fields of :class:`CacheSettings` (``l1_mode=...``);
    the rest come from the environment.
    """
    loaded = CacheSettings.load(redis_url=url, key_prefix=prefix, **settings)
    return ContextCache.from_settings(loaded)


def round_robin(
    ops: dict[str, Callable[[], object]], iterations: int, warmup: int
) -> dict[str, list[int]]:
    """Time every op once per iteration, the starting op rotating; nanoseconds per call.

    Machine noise then lands on all of them alike; compare their medians.
    """
    names = list(ops)
    timings: dict[str, list[int]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    gc.collect()  # the setup's garbage is nobody's cost
    for i in range(warmup + iterations):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            op = ops[name]
            start = clock()
            op()
            elapsed = clock() - start
            if i >= warmup:
                timings[name].append(elapsed)
    return timings


def machine(libraries: Iterable[str]) -> dict[str, Any]:
    """Date, machine, Python and library versions, for a suite's results."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "platform": platform.platform(),
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical CPUs)",
        "python": platform.python_version(),
        "libraries": {name: metadata.version(name) for name in libraries},
    }


def environment(admin: redis.Redis, url: str, libraries: Iterable[str]) -> dict[str, Any]:
    """:func:`machine`, and the Redis a suite ran on."""
    return {
        **machine(libraries),
        "redis_server": str(admin.info("server")["redis_version"]),
        "redis_url": redact_url(url),
    }


def used_memory(admin: redis.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


def memory_usage(admin: redis.Redis, keys: Iterable[str]) -> int:
    """The sum of ``MEMORY USAGE`` over ``keys`` (pipelined), which other clients cannot move."""
    pipe = admin.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(int(used or 0) for used in pipe.execute())


def delete_bench_keys(client: redis.Redis, *extra_patterns: str) -> int:
    """UNLINK every key of the bench namespace (and of ``extra_patterns``), and nothing else."""
    return delete_namespace(client, NAMESPACE, extra_patterns)


def ensure_room(admin: redis.Redis, peak_bytes: int, url: str) -> None:
    """Refuse to run when writing ``peak_bytes`` could reach the server's ``maxmemory``.

    There an evicting policy would drop other people's keys to make room for
    ours, and ``noeviction`` would fail their writes.
    """
    info = admin.info("memory")
    limit, used = int(info.get("maxmemory", 0)), int(info["used_memory"])
    if limit and used + HEADROOM * peak_bytes > limit:
        raise SystemExit(
            f"{redact_url(url)}: the benchmark writes up to {peak_bytes / 1e6:,.0f} MB at once;"
            f" with {used / 1e6:,.0f} MB used of maxmemory {limit / 1e6:,.0f} MB"
            f" ({info.get('maxmemory_policy')}) that could evict or refuse other keys."
            " Run it on another server (--url), or use --quick."
        )


def write_results(
    suite: str, quick: bool, results: dict[str, Any], directory: Path | None = None
) -> Path:
    """``results/<suite>.json`` (quick runs: ``<suite>.quick.json``, git-ignored)."""
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / (f"{suite}.quick.json" if quick else f"{suite}.json")
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def publish(
    suite: str, quick: bool, results: dict[str, Any], text: str, args: argparse.Namespace
) -> None:
    """Print a suite's report and write its figures (``--results`` or ``results/``)."""
    print(text)
    out = write_results(suite, quick, results, getattr(args, "results", None))
    print(f"\nfigures written to {out}")


def summary(ns: list[int]) -> dict[str, float]:
    ms = [n / 1e6 for n in ns]
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    return {"median_ms": round(statistics.median(ms), 4), "p90_ms": round(p90, 4), "n": len(ms)}


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def ms(value: float) -> str:
    return f"{value:.3f} ms"
