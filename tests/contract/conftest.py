"""The contract suite's fixtures: every test here runs on each client and each backend.

A *client* is :class:`~ctxcache.ContextCache` or :class:`~ctxcache.AsyncContextCache`.
Tests drive both through the same blocking calls: the asyncio cache is wrapped
in :class:`Awaited`, which runs each coroutine method to its end on an event
loop of its own thread (so a loader, run in a worker thread by the asyncio
client, may call the cache too, as the sync tests' loaders do).

A *backend* is a kind of Redis deployment. :data:`BACKENDS` maps a name to
a factory; the ``backend`` fixture is parametrised over it, and the
``any_cache`` and ``contract`` fixtures over ``backend`` and the client kind.

How to add a backend (Cluster, Sentinel)
----------------------------------------
1. Write a factory ``def my_backend(request: pytest.FixtureRequest) -> Iterator[Backend]``.
   Get long-lived servers from session fixtures with
   ``request.getfixturevalue("my_servers")`` (start them there, stop them in
   the fixture's finalizer, process-group kill, loopback ports only).
2. Yield a :class:`Backend`: ``admin`` (a blocking redis-py client that sees
   every key, for the tests to look at and corrupt them), ``connect`` and
   ``connect_async`` (each call a new client with its own connections: a
   ``redis.RedisCluster`` and a ``redis.asyncio.RedisCluster`` for a cluster),
   ``connect_dead``/``connect_dead_async`` (clients of a deployment that does not
   answer, for fail-open) and ``url`` if other processes can reach it.
3. After the ``yield``, clean up only what the test wrote: flush the test
   database (standalone) or delete the keys it wrote (shared servers).
4. Register it in the :data:`BACKENDS` literal below (the fixtures' params
   are read from it when this module is imported, so a later assignment is
   too late). Every contract test then runs on it with both clients; with
   ``url`` set (a URL ``ContextCache.from_url`` accepts), so do the
   cross-process tests (``networked_backend``).
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
import redis
from conftest import (
    HA_SETTINGS,
    TEST_REDIS_URL,
    FakeClock,
    clear_test_database,
    make_settings,
    require_server,
)
from servers import LocalCluster, LocalSentinel

from ctxcache import AsyncContextCache, CacheSettings, ContextCache
from ctxcache.client.connection import connect, connect_async, primaries

CLIENTS = ("sync", "async")


@dataclass
class Backend:
    """A Redis deployment the contract runs on (see the module docstring)."""

    name: str
    admin: Any
    connect: Callable[[], Any]
    connect_async: Callable[[], Any]
    connect_dead: Callable[[], Any]
    connect_dead_async: Callable[[], Any]
    url: str | None = None  # None: reachable from this process only (fakeredis)
    # Settings every cache on this backend gets on top of the test's own.
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def networked(
        cls,
        name: str,
        admin: Any,
        settings: CacheSettings,
        dead: CacheSettings,
        url: str,
        overrides: dict[str, Any] | None = None,
    ) -> Backend:
        """A backend other processes reach at ``url``: clients from ``settings``, dead
        ones from ``dead`` (settings naming a deployment that does not answer)."""
        return cls(
            name=name,
            admin=admin,
            connect=lambda: connect(settings),
            connect_async=lambda: connect_async(settings),
            connect_dead=lambda: connect(dead),
            connect_dead_async=lambda: connect_async(dead),
            url=url,
            overrides=overrides or {},
        )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fakeredis_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh in-memory server per test, shared by the sync and the asyncio fake clients."""
    server, dead = fakeredis.FakeServer(), fakeredis.FakeServer()
    dead.connected = False  # every command raises ConnectionError
    yield Backend(
        name="fakeredis",
        admin=fakeredis.FakeRedis(server=server),
        connect=lambda: fakeredis.FakeRedis(server=server),
        connect_async=lambda: fakeredis.FakeAsyncRedis(server=server),
        connect_dead=lambda: fakeredis.FakeRedis(server=dead),
        connect_dead_async=lambda: fakeredis.FakeAsyncRedis(server=dead),
    )


def standalone_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The test database of the real local server, emptied before and after the test."""
    require_server(TEST_REDIS_URL, "the test Redis")
    settings = make_settings()
    dead = make_settings(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    admin = redis.Redis.from_url(TEST_REDIS_URL)
    clear_test_database(admin)
    yield Backend.networked("redis", admin, settings, dead, TEST_REDIS_URL)
    clear_test_database(admin)
    admin.close()


class ClusterAdmin:
    """A ``RedisCluster`` whose ``keys`` lists every primary's keys (KEYS is per node)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def keys(self, pattern: str = "*") -> list[bytes]:
        return all_keys(self.cluster, pattern)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cluster, name)


