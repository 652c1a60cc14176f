"""The Redis and broker URLs: parsed and checked once, when the settings load, with no I/O.

redis-py and kombu are lenient in ways that hurt: ``redis://host/abc`` reads
database 0, an unknown ``?option=`` reaches the connection class and fails on
the first command, a port of 99999 fails deep inside a worker's start-up. Here
every URL is split by hand (so a malformed one gets a sentence, not a
``ValueError`` from :mod:`urllib`) and each part is checked against what the
client library will accept. Messages never repeat a password and cut long
inputs; the settings prefix them with the variable's name.

The default broker is derived here too: the cache's server, next database
(``redis+socket://`` when the cache is on a unix socket).

Highly available deployments have schemes of their own:
``redis+cluster://h1:7000,h2:7001`` (a Redis Cluster, seed nodes) and
``redis+sentinel://s1:26379,s2:26379/<master-name>/<db>`` (the master that
Sentinel names), each with a ``rediss+`` form for TLS.
"""

from ctxcache.urls.broker import (
    broker_tls,
    check_broker_url,
    default_broker_url,
    redis_url_of_broker,
)
from ctxcache.urls.cache import RedisTarget, parse_cache_url, password_source
from ctxcache.urls.parsing import BROKER_SCHEMES, CACHE_SCHEMES, CLUSTER_SCHEMES, SENTINEL_SCHEMES

__all__ = [
    "BROKER_SCHEMES",
    "CACHE_SCHEMES",
    "CLUSTER_SCHEMES",
    "SENTINEL_SCHEMES",
    "RedisTarget",
    "broker_tls",
    "check_broker_url",
    "default_broker_url",
    "parse_cache_url",
    "password_source",
    "redis_url_of_broker",
]
