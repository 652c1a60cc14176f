"""Cluster and Sentinel URLs and settings: read as the clients need, refused with a reason."""

from __future__ import annotations

import pytest

from ctxcache import CacheSettings
from ctxcache.client.connection import connect
from ctxcache.errors import ConfigurationError, InvalidUrlError
from ctxcache.urls import check_broker_url, default_broker_url, parse_cache_url

SECRET = "s3cr3t-pw"


def test_a_cluster_url_names_its_seed_nodes_and_credentials() -> None:
    target = parse_cache_url(
        f"rediss+cluster://app:{SECRET}@10.0.0.1:7000,[::1]:7001,c3?ssl_cert_reqs=none"
    )
    assert target.topology == "cluster"
    assert target.tls
    assert target.nodes == (("10.0.0.1", 7000), ("::1", 7001), ("c3", 6379))
    assert (target.username, target.password, target.db) == ("app", SECRET, 0)
    assert SECRET not in repr(target)


def test_a_sentinel_url_names_its_sentinels_master_and_database() -> None:
    target = parse_cache_url(
        f"redis+sentinel://:{SECRET}@s1,s2:26380/mymaster/3?sentinel_password=x&socket_timeout=1"
    )
    assert target.topology == "sentinel"
    assert not target.tls
    assert target.nodes == (("s1", 26379), ("s2", 26380))
    assert (target.master_name, target.db, target.password) == ("mymaster", 3, SECRET)
    assert parse_cache_url("rediss+sentinel://s1/m").db == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h:7000/2", "a Redis Cluster has only database 0"),
        ("redis+cluster://h:7000?db=1", "a Redis Cluster has only database 0"),
        ("redis+cluster://h:7000,,h:7001", "has an empty host in its node list"),
        ("redis+cluster://h:7000,h:7000", "names a node twice"),
        ("redis+cluster://h:7000,h:99999", "port '99999'"),
        ("redis+cluster://h:7000?ssl_cert_reqs=none", "unknown option 'ssl_cert_reqs'"),
        ("redis+sentinel://s1:26379", "needs the master's name after the sentinels"),
        ("redis+sentinel://s1:26379/m/1/2", "needs the master's name after the sentinels"),
        ("redis+sentinel://s1:26379/m/x", "the database must be a number"),
        ("redis+sentinel://s1:26379/m%20x", "master name 'm x' is not letters"),
        ("redis+sentinel://s1/m/1?db=2", "two database numbers"),
        ("redis+sentinel://s1/m?sentinel_password", "not name=value pairs"),
    ],
)
def test_a_bad_ha_url_is_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(InvalidUrlError) as info:
        parse_cache_url(url)
    assert message in str(info.value)


def test_settings_name_the_variable_of_a_bad_ha_url() -> None:
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.load(redis_url="redis+cluster://h:1/3")
    assert info.value.variable == "CTXCACHE_REDIS_URL"
    assert "CTXCACHE_REDIS_URL: a Redis Cluster has only database 0" in str(info.value)


def test_a_cluster_cache_needs_a_broker_of_its_own() -> None:
    settings = CacheSettings.load(redis_url="redis+cluster://h:7000,h:7001")
    with pytest.raises(ConfigurationError) as info:
        _ = settings.effective_broker_url
    assert info.value.variable == "CTXCACHE_BROKER_URL"
    assert "Celery cannot use a Cluster as its broker" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.load(broker_url="redis+cluster://h:7000")
    assert info.value.variable == "CTXCACHE_BROKER_URL"


def test_a_sentinel_broker_needs_its_master_name() -> None:
    check_broker_url("sentinel://s1:26379/1;sentinel://s2:26379/1")
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.load(broker_url="sentinel://s1:26379/1")
    assert info.value.variable == "CTXCACHE_BROKER_MASTER_NAME"
    settings = CacheSettings.load(broker_url="sentinel://s1:26379/1", broker_master_name="m")
    assert settings.effective_broker_master_name == "m"


def test_a_sentinel_cache_gets_a_sentinel_broker_on_the_next_database() -> None:
    target = parse_cache_url(f"redis+sentinel://:{SECRET}@s1:26379,s2:26380/mymaster/4")
    broker = default_broker_url(target, None)
    assert broker == f"sentinel://:{SECRET}@s1:26379/5;sentinel://s2:26380/5"
    check_broker_url(broker)
    settings = CacheSettings.load(redis_url="redis+sentinel://s1:26379/mymaster/4")
    assert settings.effective_broker_master_name == "mymaster"


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"invalidation_replicas": "many"}, "CTXCACHE_INVALIDATION_REPLICAS"),
        ({"invalidation_replicas": "17"}, "CTXCACHE_INVALIDATION_REPLICAS"),
        ({"invalidation_wait_timeout": 0.3}, "CTXCACHE_INVALIDATION_WAIT_TIMEOUT"),
        ({"invalidation_wait_timeout": 0}, "CTXCACHE_INVALIDATION_WAIT_TIMEOUT"),
    ],
)
def test_the_replica_policy_is_checked_at_start_up(
    overrides: dict[str, object], variable: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.load(**overrides)
    assert info.value.variable == variable
    assert CacheSettings.load(invalidation_replicas="AUTO").invalidation_replicas == "auto"
    assert CacheSettings.load(invalidation_replicas="0").invalidation_replicas == 0


def test_a_sentinel_client_is_built_lazily() -> None:
    # Nothing listens there: building must not connect (safe before a fork, fail-open later).
    client = connect(CacheSettings.load(redis_url="redis+sentinel://127.0.0.1:1/m/2"))
    assert client.connection_pool.connection_kwargs["db"] == 2
    client.close()
