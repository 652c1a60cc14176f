"""Secrets never leak: the CLI (with --json), doctor, failing connections and bad settings,
with the Redis password, the key secret and the encryption keys set; every captured
output, log line and exception message is searched for each secret."""

from __future__ import annotations

import base64
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cli_support import run
from conftest import COMPANY, PHONE
from pydantic import SecretStr
from security_support import private_redis

from ctxcache import CacheSettings, ConfigurationError, ContextCache
from ctxcache.client.connection import connect

PASSWORD = "pw-" + base64.b32encode(os.urandom(10)).decode()
KEY_SECRET = "ks-" + base64.b32encode(os.urandom(15)).decode()
KEY_ONE = base64.b64encode(os.urandom(32)).decode()
KEY_TWO = base64.b64encode(os.urandom(32)).decode()
WRONG = "wrong-" + base64.b32encode(os.urandom(10)).decode()
SECRETS = (PASSWORD, KEY_SECRET, KEY_ONE, KEY_TWO, WRONG)
# A secret also must not show in part: a long enough piece of each is searched for.
PIECES = tuple(secret[i : i + 12] for secret in SECRETS for i in range(0, len(secret) - 11, 6))


def assert_clean(text: str, what: str) -> None:
    leaked = [piece for piece in PIECES if piece in text]
    assert not leaked, f"{what} shows a secret: {leaked[:3]}"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory: Path = tmp_path_factory.mktemp("secrets")

    def ready(port: int) -> None:
        redis.Redis(port=port, password=PASSWORD, socket_timeout=1).ping()

    with private_redis(directory, ["--port", "{port}", "--requirepass", PASSWORD], ready) as port:
        yield port


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_cli_and_doctor_never_show_a_secret(guarded: int) -> None:
    url = f"redis://127.0.0.1:{guarded}/0"
    env = {
        "CTXCACHE_REDIS_URL": url,
        "REDIS_PASSWORD": PASSWORD,
        "CTXCACHE_KEY_SECRET": KEY_SECRET,
        "CTXCACHE_ENCRYPTION_KEYS": f"{KEY_ONE},{KEY_TWO}",
        "CTXCACHE_BROKER_URL": f"redis://:{PASSWORD}@127.0.0.1:{guarded}/1",
    }
    runs = {
        "vip add": run("-vv", "vip", "add", PHONE, str(COMPANY), "--json", **env),
        "vip list": run("-vv", "vip", "list", "--json", **env),
        "get": run("-vv", "get", PHONE, str(COMPANY), "--json", **env),
        "stats": run("-vv", "stats", "--json", **env),
        "doctor": run("-vv", "doctor", "--json", "--timeout", "0.5", **env),
        "doctor text": run("doctor", "--timeout", "0.5", **env),
        "wrong password": run(
            "-vv", "get", PHONE, str(COMPANY), **{**env, "REDIS_PASSWORD": WRONG}
        ),
        "wrong password doctor": run(
            "doctor", "--json", "--timeout", "0.5", **{**env, "REDIS_PASSWORD": WRONG}
        ),
        "password in a URL, nothing listening": run(
            "-vv",
            "get",
            PHONE,
            str(COMPANY),
            **{**env, "CTXCACHE_REDIS_URL": f"redis://:{WRONG}@127.0.0.1:{closed_port()}/0"},
        ),
        "bad key list": run(
            "get", PHONE, str(COMPANY), **{**env, "CTXCACHE_ENCRYPTION_KEYS": WRONG + "!"}
        ),
        "bad key secret": run(
            "get", PHONE, str(COMPANY), **{**env, "CTXCACHE_KEY_SECRET": WRONG[:10]}
        ),
    }
    assert runs["vip add"].returncode == 0, runs["vip add"].stderr
    assert runs["get"].returncode in (0, 1), runs["get"].stderr  # 1: not cached
    assert '"cached"' in runs["get"].stdout
    assert runs["wrong password"].returncode != 0
    assert "password" in runs["wrong password"].stderr.lower()
    assert "CTXCACHE_ENCRYPTION_KEYS" in runs["bad key list"].stderr
    assert "values encrypted with key" in runs["doctor"].stdout  # fingerprints, not keys
    assert "phones in keys hashed" in runs["doctor"].stdout
    for name, result in runs.items():
        assert "Traceback" not in result.stderr, (name, result.stderr[-2000:])
        assert_clean(result.stdout, f"{name}: stdout")
        assert_clean(result.stderr, f"{name}: stderr")


def test_logs_exceptions_and_reprs_never_show_a_secret(
    guarded: int, caplog: pytest.LogCaptureFixture
) -> None:
    settings = CacheSettings.load(
        redis_url=f"redis://127.0.0.1:{guarded}/0",
        redis_password=PASSWORD,
        key_secret=KEY_SECRET,
        encryption_keys=f"{KEY_ONE},{KEY_TWO}",
    )
    texts = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        settings.effective_broker_url,
    ]
    assert PASSWORD in texts[-1]  # the broker's URL must carry it; it is only ever logged redacted
    texts.pop()
    with caplog.at_level(logging.DEBUG):
        with ContextCache.from_settings(settings) as cache:
            texts += [repr(cache.core.keys), repr(cache.core.codec.cipher)]
            assert cache.set_cached_full_context(PHONE, COMPANY, {"client": {"a": 1}})
            assert cache.get_cached_full_context(PHONE, COMPANY) == {"client": {"a": 1}}
            cache.client.set(cache.client_keys(PHONE, COMPANY).full_context, b"\x00ctx\x02garbage")
            assert cache.get_cached_full_context(PHONE, COMPANY) is None
        wrong = settings.model_copy(update={"redis_password": SecretStr(WRONG)})
        with pytest.raises(redis.AuthenticationError) as refused:
            connect(wrong).ping()
        texts.append(str(refused.value))
        with ContextCache.from_settings(wrong) as cache:
            assert cache.get_cached_full_context(PHONE, COMPANY) is None  # logged, not raised
        unreachable = CacheSettings.load(
            redis_url=f"redis://:{WRONG}@127.0.0.1:{closed_port()}/0", connect_timeout=0.2
        )
        with pytest.raises(redis.ConnectionError) as failed:
            connect(unreachable).ping()
        texts.append(str(failed.value))
        with ContextCache.from_settings(unreachable) as cache:
            assert cache.get_cached_full_context(PHONE, COMPANY) is None
    for bad in (
        {"encryption_keys": WRONG + "!"},
        {"key_secret": WRONG[:10]},
        {"redis_url": f"redis://:{WRONG}@h:99999/0"},
    ):
        with pytest.raises(ConfigurationError) as error:
            CacheSettings.load(**bad)
        texts.append(str(error.value))
    texts.append(caplog.text)
    for number, text in enumerate(texts):
        assert_clean(text, f"text {number}")
