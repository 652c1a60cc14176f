"""Shared fixtures: the real Redis (emptied per test), fakeredis, and a controllable clock.

The real server comes from ``CTXCACHE_TEST_REDIS_URL`` (default db 15 of the
local Redis), the one database the whole suite writes to: the cache tests, the
Redis broker of the Celery tests (its keys under ``ctxcache-test:broker:``), the
CLI and the demo. When it does not answer, integration tests skip locally and
fail when ``CI=true``: in CI they must run.

The suite empties that database, so it first makes sure the database is its
own: empty (then it writes the marker ``ctxcache-test:owner``) or carrying the
marker from an earlier run. A database with keys and no marker stops the run
before any test: pointing ``CTXCACHE_TEST_REDIS_URL`` at real data loses nothing.

RabbitMQ: the vhost ``ctxcache_test``, created with ``rabbitmqctl`` when missing
(``CTXCACHE_TEST_AMQP_BROKER`` overrides the URL); the default vhost is never used.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
import redis
from servers import LocalCluster, LocalSentinel, missing_binaries

from ctxcache import CacheSettings, ContextCache
from ctxcache.settings import redact_url

TEST_REDIS_URL = os.environ.get("CTXCACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Keys under this prefix outlive a test (not its data): the marker and the broker's queues.
TEST_NAMESPACE = "ctxcache-test:"
OWNER_KEY = TEST_NAMESPACE + "owner"
BROKER_KEY_PREFIX = TEST_NAMESPACE + "broker:"  # CTXCACHE_BROKER_KEY_PREFIX of the tests' workers
AMQP_VHOST = "ctxcache_test"
AMQP_URL = f"amqp://guest:guest@127.0.0.1:5672/{AMQP_VHOST}"

PHONE = "+79001234567"
COMPANY = 962302


def require_server(url: str, what: str) -> None:
    """Skip (or fail in CI) when the server at ``url`` does not answer."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        message = f"{what} at {url} is not reachable: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: integration tests must run)")
        pytest.skip(message)


class NotOurDatabase(RuntimeError):
    """The test database holds keys the suite did not write: it must not be emptied."""


