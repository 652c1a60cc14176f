"""A process of sync callers for the mixed-client stampede test (run as a script).

``python stampede_worker.py URL THREADS TOTAL``: THREADS threads of one
ContextCache call ``load_full_context`` for the same missing client; prints
their results and this process's load count as JSON. The loader counts its
calls in Redis (``LOADS``) and holds the load until all TOTAL callers of every
process have arrived (``ARRIVED``), so that they all miss together.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

PHONE = "+79001234567"
COMPANY = 962302
LOADS = "stampede:loads"
ARRIVED = "stampede:arrived"
CONTEXT = {"client": {"name": "Anna"}, "services": [{"id": 1, "price": 1500}]}
HOLD = 0.3  # once all arrived: long enough for every caller to find the load lock taken


def everyone_arrived(arrived: int, total: int) -> bool:
    return arrived >= total


def main(url: str, threads: int, total: int) -> None:
    from ctxcache import ContextCache

    cache = ContextCache.from_url(url)

    def loader(phone: str, company_id: int) -> dict[str, Any]:
        cache.client.incr(LOADS)
        deadline = time.monotonic() + 20
        while not everyone_arrived(int(cache.client.get(ARRIVED) or 0), total):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        time.sleep(HOLD)
        return CONTEXT

    results: list[Any] = []

    def call() -> None:
        cache.client.incr(ARRIVED)
        results.append(cache.load_full_context(PHONE, COMPANY, loader))

    callers = [threading.Thread(target=call) for _ in range(threads)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=60)
    print(json.dumps({"results": results, "loads": cache.stats().loads}))
    cache.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
