"""The doctor's checks that only a Cluster or a Sentinel deployment needs."""

from __future__ import annotations

from typing import Any, Final

import redis
from redis import exceptions as redis_errors

from ctxcache.urls import RedisTarget

from .report import Check

__all__ = ["cluster_slots_check", "sentinel_fix"]

ALL_SLOTS: Final = 16384


def cluster_slots_check(client: Any) -> Check:
    """Every one of the 16,384 slots served, and the cluster's state ``ok``."""
    try:
        info = client.cluster_info()
    except redis_errors.RedisError as exc:
        return Check("cluster slots", False, f"CLUSTER INFO failed: {exc}", "allow CLUSTER INFO")
    # RedisCluster may answer per node: {node: info}; take the worst.
    infos = list(info.values()) if info and isinstance(next(iter(info.values())), dict) else [info]
    assigned = min(int(one.get("cluster_slots_assigned", 0)) for one in infos)
    states = {str(one.get("cluster_state", "?")) for one in infos}
    detail = f"{assigned:,} of {ALL_SLOTS:,} slots assigned, state {'/'.join(sorted(states))}"
    if assigned < ALL_SLOTS or states != {"ok"}:
        fix = (
            "keys of unassigned slots cannot be cached (fail-open misses): assign them,"
            " `redis-cli --cluster fix <host:port>` (then `redis-cli --cluster check`)"
        )
        return Check("cluster slots", False, detail, fix)
    return Check("cluster slots", True, detail)


def sentinel_fix(target: RedisTarget, timeout: float) -> str:
    """Why no master answers behind Sentinel: unreachable sentinels, or a master name they lack."""
    known: set[str] = set()
    answered = 0
    for host, port in target.nodes:
        client = redis.Redis(host, port, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            known.update(str(name) for name in client.sentinel_masters())
            answered += 1
        except redis_errors.RedisError:
            continue
        finally:
            client.close()
    if not answered:
        return "no sentinel answers: check the hosts and ports in CTXCACHE_REDIS_URL"
    if target.master_name not in known:
        names = ", ".join(sorted(known)) or "none"
        return (
            f"the sentinels watch no master named {target.master_name!r} (they know: {names}):"
            " fix the name in CTXCACHE_REDIS_URL"
        )
    return "the sentinels know the master, but it does not answer: is a failover under way?"
