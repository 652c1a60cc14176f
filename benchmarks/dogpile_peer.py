"""dogpile.cache's Redis region, the peer the peers and l1 suites measure hits against.

Its own module so that the l1 suite (smoke-tested by ``make test``) needs only
dogpile.cache, not the peers suite's cashews and matplotlib.
"""

from __future__ import annotations

from dogpile.cache import CacheRegion, make_region

from benchmarks.common import NAMESPACE

__all__ = ["DOGPILE_KEY", "DOGPILE_LOCKS", "TTL", "dogpile_region"]

TTL = 43200  # the spec's 12 h, for every contender
DOGPILE_KEY = NAMESPACE + "dogpile"
# dogpile's distributed lock is "_lock" + the key; its lock_prefix allows 10 characters only.
DOGPILE_LOCKS = "_lock" + NAMESPACE + "*"


def dogpile_region(url: str) -> CacheRegion:
    """dogpile.cache's Redis region as its documentation configures it (pickle, no compression)."""
    return make_region().configure(
        "dogpile.cache.redis",
        arguments={
            "url": url,
            "redis_expiration_time": TTL,
            "distributed_lock": True,
            "thread_local_lock": False,  # as dogpile's docs pair it; it warns otherwise
        },
    )