# Atomic: another client cannot slip a key in between the check and the marker.
# A database holding only keys of the suite's namespace (an interrupted run's
# broker bindings) is the suite's too; looked at only while it is small.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
local size = redis.call('DBSIZE')
if size > 1000 then return 0 end
for _, key in ipairs(redis.call('KEYS', '*')) do
  if string.sub(key, 1, #ARGV[2]) ~= ARGV[2] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def claim_test_database(client: redis.Redis, url: str) -> None:
    """Make the database the suite's: empty (then marked) or already marked; else refuse.

    Raises :class:`NotOurDatabase` naming the URL and the foreign keys' count.
    """
    note = f"ctxcache test suite, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC: it empties this db"
    if client.eval(_CLAIM, 1, OWNER_KEY, note, TEST_NAMESPACE) == 1:
        return
    count = client.dbsize()
    raise NotOurDatabase(
        f"the test database {redact_url(url)} holds {count} key{'s' * (count != 1)} that the"
        f" test suite did not write (no {OWNER_KEY} marker, not all under {TEST_NAMESPACE});"
        " refusing to empty it. Point"
        " CTXCACHE_TEST_REDIS_URL at an empty database (default redis://127.0.0.1:6379/15);"
        " the suite marks it and empties it before and after each test."
    )


def clear_test_database(client: redis.Redis) -> None:
    """Delete the keys of the last test: every key outside ``TEST_NAMESPACE``."""
    keep = TEST_NAMESPACE.encode()
    doomed = [key for key in client.scan_iter(count=1000) if not key.startswith(keep)]
    for start in range(0, len(doomed), 1000):
        client.unlink(*doomed[start : start + 1000])


@pytest.fixture(scope="session", autouse=True)
def _owned_test_database() -> Iterator[None]:
    """Before any test: the test database must be the suite's (see the module docstring)."""
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError:
        client.close()
        yield  # not reachable: the tests that need it skip (fail in CI) by themselves
        return
    try:
        claim_test_database(client, TEST_REDIS_URL)
    except NotOurDatabase as exc:
        client.close()
        pytest.exit(str(exc), returncode=pytest.ExitCode.TESTS_FAILED)
    yield
    if client.exists(OWNER_KEY):  # still ours: leave it empty, marker included
        client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The tests' RabbitMQ broker: the vhost ``ctxcache_test``, created (for guest) if missing."""
    if os.environ.get("CTXCACHE_TEST_AMQP_BROKER"):
        return os.environ["CTXCACHE_TEST_AMQP_BROKER"]

    def ctl(*argv: str) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *argv], capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout

    try:
        if AMQP_VHOST not in ctl("list_vhosts").split():
            ctl("add_vhost", AMQP_VHOST)
            ctl("set_permissions", "-p", AMQP_VHOST, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        detail = (getattr(exc, "stderr", None) or str(exc)).strip()
        message = (
            f"cannot make the RabbitMQ vhost {AMQP_VHOST} ({detail}); create it"
            f" (rabbitmqctl add_vhost {AMQP_VHOST}; rabbitmqctl set_permissions -p {AMQP_VHOST}"
            " guest '.*' '.*' '.*') or set CTXCACHE_TEST_AMQP_BROKER"
        )
        if IN_CI:
            pytest.fail(message + " (CI=true: Celery tests must run)")
        pytest.skip(message)
    return AMQP_URL


class FakeClock:
    """A clock tests move by hand; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_settings(**overrides: Any) -> CacheSettings:
    values: dict[str, Any] = {"redis_url": TEST_REDIS_URL}
    values.update(overrides)
    return CacheSettings.load(**values)


@pytest.fixture(scope="session")
def real_redis_url() -> str:
    require_server(TEST_REDIS_URL, "the test Redis")
    return TEST_REDIS_URL


@pytest.fixture
def real_client(real_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(real_redis_url)
    clear_test_database(client)
    yield client
    clear_test_database(client)
    client.close()


@pytest.fixture
def real_cache(real_client: redis.Redis, clock: FakeClock) -> Iterator[ContextCache]:
    cache = ContextCache.from_settings(make_settings(), clock=clock, sleep=clock.sleep)
    yield cache
    cache.close()


@pytest.fixture
def fake_cache(clock: FakeClock) -> ContextCache:
    client = fakeredis.FakeRedis()
    return ContextCache(client, make_settings(), clock=clock, sleep=clock.sleep)


@pytest.fixture(params=["fakeredis", "redis"])
def any_cache(request: pytest.FixtureRequest) -> ContextCache:
    """A ContextCache on fakeredis (fast) and on the real server (proof), for sync-only tests.

    The cache's contract runs on both clients: ``tests/contract/`` overrides this fixture.
    """
    name = "fake_cache" if request.param == "fakeredis" else "real_cache"
    cache: ContextCache = request.getfixturevalue(name)
    return cache


@pytest.fixture
def cache_factory(real_client: redis.Redis) -> Iterator[Callable[..., ContextCache]]:
    """Separate caches with their own connection pools, as separate workers have."""
    made: list[ContextCache] = []

    def factory(**overrides: Any) -> ContextCache:
        clock = overrides.pop("clock", None)
        kwargs: dict[str, Any] = {}
        if clock is not None:
            kwargs = {"clock": clock, "sleep": clock.sleep}
        cache = ContextCache.from_settings(make_settings(**overrides), **kwargs)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        cache.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SpareRedis:
    """A private redis-server that a test can stop and start.

    On a free loopback port, or with ``unix_socket=True`` on a unix socket only
    (in a short temporary directory: socket paths are limited to ~100 bytes);
    ``password`` makes it require one (``--requirepass``). Without persistence,
    unless ``appendfsync`` ("always", "everysec") keeps an append-only file in
    ``directory``, so that data survives a restart.
    """

    def __init__(
        self,
        directory: str,
        *,
        password: str | None = None,
        unix_socket: bool = False,
        appendfsync: str | None = None,
    ) -> None:
        self.directory = directory
        self.password = password
        self.appendfsync = appendfsync
        self.socket_dir = tempfile.mkdtemp(prefix="ctxr") if unix_socket else None
        self.socket_path = os.path.join(self.socket_dir, "redis.sock") if self.socket_dir else None
        self.port = 0 if unix_socket else free_port()
        self.url = (
            f"unix://{self.socket_path}" if self.socket_path else f"redis://127.0.0.1:{self.port}/0"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def client(self, **options: Any) -> redis.Redis:
        """An admin client (with the password, if any)."""
        where: dict[str, Any] = (
            {"unix_socket_path": self.socket_path} if self.socket_path else {"port": self.port}
        )
        return redis.Redis(password=self.password, **where, **options)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        if self.socket_path:
            args += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        if self.password:
            args += ["--requirepass", self.password]
        args += ["--save", "", "--dir", self.directory, "--logfile", ""]
        if self.appendfsync:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = self.client(socket_connect_timeout=0.2)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"redis-server at {self.url} did not start")
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def remove(self) -> None:
        self.stop()
        if self.socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


@pytest.fixture
def spare_redis(tmp_path: Any) -> Iterator[SpareRedis]:
    server = SpareRedis(str(tmp_path))
    server.start()
    yield server
    server.remove()


@pytest.fixture
def spare_redis_factory(tmp_path: Any) -> Iterator[Callable[..., SpareRedis]]:
    """Starts SpareRedis servers with options (``password=``, ``unix_socket=``); removes them."""
    made: list[SpareRedis] = []

    def start(**options: Any) -> SpareRedis:
        server = SpareRedis(str(tmp_path), **options)
        made.append(server)
        server.start()
        return server

    yield start
    for server in made:
        server.remove()


@pytest.fixture
def persistent_redis(spare_redis_factory: Callable[..., SpareRedis]) -> SpareRedis:
    """A private redis-server whose data survives a restart (appendfsync always)."""
    return spare_redis_factory(appendfsync="always")


# -- Highly available deployments (tests/servers.py) -------------------------------------
# Started once per session, and only when a test asks for them (cluster creation
# takes ~6 s, sentinel ~5 s); on loopback ports from CTXCACHE_TEST_HA_PORT.
HA_FIRST_PORT = int(os.environ.get("CTXCACHE_TEST_HA_PORT", "7100"))
# A replica on 2 busy cores may take longer than the default 0.1 s to acknowledge a
# WAIT; the tests of what a cache does want it acknowledged (a shortfall is retried,
# which the failure tests cover).
HA_SETTINGS: dict[str, Any] = {"socket_timeout": 1.0, "invalidation_wait_timeout": 0.5}


def _require_ha_binaries() -> None:
    missing = missing_binaries()
    if missing:
        message = f"{', '.join(missing)} not installed (.ci/run installs them)"
        if IN_CI:
            pytest.fail(message + " (CI=true: Cluster and Sentinel tests must run)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real Redis Cluster: 3 primaries, 3 replicas; emptied by ``cluster_cache``."""
    _require_ha_binaries()
    cluster = LocalCluster(HA_FIRST_PORT, tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def local_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    """A real Sentinel deployment: a master, a replica and 3 sentinels."""
    _require_ha_binaries()
    sentinel = LocalSentinel(HA_FIRST_PORT + 10, tmp_path_factory.mktemp("sentinel"))
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()


def _ha_cache(
    deployment: LocalCluster | LocalSentinel, url: str, clock: FakeClock
) -> Iterator[ContextCache]:
    """A cache on ``url`` of ``deployment``, which is emptied before and after the test."""
    deployment.wait_healthy()
    deployment.flush()
    cache = ContextCache.from_settings(
        make_settings(redis_url=url, **HA_SETTINGS), clock=clock, sleep=clock.sleep
    )
    yield cache
    cache.close()
    deployment.flush()


@pytest.fixture
def cluster_cache(local_cluster: LocalCluster, clock: FakeClock) -> Iterator[ContextCache]:
    """A cache on the local Cluster, emptied before and after the test."""
    yield from _ha_cache(local_cluster, local_cluster.url, clock)


@pytest.fixture
def sentinel_cache(local_sentinel: LocalSentinel, clock: FakeClock) -> Iterator[ContextCache]:
    """A cache on the master the local sentinels name, emptied before and after the test."""
    yield from _ha_cache(local_sentinel, local_sentinel.url(), clock)
