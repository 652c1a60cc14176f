"""The benchmarks write only their own keys, on the server ``--url`` names, and delete them.

Each run goes to a private redis-server seeded with "the user's" keys in the
database the benchmark uses and in others (the ones it used to flush), and
checks every one of them afterwards. Short runs: this is about what they touch,
not their figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from conftest import SpareRedis
from worker_support import REPO

DATABASES = (0, 7, 11, 12, 14)  # the one in --url, and those the benchmarks used to flush


def seed(port: int) -> dict[tuple[int, bytes], bytes]:
    """The user's keys in every database of DATABASES: (db, key) -> DUMP."""
    for db in DATABASES:
        client = redis.Redis(port=port, db=db)
        client.set("session:42", "logged in")
        client.zadd("ctxcache:vip", {"962302:+79001234567": 1.0})
        client.hset("ctxcache:stats", mapping={"hits": 41})
        client.set("full_context:962302:+79001234567", b'{"theirs": true}')
        # Their Redis broker, with an invalidation waiting for their workers.
        client.sadd("_kombu.binding.ctxcache.invalidate", "ctxcache.invalidate\x06\x16\x06\x16")
        client.lpush("ctxcache.invalidate", b'{"body": "their queued invalidation"}')
        client.close()
    return everything(port)


def everything(port: int) -> dict[tuple[int, bytes], bytes]:
    found = {}
    for db in range(16):
        client = redis.Redis(port=port, db=db)
        found.update({(db, key): client.dump(key) for key in client.scan_iter()})
        client.close()
    return found  # type: ignore[return-value]


def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CTXCACHE_")}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env={**environment, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_core_and_asyncio_run_on_the_url_given_and_leave_the_users_keys(
    spare_redis: SpareRedis, tmp_path: Path
) -> None:
    theirs = seed(spare_redis.port)
    url = f"redis://127.0.0.1:{spare_redis.port}/0"
    result = run(
        "-m", "ctxcache.ops.cli", "--url", url,
        "bench", "core", "--quick", "--iterations", "5", "--results", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads((tmp_path / "core.quick.json").read_text())
    assert figures["environment"]["redis_url"] == url  # --url reached the benchmark
    assert figures["memory"]["ctxcache"]["used_memory_delta"] > 0  # it did write, there
    assert figures["round_trips"]["pass"]
    result = run(
        "-m", "benchmarks", "asyncio", "--quick", "--url", url, "--results", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads((tmp_path / "asyncio.quick.json").read_text())
    for mode in ("copy", "shared"):
        hits = figures["l1_modes"][mode]["hits_per_second"]
        assert set(hits) == {"asyncio", "threads_100", "threads_8"}
        assert all(f["median"] > 0 for f in hits.values())
    assert everything(spare_redis.port) == theirs


def test_a_server_that_would_have_to_evict_is_refused(
    spare_redis: SpareRedis, tmp_path: Path
) -> None:
    admin = redis.Redis(port=spare_redis.port)
    admin.config_set("maxmemory", "30mb")
    admin.config_set("maxmemory-policy", "allkeys-lru")  # a cache server: ours would evict theirs
    theirs = seed(spare_redis.port)
    result = run(
        "-m", "benchmarks", "core", "--quick", "--url", f"redis://127.0.0.1:{spare_redis.port}/0",
        "--results", str(tmp_path),
    )  # fmt: skip
    assert result.returncode != 0
    assert "could evict or refuse other keys" in result.stderr
    assert everything(spare_redis.port) == theirs
    admin.close()


@pytest.mark.celery
def test_celery_suite_keeps_to_its_namespace_and_restores_the_config(
    spare_redis: SpareRedis, amqp_url: str, tmp_path: Path
) -> None:
    admin = redis.Redis(port=spare_redis.port)
    admin.config_set("notify-keyspace-events", "Ex")  # the user's own setting
    setting = admin.config_get("notify-keyspace-events")
    theirs = seed(spare_redis.port)
    url = f"redis://127.0.0.1:{spare_redis.port}/0"
    result = run(
        "-m", "benchmarks", "celery", "--quick", "--iterations", "5", "--results", str(tmp_path),
        CTXCACHE_REDIS_URL=url, CTXCACHE_BENCH_CELERY_AMQP_URL=amqp_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads((tmp_path / "celery.quick.json").read_text())
    assert figures["environment"]["cache_url"] == url
    for broker in ("redis", "rabbitmq"):
        assert figures["brokers"][broker]["warmup"]["cached"] == 200, figures["brokers"][broker]
    assert everything(spare_redis.port) == theirs  # their queued invalidation included
    assert admin.config_get("notify-keyspace-events") == setting  # the run's K$g is gone
    admin.close()


@pytest.mark.celery
def test_sections_and_l1_suites_run_tiny_and_keep_to_their_namespace(
    spare_redis: SpareRedis, tmp_path: Path
) -> None:
    theirs = seed(spare_redis.port)
    url = f"redis://127.0.0.1:{spare_redis.port}/0"
    result = run(
        "-m", "benchmarks", "sections", "l1", "--quick", "--iterations", "5", "--url", url,
        "--results", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    sections = json.loads((tmp_path / "sections.quick.json").read_text())
    assert sections["memory"]["one_company"]["sectioned"]["used_memory_delta"] > 0
    assert sections["staleness"]["fresh_at_first_read_after_hook"] == 5
    l1 = json.loads((tmp_path / "l1.quick.json").read_text())
    assert l1["wire"]["all_parts_in_l1"]["received"] < l1["wire"]["l1_off"]["received"] / 100
    assert l1["early_refresh"]["beta_0"]["loads_background"] == 0
    grace = l1["early_refresh"]["beta_1_grace_1"]  # quick: TTL 1 s, grace 1 s
    assert (grace["beta"], grace["stale_grace_s"]) == (1.0, 1)
    assert everything(spare_redis.port) == theirs
