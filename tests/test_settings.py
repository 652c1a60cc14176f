from __future__ import annotations

import logging

import pytest

from ctxcache import ConfigurationError, ContextCache
from ctxcache.settings import CacheSettings, redact_url


def clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["CTXCACHE_REDIS_URL", "CTXCACHE_ENV", "REDIS_PASSWORD", "CTXCACHE_KEY_PREFIX"]:
        monkeypatch.delenv(name, raising=False)


def test_development_is_the_default_and_uses_the_tunnel_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_env(monkeypatch)
    settings = CacheSettings.load()
    assert settings.effective_redis_url == "redis://localhost:6380/0"
    assert "6380" in settings.url_reason


def test_production_uses_6379(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env(monkeypatch)
    monkeypatch.setenv("CTXCACHE_ENV", "production")
    assert CacheSettings.load().effective_redis_url == "redis://localhost:6379/0"


def test_url_wins_and_rediss_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env(monkeypatch)
    monkeypatch.setenv("CTXCACHE_ENV", "production")
    monkeypatch.setenv("CTXCACHE_REDIS_URL", "rediss://cache.internal:6390/2")
    settings = CacheSettings.load()
    assert settings.effective_redis_url == "rediss://cache.internal:6390/2"
    cache = ContextCache.from_settings(settings)  # builds, connects lazily
    assert cache.client.connection_pool.connection_kwargs["host"] == "cache.internal"


def test_spec_password_variable_is_read_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env(monkeypatch)
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret-pw")
    settings = CacheSettings.load()
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" not in repr(settings)
    cache = ContextCache.from_settings(settings)
    assert cache.client.connection_pool.connection_kwargs["password"] == "s3cret-pw"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CTXCACHE_SOCKET_TIMEOUT", "-1"),
        ("CTXCACHE_ENV", "staging"),
        ("CTXCACHE_FULL_CONTEXT_TTL", "twelve hours"),
        ("CTXCACHE_PHONE_REGION", "XX"),
        ("CTXCACHE_REDIS_URL", "localhost:6379"),
        ("CTXCACHE_COMPRESSION_LEVEL", "99"),
        ("CTXCACHE_STALE_GRACE", "-1"),
        ("CTXCACHE_STALE_GRACE", "nan"),
    ],
)
def test_bad_setting_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    clear_env(monkeypatch)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.load()
    assert variable in str(info.value)
    assert info.value.variable == variable


def test_bad_prefix_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env(monkeypatch)
    monkeypatch.setenv("CTXCACHE_KEY_PREFIX", "{bad}")
    with pytest.raises(ConfigurationError, match="CTXCACHE_KEY_PREFIX"):
        ContextCache.from_settings()


def test_redact_url_hides_passwords() -> None:
    assert redact_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("rediss://user:pw@host/1") == "rediss://user:***@host/1"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_password_never_reaches_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clear_env(monkeypatch)
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("CTXCACHE_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens
    caplog.set_level(logging.DEBUG)
    cache = ContextCache.from_settings()
    cache.get_cached_full_context("+79001234567", 1)
    cache.set_cached_full_context("+79001234567", 1, {"a": 1})
    assert caplog.records
    assert "s3cret-pw" not in caplog.text


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env(monkeypatch)
    monkeypatch.setenv("CTXCACHE_REDIS_URL", "")
    monkeypatch.setenv("CTXCACHE_LOADER", " ")
    settings = CacheSettings.load()
    assert settings.redis_url is None
    assert settings.loader is None
    assert settings.effective_redis_url == "redis://localhost:6380/0"


@pytest.mark.parametrize(
    ("cache_url", "broker"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/1"),
        # No wrap to db 0; the certificate is verified, as redis-py does for the cache.
        ("rediss://:pw@cache:6390/15", "rediss://:pw@cache:6390/14?ssl_cert_reqs=required"),
        ("unix:///run/redis/redis.sock", "redis+socket:///run/redis/redis.sock?virtual_host=1"),
    ],
)
def test_default_broker_is_a_neighbouring_database(
    monkeypatch: pytest.MonkeyPatch, cache_url: str, broker: str
) -> None:
    clear_env(monkeypatch)
    monkeypatch.delenv("CTXCACHE_BROKER_URL", raising=False)
    monkeypatch.setenv("CTXCACHE_REDIS_URL", cache_url)
    settings = CacheSettings.load()
    assert settings.effective_broker_url == broker
    assert "default" in settings.broker_reason
    monkeypatch.setenv("CTXCACHE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    assert CacheSettings.load().effective_broker_url.startswith("amqp://")


def test_default_broker_carries_the_spec_password(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env(monkeypatch)
    monkeypatch.delenv("CTXCACHE_BROKER_URL", raising=False)
    monkeypatch.setenv("CTXCACHE_REDIS_URL", "redis://10.0.0.5:6379/0")
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret/pw")
    settings = CacheSettings.load()
    assert settings.effective_broker_url == "redis://:s3cret%2Fpw@10.0.0.5:6379/1"
    assert "s3cret" not in redact_url(settings.effective_broker_url)


def test_redact_url_hides_a_password_in_the_query() -> None:
    redacted = redact_url("redis://127.0.0.1:6379/0?password=s3cret&db=2")
    assert "s3cret" not in redacted
    assert "db=2" in redacted


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CTXCACHE_REDIS_URL", "redis://127.0.0.1:6379/abc", "database must be a number"),
        ("CTXCACHE_REDIS_URL", "http://127.0.0.1:6379/0", "scheme 'http'"),
        ("CTXCACHE_REDIS_URL", "redis://127.0.0.1:99999/0", "port '99999'"),
        ("CTXCACHE_REDIS_URL", "redis://127.0.0.1:6379/0?socket_timeout=abc", "socket_timeout"),
        ("CTXCACHE_REDIS_URL", "redis://[::1:6379/4", "malformed IPv6 address"),
        ("CTXCACHE_REDIS_URL", "mongodb://127.0.0.1/0", "scheme 'mongodb'"),
        ("CTXCACHE_BROKER_URL", "redis://127.0.0.1:6379/abc", "database must be a number"),
        ("CTXCACHE_BROKER_URL", "amqp://guest@127.0.0.1:70000//", "port '70000'"),
        ("CTXCACHE_BROKER_URL", "kafka://127.0.0.1:9092", "scheme 'kafka'"),
    ],
)
def test_every_url_setting_is_checked_when_settings_load(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    clear_env(monkeypatch)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.load()
    assert info.value.variable == variable
    assert str(info.value).startswith(f"invalid ctxcache setting: {variable}: ")
    assert message in str(info.value)
    assert "Value error" not in str(info.value)


def test_a_unix_socket_cache_gets_a_broker_on_the_same_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_env(monkeypatch)
    monkeypatch.delenv("CTXCACHE_BROKER_URL", raising=False)
    monkeypatch.setenv("CTXCACHE_REDIS_URL", "unix:///run/redis/redis.sock?db=2")
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    settings = CacheSettings.load()
    assert settings.effective_broker_url == (
        "redis+socket://:s3cret@/run/redis/redis.sock?virtual_host=3"
    )
    cache = ContextCache.from_settings(settings)  # builds, connects lazily
    kwargs = cache.client.connection_pool.connection_kwargs
    assert (kwargs["path"], kwargs["db"]) == ("/run/redis/redis.sock", 2)
