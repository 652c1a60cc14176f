"""Finding and deleting the keys of one key namespace, and nothing else.

The demo and the benchmarks write only under a prefix of their own
(``CTXCACHE_KEY_PREFIX`` for the cache, kombu's ``global_keyprefix`` for a
Redis broker) and clean up with these, so that a server they share with real
data keeps every key they did not write. A namespace is every key that starts
with the prefix, plus ctxcache's per-client keys, whose names start with the
hash tag ``{<prefix>full_context:…}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import redis

from ctxcache.core.keys import prefix_problem
from ctxcache.errors import ConfigurationError

__all__ = ["delete_namespace", "namespace_keys"]

_BATCH = 500


def _patterns(prefix: str, extra: Iterable[str]) -> list[str]:
    problem = prefix_problem(prefix) if prefix else "an empty prefix is every key"
    if problem:
        raise ConfigurationError(f"not a namespace: {problem}")
    return [prefix + "*", "{" + prefix + "*", *extra]


def namespace_keys(client: redis.Redis, prefix: str, extra: Iterable[str] = ()) -> Iterator[bytes]:
    """Every key of the namespace ``prefix`` (and of the ``extra`` SCAN patterns), once each."""
    seen: set[bytes] = set()
    for pattern in _patterns(prefix, extra):
        for key in client.scan_iter(match=pattern, count=1000):
            if key not in seen:  # SCAN may return a key twice
                seen.add(key)
                yield key


def delete_namespace(client: redis.Redis, prefix: str, extra: Iterable[str] = ()) -> int:
    """UNLINK every key of the namespace; returns how many there were."""
    keys = list(namespace_keys(client, prefix, extra))
    for start in range(0, len(keys), _BATCH):
        client.unlink(*keys[start : start + _BATCH])
    return len(keys)
