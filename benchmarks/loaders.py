"""Context loaders for benchmark workers: ``CTXCACHE_LOADER=benchmarks.loaders:<name>``.

They stand in for the database with a known, fixed cost, so that a warm-up's
throughput can be set against the ideal (worker processes / load time).
"""

from __future__ import annotations

import functools
import time
from typing import Any

from benchmarks.common import load_fixture

__all__ = ["LOAD_SECONDS", "fixed_20ms", "fixture_context"]

LOAD_SECONDS = 0.02


@functools.cache
def fixture_context() -> dict[str, Any]:
    """The ~300 KB fixture context (``CTXCACHE_FIXTURE`` overrides), read once per process."""
    return load_fixture()[2]


def fixed_20ms(phone: str, company_id: int) -> dict[str, Any]:
    """The fixture context for this client, returned 20 ms after the call (reading included)."""
    started = time.perf_counter()
    context = {**fixture_context(), "phone": phone, "companyId": company_id}
    remaining = LOAD_SECONDS - (time.perf_counter() - started)
    if remaining > 0:
        time.sleep(remaining)
    return context
