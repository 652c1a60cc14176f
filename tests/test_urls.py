"""ctxcache.urls: what redis-py or kombu would misread is refused, with the reason."""

from __future__ import annotations

import kombu
import pytest
import redis

from ctxcache.errors import ConfigurationError, InvalidUrlError
from ctxcache.urls import (
    check_broker_url,
    default_broker_url,
    parse_cache_url,
    password_source,
    redis_url_of_broker,
)

SECRET = "s3cret-Pa55"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:6379", "must be a URL such as redis://"),
        ("http://127.0.0.1:6379/0", "scheme 'http' is not one of redis://, rediss://, unix://"),
        ("redis://127.0.0.1:6379/abc", "database must be a number from 0 up, e.g. /0, not 'abc'"),
        ("redis://127.0.0.1:6379/1/2", "not '1/2'"),
        ("redis://127.0.0.1:6379/-1", "not '-1'"),
        ("redis://127.0.0.1:99999/0", "port '99999' is not a number from 1 to 65535"),
        ("redis://127.0.0.1:0/0", "port '0'"),
        ("redis://127.0.0.1:port/0", "port 'port'"),
        ("redis://[::1:6379/4", "malformed IPv6 address '[::1:6379'"),
        ("redis://[::1]6379/4", "malformed IPv6 address"),
        ("redis://[zz::1]:6379/4", "is not an IPv6 address"),
        ("redis://::1:6379/4", "an IPv6 address goes in brackets"),
        ("redis://bad host:6379/0", "host 'bad host' is not a host name"),
        ("redis://:6379/0", "has no host"),
        ("redis://127.0.0.1:6379/0?socket_timeout=abc", "socket_timeout='abc' is not a number"),
        ("redis://127.0.0.1:6379/0?socket_timeout=0", "must be a positive number of seconds"),
        ("redis://127.0.0.1:6379/0?socket_timeout=nan", "must be a positive number of seconds"),
        ("redis://127.0.0.1:6379/0?max_connections=1.5", "must be a whole number, 1 or more"),
        ("redis://127.0.0.1:6379/0?socket_keepalive=maybe", "must be true or false"),
        ("redis://127.0.0.1:6379/0?protocol=4", "must be 2 or 3"),
        ("redis://127.0.0.1:6379/0?sockettimeout=1", "unknown option 'sockettimeout'"),
        ("redis://127.0.0.1:6379/0?decode_responses=true", "unknown option 'decode_responses'"),
        ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "unknown option 'ssl_cert_reqs'"),
        ("rediss://cache:6380/0?ssl_cert_reqs=maybe", "must be none, optional or required"),
        ("redis://127.0.0.1:6379/0?db=1&db=2", "option db is given twice"),
        ("redis://127.0.0.1:6379/1?db=2", "two database numbers: /1 and ?db=2"),
        ("redis://127.0.0.1:6379/0?db", "not name=value pairs"),
        ("redis://:pa#ss@127.0.0.1:6379/0", "an unencoded '#' in the password? write it as %23"),
        ("unix://redis.sock", "unix:// needs the socket's absolute path"),
        ("unix:///tmp/redis.sock?db=x", "db='x' must be a whole number"),
    ],
)
def test_a_bad_cache_url_is_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(InvalidUrlError) as info:
        parse_cache_url(url)
    assert message in str(info.value)
    assert isinstance(info.value, ConfigurationError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", ("redis", "127.0.0.1", 6379, None, 0)),
        ("redis://cache", ("redis", "cache", 6379, None, 0)),
        ("redis://cache/", ("redis", "cache", 6379, None, 0)),
        ("redis://[::1]:6380/4", ("redis", "::1", 6380, None, 4)),
        ("rediss://cache.in:6390/15?ssl_cert_reqs=none", ("rediss", "cache.in", 6390, None, 15)),
        ("redis://cache:6379?db=3&socket_timeout=1.5", ("redis", "cache", 6379, None, 3)),
        ("unix:///run/redis/redis.sock", ("unix", None, None, "/run/redis/redis.sock", 0)),
        ("unix:///run/redis/redis.sock?db=2", ("unix", None, None, "/run/redis/redis.sock", 2)),
        ("  redis://cache:6379/1 ", ("redis", "cache", 6379, None, 1)),
    ],
)  # fmt: skip
def test_a_good_cache_url_is_read_as_redis_py_reads_it(
    url: str, expected: tuple[object, ...]
) -> None:
    target = parse_cache_url(url)
    assert (target.scheme, target.host, target.port, target.socket_path, target.db) == expected
    kwargs = redis.connection.parse_url(url.strip())
    assert kwargs.get("db", 0) == target.db
    if target.host:
        assert (kwargs.get("host"), kwargs.get("port", 6379)) == (target.host, target.port)
    else:
        assert kwargs["path"] == target.socket_path


def test_error_messages_never_show_a_password_and_cut_long_input() -> None:
    for url in (
        f"redis://:{SECRET}@127.0.0.1:99999/0",
        f"redis://127.0.0.1:6379/0?password={SECRET}&password=x",
        f"rediss://h:1/0?ssl_password={SECRET}&ssl_check_hostname=perhaps",
    ):
        with pytest.raises(InvalidUrlError) as info:
            parse_cache_url(url)
        assert SECRET not in str(info.value)
    with pytest.raises(InvalidUrlError) as info:
        parse_cache_url("redis://" + "9" * 5000 + ":6379/0")
    assert len(str(info.value)) < 200
    assert "5,000 characters" in str(info.value)


