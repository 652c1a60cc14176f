"""Context loaders for benchmark workers: ``CTXCACHE_LOADER=benchmarks.loaders:<name>``.

They stand in for the database with a known, fixed cost, so that a warm-up's
throughput can be set against the ideal (worker processes / load time).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import orjson

__all__ = ["FIXTURE", "LOAD_SECONDS", "fixed_20ms", "fixture_context"]

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared/fixtures/full_context_300k.json"
LOAD_SECONDS = 0.02


@functools.cache
def fixture_context() -> dict[str, Any]:
    """The ~300 KB fixture context (``CTXCACHE_FIXTURE`` overrides), read once per process."""
    context: dict[str, Any] = orjson.loads(
        Path(os.environ.get("CTXCACHE_FIXTURE", FIXTURE)).read_bytes()
    )
    return context


def fixed_20ms(phone: str, company_id: int) -> dict[str, Any]:
    """The fixture context for this client, returned 20 ms after the call (reading included)."""
    started = time.perf_counter()
    context = {**fixture_context(), "phone": phone, "companyId": company_id}
    remaining = LOAD_SECONDS - (time.perf_counter() - started)
    if remaining > 0:
        time.sleep(remaining)
    return context
