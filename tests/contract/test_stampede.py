"""Load-through loads once across coroutines and processes mixing both clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ctxcache import AsyncContextCache

from . import stampede_worker as worker
from .conftest import Backend

COROUTINES = 50
THREADS = 4  # in the other process, with the sync client


def test_coroutines_and_a_sync_process_missing_one_client_load_it_once(
    networked_backend: Backend,
) -> None:
    total = COROUTINES + THREADS
    # The other process starts first: its callers arrive while the coroutines wait.
    other = subprocess.Popen(
        [
            sys.executable,
            str(Path(worker.__file__)),
            str(networked_backend.url),
            str(THREADS),
            str(total),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        results, loads = asyncio.run(stampede(networked_backend, total))
        out, _ = other.communicate(timeout=60)
    finally:
        other.kill()
    theirs = json.loads(out)
    assert int(networked_backend.admin.get(worker.LOADS)) == 1  # one load, whichever side won
    assert loads + theirs["loads"] == 1
    assert len(results) == COROUTINES
    assert len(theirs["results"]) == THREADS
    assert all(result == worker.CONTEXT for result in results + theirs["results"])


async def stampede(backend: Backend, total: int) -> tuple[list[Any], int]:
    async with AsyncContextCache(backend.connect_async()) as cache:

        async def loader(phone: str, company_id: int) -> dict[str, Any]:
            await cache.client.incr(worker.LOADS)
            for _ in range(2000):  # at most 20 s
                if worker.everyone_arrived(int(await cache.client.get(worker.ARRIVED) or 0), total):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(worker.HOLD)
            return worker.CONTEXT

        async def call() -> Any:
            await cache.client.incr(worker.ARRIVED)
            return await cache.load_full_context(worker.PHONE, worker.COMPANY, loader)

        # redis.asyncio.RedisCluster (redis-py 8.1, retries off) races when many commands
        # are its very first ones: the cache's own trips read the slot map first; the
        # loader's raw client calls above need it read before they run together.
        await cache.ping()
        results = await asyncio.gather(*(call() for _ in range(COROUTINES)))
        return list(results), cache.stats().loads