def test_passwords_are_read_from_the_user_part_or_the_query() -> None:
    assert parse_cache_url(f"redis://:{SECRET}@h:1/0").password == SECRET
    assert parse_cache_url("redis://:p%40ss%2Fw@h:1/0").password == "p@ss/w"
    assert parse_cache_url(f"redis://h:1/0?password={SECRET}").password == SECRET
    assert parse_cache_url(f"unix://:{SECRET}@/tmp/r.sock").password == SECRET
    target = parse_cache_url("redis://h:1/0")
    assert target.password is None
    assert SECRET not in repr(parse_cache_url(f"redis://:{SECRET}@h:1/0"))
    assert password_source(target, env_password_set=True) == "REDIS_PASSWORD"
    assert password_source(target, env_password_set=False) is None
    with_password = parse_cache_url(f"redis://:{SECRET}@h:1/0")
    assert password_source(with_password, env_password_set=True) == "the URL"


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:guest@127.0.0.1:5672//",
        "amqps://user:pw@mq.internal:5671/vhost?heartbeat=30",
        "pyamqp://guest@localhost//",
        "redis://127.0.0.1:6379/13",
        "rediss://:pw@cache:6380/1?ssl_cert_reqs=required",
        "redis+socket:///run/redis/redis.sock?virtual_host=1",
        "redis://127.0.0.1:6379/1;redis://127.0.0.1:6380/1",
    ],
)
def test_a_good_broker_url_passes_and_kombu_accepts_it(url: str) -> None:
    check_broker_url(url)
    kombu.Connection(url)  # builds without connecting: kombu parses it too


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://mq:5672//", "scheme 'http' is not one of redis://, rediss://, redis+socket://"),
        ("sqs://key:secret@", "scheme 'sqs'"),
        ("redis://127.0.0.1:6379/abc", "database must be a number"),
        ("amqp://guest@mq:99999//", "port '99999'"),
        ("redis://127.0.0.1:6379/0?socket_timeout=5", "unknown option 'socket_timeout'"),
        ("amqp://guest@mq:5672//?heartbeat=often", "heartbeat='often' must be a whole number"),
        ("redis+socket://redis.sock", "redis+socket:// needs the socket's absolute path"),
        ("redis+socket:///tmp/r.sock?virtual_host=x", "virtual_host='x'"),
        ("redis+cluster://10.0.0.1:7000", "Celery cannot use a Redis Cluster as its broker"),
        ("redis://127.0.0.1:6379/1;redis://127.0.0.1:99999/1", "port '99999'"),
    ],
)
def test_a_bad_broker_url_is_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(InvalidUrlError) as info:
        check_broker_url(url)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("cache_url", "password", "broker"),
    [
        ("redis://127.0.0.1:6379/0", None, "redis://127.0.0.1:6379/1"),
        ("redis://127.0.0.1", None, "redis://127.0.0.1:6379/1"),
        ("redis://[::1]:6379/4", None, "redis://[::1]:6379/5"),
        ("redis://127.0.0.1:6379/15", None, "redis://127.0.0.1:6379/14"),
        ("redis://10.0.0.5:6379/0", "s3cret/pw", "redis://:s3cret%2Fpw@10.0.0.5:6379/1"),
        ("redis://user:url-pw@h:6379/0", "env-pw", "redis://user:url-pw@h:6379/1"),
        ("redis://h:6379/0?password=q-pw&socket_timeout=2", None, "redis://:q-pw@h:6379/1"),
        ("rediss://cache:6390/2", None, "rediss://cache:6390/3?ssl_cert_reqs=required"),
        (
            "rediss://cache:6390/2?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem&socket_timeout=1",
            None,
            "rediss://cache:6390/3?ssl_cert_reqs=none&ssl_ca_certs=%2Fetc%2Fca.pem",
        ),
        ("unix:///run/redis.sock", None, "redis+socket:///run/redis.sock?virtual_host=1"),
        ("unix:///run/redis.sock?db=3", "pw", "redis+socket://:pw@/run/redis.sock?virtual_host=4"),
    ],
)
def test_the_default_broker_is_the_next_database_for_every_kind_of_cache_url(
    cache_url: str, password: str | None, broker: str
) -> None:
    derived = default_broker_url(parse_cache_url(cache_url), password)
    assert derived == broker
    check_broker_url(derived)


def test_a_broker_is_looked_at_through_a_redis_py_url() -> None:
    assert redis_url_of_broker("redis://:pw@h:6379/3") == "redis://:pw@h:6379/3"
    assert redis_url_of_broker("rediss://h:6379/3?ssl_cert_reqs=none") == "rediss://h:6379/3"
    assert (
        redis_url_of_broker("redis+socket://:pw@/run/r.sock?virtual_host=2")
        == "unix://:pw@/run/r.sock?db=2"
    )
    assert redis_url_of_broker("amqp://guest@mq//") is None