def cluster_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The session's local Redis Cluster (3 primaries, 3 replicas), emptied around the test.

    Its dead twin names a closed port: the sync client then builds its
    ``RedisCluster`` late (``LateCluster``), the asyncio one at its first command.
    """
    local: LocalCluster = request.getfixturevalue("local_cluster")
    local.wait_healthy()
    local.flush()
    settings = make_settings(redis_url=local.url, **HA_SETTINGS)
    dead = make_settings(redis_url=f"redis+cluster://127.0.0.1:{closed_port()}")
    admin = ClusterAdmin(connect(settings))
    yield Backend.networked("cluster", admin, settings, dead, local.url, HA_SETTINGS)
    local.flush()
    admin.close()


def sentinel_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The master that the session's local sentinels name, emptied around the test."""
    local: LocalSentinel = request.getfixturevalue("local_sentinel")
    local.wait_healthy()
    local.flush()
    settings = make_settings(redis_url=local.url(), **HA_SETTINGS)
    dead = make_settings(redis_url=f"redis+sentinel://127.0.0.1:{closed_port()}/nobody")
    admin = connect(settings)
    yield Backend.networked("sentinel", admin, settings, dead, local.url(), HA_SETTINGS)
    local.flush()
    admin.close()


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Iterator[Backend]]] = {
    "fakeredis": fakeredis_backend,
    "redis": standalone_backend,
    "cluster": cluster_backend,
    "sentinel": sentinel_backend,
}


def _marked(names: list[str]) -> list[Any]:
    """Backends as parameters, the HA ones marked (``-m "not cluster"`` leaves them out)."""
    marks = {"cluster": pytest.mark.cluster, "sentinel": pytest.mark.sentinel}
    return [pytest.param(n, marks=[marks[n]] if n in marks else []) for n in names]


@pytest.fixture(params=_marked(list(BACKENDS)))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from BACKENDS[request.param](request)


@pytest.fixture(params=_marked([name for name in BACKENDS if name != "fakeredis"]))
def networked_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backends other processes can reach (every one but fakeredis)."""
    found = BACKENDS[request.param](request)
    for made in found:
        assert made.url is not None, f"backend {request.param} has no url for other processes"
        yield made


class EventLoopThread:
    """An event loop running in its own thread; :meth:`run` waits for a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class Awaited:
    """An :class:`AsyncContextCache` driven by blocking calls, so one test body serves both.

    Coroutine methods run to their end on the loop; everything else (``stats``,
    ``settings``, ``client_keys``) is the cache's own. ``client`` is the
    backend's blocking admin client, as a sync cache's ``client`` would be.
    """

    def __init__(self, cache: AsyncContextCache, loop: EventLoopThread, admin: Any) -> None:
        self.cache = cache
        self.client = admin
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.cache, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            return self._loop.run(result) if inspect.iscoroutine(result) else result

        return call

    def close(self) -> None:
        self._loop.run(self.cache.aclose())


class Contract:
    """One client kind on one backend: makes caches, closes them at the end."""

    def __init__(self, kind: str, backend: Backend, clock: FakeClock) -> None:
        self.kind = kind
        self.backend = backend
        self.clock = clock
        self.redis = backend.admin  # blocking, sees every key
        self._loop: EventLoopThread | None = None
        self._made: list[Any] = []
        self.cache = self.make()

    def make(
        self, settings: CacheSettings | None = None, *, dead: bool = False, kind: str | None = None
    ) -> Any:
        """Another cache of this kind (or ``kind``) on the backend, with its own connections.

        ``dead``: on a deployment that does not answer. A cache that is a
        ContextCache, or an :class:`Awaited` AsyncContextCache.
        """
        settings = settings if settings is not None else make_settings()
        if self.backend.overrides:
            settings = settings.model_copy(update=self.backend.overrides)
        clock = self.clock
        if (kind or self.kind) == "sync":
            client = (self.backend.connect_dead if dead else self.backend.connect)()
            made: Any = ContextCache(client, settings, clock=clock, sleep=clock.sleep)
        else:
            if self._loop is None:
                self._loop = EventLoopThread()

            async def sleep(seconds: float) -> None:
                clock.sleep(seconds)
                await asyncio.sleep(0)

            async def build() -> AsyncContextCache:  # the client belongs to the loop
                client = (self.backend.connect_dead_async if dead else self.backend.connect_async)()
                return AsyncContextCache(client, settings, clock=clock, sleep=sleep)

            made = Awaited(self._loop.run(build()), self._loop, self.backend.admin)
        self._made.append(made)
        return made

    def close_cache(self, cache: Any) -> None:
        """Close one cache now (it waits for its background refreshes)."""
        self._made.remove(cache)
        cache.close()

    def close(self) -> None:
        for made in self._made:
            made.close()
        if self._loop is not None:
            self._loop.close()


@pytest.fixture(params=CLIENTS)
def contract(
    request: pytest.FixtureRequest, backend: Backend, clock: FakeClock
) -> Iterator[Contract]:
    made = Contract(request.param, backend, clock)
    yield made
    made.close()


@pytest.fixture
def any_cache(contract: Contract) -> Any:
    """The contract's cache: a ContextCache, or an AsyncContextCache behind :class:`Awaited`."""
    return contract.cache


def all_keys(client: Any, pattern: str) -> list[bytes]:
    """The keys matching ``pattern`` on every primary (a Cluster's KEYS answers for one node)."""
    return [key for shard in primaries(client) for key in shard.keys(pattern)]
