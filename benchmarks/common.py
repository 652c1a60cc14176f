"""What every benchmark suite shares: options, the fixture, scratch databases, reports."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import orjson
import redis

from ctxcache.settings import redact_url

# The sample context ships with the repository, next to the tests that use it too.
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "full_context_300k.json"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


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


def scratch_client(url: str) -> redis.Redis:
    """A client for a database the suite will flush; db 0 is refused."""
    client = redis.Redis.from_url(url)
    if client.connection_pool.connection_kwargs.get("db", 0) == 0:
        client.close()
        raise SystemExit(f"{redact_url(url)}: choose a database other than 0; it is flushed")
    return client


def write_results(suite: str, quick: bool, results: dict[str, Any]) -> Path:
    """``results/<suite>.json`` (quick runs: ``<suite>.quick.json``, git-ignored)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / (f"{suite}.quick.json" if quick else f"{suite}.json")
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


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
