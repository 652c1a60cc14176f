"""TLS on a real redis-server started with --tls-port (mutual TLS), certificates from trustme."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from conftest import COMPANY, PHONE
from kombu import Connection
from security_support import private_redis
from worker_support import REPO

from ctxcache import CacheSettings, ContextCache, VipRegistry
from ctxcache.client.connection import connect
from ctxcache.ops.doctor import run_checks
from ctxcache.ops.doctor.persistence import broker_checks
from ctxcache.urls import broker_tls

CONTEXT = {"client": {"name": "Anna"}, "company": {"name": "Salon"}}


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca: str
    cert: str
    key: str
    other_ca: str

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def settings(self, **overrides: Any) -> CacheSettings:
        values: dict[str, Any] = {
            "redis_url": self.url,
            "tls_ca_file": self.ca,
            "tls_cert_file": self.cert,
            "tls_key_file": self.key,
        }
        values.update(overrides)
        return CacheSettings.load(**values)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    directory: Path = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("ctxcache-worker")
    files = {name: str(directory / f"{name}.pem") for name in ("ca", "srv", "srvkey", "cli", "key")}
    ca.cert_pem.write_to_path(files["ca"])
    server.cert_chain_pems[0].write_to_path(files["srv"])
    server.private_key_pem.write_to_path(files["srvkey"])
    client.cert_chain_pems[0].write_to_path(files["cli"])
    client.private_key_pem.write_to_path(files["key"])
    other = str(directory / "other-ca.pem")
    trustme.CA().cert_pem.write_to_path(other)
    args = [
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        files["srv"],
        "--tls-key-file",
        files["srvkey"],
        "--tls-ca-cert-file",
        files["ca"],
        "--tls-auth-clients",
        "yes",
    ]

    def ready(port: int) -> None:
        redis.Redis(
            port=port,
            ssl=True,
            ssl_ca_certs=files["ca"],
            ssl_certfile=files["cli"],
            ssl_keyfile=files["key"],
            socket_timeout=1,
        ).ping()

    with private_redis(directory, args, ready) as port:
        yield TlsServer(port, files["ca"], files["cli"], files["key"], other)


def test_the_cache_works_over_mutual_tls(tls_server: TlsServer) -> None:
    settings = tls_server.settings()
    with ContextCache.from_settings(settings) as cache:
        assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
        assert cache.get_cached_full_context(PHONE, COMPANY) == CONTEXT
        assert cache.load_full_context("+79007654321", COMPANY, lambda p, c: CONTEXT) == CONTEXT
        assert VipRegistry(cache).add(PHONE, COMPANY)
        connection = cache.client.connection_pool.get_connection()
        assert connection.cert_reqs == ssl.CERT_REQUIRED  # verification on by default
        cache.client.connection_pool.release(connection)
    checks = {c.name: c for c in run_checks(settings, celery=False)}
    assert checks["cache round trip"].ok, checks["cache round trip"].detail


def test_the_derived_broker_uses_the_same_tls_files(tls_server: TlsServer) -> None:
    settings = tls_server.settings()
    broker = settings.effective_broker_url
    assert broker.startswith(f"rediss://127.0.0.1:{tls_server.port}/1?")
    assert "ssl_cert_reqs=required" in broker
    assert "ssl_certfile=" in broker
    with Connection(broker, connect_timeout=2) as connection:
        assert connection.default_channel.client.ping()
    # Doctor reads the broker's server over TLS too (INFO for its persistence check).
    persistence = broker_checks(settings, broker, None, 2.0)[0]
    assert "refused" not in persistence.detail, persistence.detail
    # A rediss:// broker named in CTXCACHE_BROKER_URL gets them as broker_use_ssl.
    assert broker_tls(settings.tls_options())["ssl_cert_reqs"] == ssl.CERT_REQUIRED


def test_a_named_rediss_broker_gets_the_tls_files_from_celeryconfig(tls_server: TlsServer) -> None:
    # celeryconfig reads the environment when imported: a fresh interpreter, as a worker has.
    script = (
        "import celeryconfig, kombu\n"
        "conn = kombu.Connection(celeryconfig.broker_url, ssl=celeryconfig.broker_use_ssl)\n"
        "print(conn.default_channel.client.ping())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXCACHE_")}
    env.update(
        CTXCACHE_REDIS_URL=tls_server.url,
        CTXCACHE_BROKER_URL=f"rediss://127.0.0.1:{tls_server.port}/3",
        CTXCACHE_TLS_CA_FILE=tls_server.ca,
        CTXCACHE_TLS_CERT_FILE=tls_server.cert,
        CTXCACHE_TLS_KEY_FILE=tls_server.key,
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def test_a_wrong_ca_fails_clearly(tls_server: TlsServer) -> None:
    settings = tls_server.settings(tls_ca_file=tls_server.other_ca)
    client = connect(settings)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client.ping()
    with ContextCache(client, settings) as cache:
        assert cache.get_cached_full_context(PHONE, COMPANY) is None  # fail-open, never raises
    checks = {c.name: c for c in run_checks(settings, celery=False)}
    reachable = checks["redis reachable"]
    assert not reachable.ok
    assert "certificate verify failed" in reachable.detail
    assert "CTXCACHE_TLS_CA_FILE" in (reachable.fix or "")


def test_a_missing_client_certificate_is_refused(tls_server: TlsServer) -> None:
    settings = tls_server.settings(tls_cert_file=None, tls_key_file=None)
    with pytest.raises(redis.ConnectionError):
        connect(settings).ping()


def test_a_plain_client_on_the_tls_port_fails_clearly(tls_server: TlsServer) -> None:
    settings = CacheSettings.load(redis_url=f"redis://127.0.0.1:{tls_server.port}/0")
    with pytest.raises(redis.ConnectionError):
        connect(settings).ping()
    checks = {c.name: c for c in run_checks(settings, celery=False)}
    reachable = checks["redis reachable"]
    assert not reachable.ok
    assert "speaks TLS: use rediss://" in (reachable.fix or "")


def test_unreadable_tls_files_stop_the_start() -> None:
    from ctxcache import ConfigurationError

    with pytest.raises(ConfigurationError, match="CTXCACHE_TLS_CA_FILE: cannot read"):
        CacheSettings.load(tls_ca_file="/nonexistent/ca.pem")
