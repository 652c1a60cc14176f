"""The suite empties only a database it owns: a user's data behind CTXCACHE_TEST_REDIS_URL is safe.

Against private redis-servers, so the real test database is not disturbed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from conftest import (
    OWNER_KEY,
    TEST_NAMESPACE,
    NotOurDatabase,
    SpareRedis,
    claim_test_database,
    clear_test_database,
)
from servers import ServerProcess
from worker_support import REPO

# What a user might keep in the database they point the suite at by mistake.
FOREIGN = {
    "ctxcache:vip": ("zadd", {"962302:+79001234567": 1.0}),
    "ctxcache:stats": ("hset", {"hits": "41"}),
    "full_context:962302:+79001234567": ("set", b"\x00ctx\x01\x00{}"),
    "session:42": ("set", b"logged in"),
}


def seed(client: redis.Redis) -> dict[bytes, bytes]:
    """Write FOREIGN; returns each key's DUMP, to prove later it was not touched."""
    for key, (command, value) in FOREIGN.items():
        if command == "zadd":
            client.zadd(key, value)  # type: ignore[arg-type]
        elif command == "hset":
            client.hset(key, mapping=value)  # type: ignore[arg-type]
        else:
            client.set(key, value)  # type: ignore[arg-type]
    return {key.encode(): client.dump(key) for key in FOREIGN}  # type: ignore[misc]


def dumps(client: redis.Redis) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in client.scan_iter()}  # type: ignore[misc]


def test_an_empty_database_is_marked_and_then_accepted(spare_redis: SpareRedis) -> None:
    client = redis.Redis.from_url(spare_redis.url)
    claim_test_database(client, spare_redis.url)
    assert client.exists(OWNER_KEY)
    client.set("left:by:a:test", "1")  # the suite's own leftovers do not make it foreign
    claim_test_database(client, spare_redis.url)
    client.close()


def test_a_database_with_only_the_suites_namespace_is_claimed(spare_redis: SpareRedis) -> None:
    # An interrupted run can leave its Redis broker's bindings without the marker.
    client = redis.Redis.from_url(spare_redis.url)
    client.set(TEST_NAMESPACE + "broker:_kombu.binding.ctxcache.invalidate", "1")
    claim_test_database(client, spare_redis.url)
    assert client.exists(OWNER_KEY)
    client.flushdb()
    client.set(TEST_NAMESPACE + "broker:x", "1")
    client.set("someone:else", "1")
    with pytest.raises(NotOurDatabase):
        claim_test_database(client, spare_redis.url)
    assert not client.exists(OWNER_KEY)
    client.close()


def test_a_database_with_foreign_keys_is_refused_and_left_alone(spare_redis: SpareRedis) -> None:
    client = redis.Redis.from_url(spare_redis.url)
    before = seed(client)
    with pytest.raises(NotOurDatabase, match=r"holds 4 keys that the test suite did not write"):
        claim_test_database(client, spare_redis.url)
    assert dumps(client) == before  # no marker added, nothing changed
    client.close()


def test_clearing_keeps_the_suites_namespace_only(spare_redis: SpareRedis) -> None:
    client = redis.Redis.from_url(spare_redis.url)
    claim_test_database(client, spare_redis.url)
    binding = TEST_NAMESPACE + "broker:_kombu.binding.ctxcache.invalidate"  # a broker's queue
    client.sadd(binding, "ctxcache.invalidate")
    client.mset({f"test:key:{i}": i for i in range(2500)})  # more than one UNLINK batch
    clear_test_database(client)
    assert sorted(client.scan_iter()) == sorted([OWNER_KEY.encode(), binding.encode()])
    client.close()


def test_the_suite_stops_before_any_test_on_a_foreign_database(spare_redis: SpareRedis) -> None:
    """Run a real-Redis test as a user would, with the URL pointing at their data."""
    client = redis.Redis.from_url(spare_redis.url)
    before = seed(client)
    env = {**os.environ, "CTXCACHE_TEST_REDIS_URL": spare_redis.url, "CI": "true"}
    test = "tests/contract/test_cache.py::test_miss_set_hit_invalidate[sync-redis]"  # empties it
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", test],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "refusing to empty it" in output
    assert f"127.0.0.1:{spare_redis.port}/0 holds 4 keys" in output
    assert " passed" not in output  # it stopped before the test ran
    assert dumps(client) == before
    client.close()


def test_a_test_server_refuses_a_port_someone_listens_on(tmp_path: Path) -> None:
    # Otherwise the Cluster/Sentinel fixtures would talk to (and flush) that server.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        server = ServerProcess(port, tmp_path, ["--port", str(port)])
        with pytest.raises(RuntimeError, match=f"port {port} is in use"):
            server.start()
        assert server.process is None
