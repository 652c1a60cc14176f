"""A hit's round trip on a single server: one script call, sent without a pipeline.

Both clients send a round trip of one script straight on a pooled connection.
These tests hold them to what the pipeline did: a script the server forgot is
sent again with its source, an error the server answers is a counted miss
that leaves the connection usable. On a private server, whose command
counters and script cache no one else uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from conftest import COMPANY, PHONE, SpareRedis, make_settings

from ctxcache import AsyncContextCache, ContextCache
from ctxcache.core.layout import DEFAULT_COMPANY_SECTIONS

# Every company section of the default layout, so that a hit finds every part in L1.
CONTEXT: dict[str, Any] = {
    **{name: {"of": name} for name in DEFAULT_COMPANY_SECTIONS},
    "client": {"name": "Anna", "phone": PHONE},
    "conversation": [{"role": "user", "text": "hello"}],
}
# Ignored when counting a hit's commands: the test's own, and what the script calls.
ADMIN_COMMANDS = {"info", "config|resetstat"}
IN_SCRIPT = {"getrange", "pttl"}


class Client:
    """A sync cache, or an asyncio one run on a loop of its own, called the same way."""

    def __init__(self, kind: str, url: str) -> None:
        # No stats push in the middle of a counted hit.
        settings = make_settings(redis_url=url, l1_mode="shared", stats_flush_interval=3600)
        self.loop = asyncio.new_event_loop() if kind == "async" else None
        self.cache: Any = (
            AsyncContextCache.from_settings(settings)
            if kind == "async"
            else ContextCache.from_settings(settings)
        )

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.cache, name)
        if self.loop is None:
            return method  # type: ignore[no-any-return]
        loop = self.loop
        return lambda *args: loop.run_until_complete(method(*args))

    def stats(self) -> Any:
        return self.cache.stats()

    def close(self) -> None:
        if self.loop is None:
            self.cache.close()
        else:
            self.loop.run_until_complete(self.cache.aclose())
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest, spare_redis: SpareRedis) -> Iterator[Client]:
    made = Client(request.param, spare_redis.url)
    yield made
    made.close()


def calls(admin: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = admin.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name.removeprefix("cmdstat_") not in ADMIN_COMMANDS
    }


def test_a_hit_with_every_part_in_l1_is_one_script_call(
    client: Client, spare_redis: SpareRedis
) -> None:
    admin = spare_redis.client()
    assert client.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert client.get_cached_full_context(PHONE, COMPANY) == CONTEXT  # the parts go to L1
    admin.config_resetstat()
    before = client.stats().l1_hits
    for _ in range(10):
        assert client.get_cached_full_context(PHONE, COMPANY) == CONTEXT
    parts = 1 + len(DEFAULT_COMPANY_SECTIONS)
    # Per hit: one EVALSHA, whose script checks each part's stamp (no GET: all unchanged).
    assert calls(admin) == {"evalsha": 10, "getrange": 10 * parts, "pttl": 10 * parts}
    assert client.stats().l1_hits - before == 10 * parts


def test_a_hit_after_the_server_forgot_its_scripts_sends_the_source(
    client: Client, spare_redis: SpareRedis
) -> None:
    admin = spare_redis.client()
    assert client.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert client.get_cached_full_context(PHONE, COMPANY) == CONTEXT
    admin.script_flush()  # as after a restart or a failover
    admin.config_resetstat()
    assert client.get_cached_full_context(PHONE, COMPANY) == CONTEXT
    assert client.get_cached_full_context(PHONE, COMPANY) == CONTEXT
    # NOSCRIPT once, then the source (which the server keeps), then by SHA1 again.
    top_level = {name: n for name, n in calls(admin).items() if name not in IN_SCRIPT}
    assert top_level == {"evalsha": 2, "eval": 1}
    assert (client.stats().errors, client.stats().hits) == (0, 3)


def test_an_error_the_server_answers_is_a_miss_and_the_connection_stays_usable(
    client: Client, spare_redis: SpareRedis
) -> None:
    admin = spare_redis.client()
    key = client.cache.core.identify(PHONE, COMPANY).client.full_context
    admin.hset(key, "not", "a context")  # GETRANGE on a hash: WRONGTYPE inside the script
    assert client.get_cached_full_context(PHONE, COMPANY) is None
    assert client.stats().errors == 1
    admin.delete(key)
    assert client.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert client.get_cached_full_context(PHONE, COMPANY) == CONTEXT
    assert client.stats().errors == 1  # the breaker saw an answer, not a failure


def test_a_server_gone_mid_hit_is_a_miss_and_the_next_hit_reconnects(
    client: Client, spare_redis: SpareRedis
) -> None:
    assert client.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert client.get_cached_full_context(PHONE, COMPANY) == CONTEXT
    spare_redis.stop()
    assert client.get_cached_full_context(PHONE, COMPANY) is None
    spare_redis.start()  # empty: no persistence
    assert client.get_cached_full_context(PHONE, COMPANY) is None  # a plain miss, no error
    assert client.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert client.get_cached_full_context(PHONE, COMPANY) == CONTEXT


class KeepsConnectionOnFailedRead(redis.Connection):
    """As redis-py's Sentinel connections: a failed read leaves the socket open.

    ``fail_next`` makes the next read time out before reading the reply.
    """

    fail_next = False

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if KeepsConnectionOnFailedRead.fail_next:
            KeepsConnectionOnFailedRead.fail_next = False
            raise redis.TimeoutError("simulated: the reply is late")
        return super().read_response(*args, disconnect_on_error=False, **kwargs)


def test_a_failed_read_closes_the_connection_so_no_one_gets_its_late_reply(
    spare_redis: SpareRedis,
) -> None:
    pool = redis.ConnectionPool(
        connection_class=KeepsConnectionOnFailedRead, port=spare_redis.port, max_connections=1
    )
    settings = make_settings(redis_url=spare_redis.url, l1_mode="shared")
    cache = ContextCache(redis.Redis(connection_pool=pool), settings)
    try:
        assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
        assert cache.get_cached_full_context(PHONE, COMPANY) == CONTEXT
        KeepsConnectionOnFailedRead.fail_next = True
        assert cache.get_cached_full_context(PHONE, COMPANY) is None  # fail-open
        [connection] = pool._available_connections
        assert connection._sock is None  # closed, its reply unread: never reused
        assert cache.get_cached_full_context(PHONE, COMPANY) == CONTEXT
    finally:
        KeepsConnectionOnFailedRead.fail_next = False
        cache.close()
