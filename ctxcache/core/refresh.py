"""Keeping parts fresh before they expire: warm-ups on beat, and early refresh on reads.

A warm-up loads and caches the parts with less than a threshold to live,
each under its load lock (taken without waiting: a part someone else is
loading is skipped) and through its generation guard, so an invalidation
during the warm-up wins.

Early refresh is XFetch (Vattani et al., PVLDB 2015): each part remembers
how long its load took (delta, in its envelope). A read that finds it with
``ttl`` seconds left refreshes it in the background when
``-delta * beta * ln(rand()) >= ttl``: rarely while it is far from expiry,
almost surely just before, and earlier for parts that are slow to load.
The caller gets the still-valid value at once; a part is never refreshed
twice at once (an in-process set, and the load lock across processes).

With a stale grace (``CTXCACHE_STALE_GRACE``) parts outlive their TTL in
Redis by the grace; ``ttl`` above is what is left of the TTL itself. A
part found past it (stale, in its grace) is served and always refreshed
the same way, whatever beta: the client read less than once per TTL that
XFetch cannot catch.
"""

from __future__ import annotations

import enum
import logging
import math
from typing import Final

from ctxcache.core.engine import CacheCore, Identity, Unavailable
from ctxcache.core.loads import (
    Leases,
    Loader,
    company_lease_command,
    let_go,
    load_missing,
    store_loaded,
)
from ctxcache.core.reads import Parts
from ctxcache.core.scripts import LEASE_HIT, LEASE_LOCKED, LEASE_WON, WARM_LEASE
from ctxcache.core.steps import Background, Command, Flow
from ctxcache.protocols import SectionedLoader

__all__ = ["WarmOutcome", "early_refresh", "warm_context"]

logger = logging.getLogger("ctxcache")

# A refresh threshold no TTL reaches: every part counts as due.
_ALWAYS_MS: Final = 2**53


class WarmOutcome(enum.Enum):
    """What a warm-up of a context (or of a company's sections) did."""

    WRITTEN = "written"
    FRESH = "fresh"  # remaining TTL above the threshold: skipped
    BUSY = "busy"  # another worker holds the load lock: skipped
    SUPERSEDED = "superseded"  # invalidated while loading: not (all) written
    UNAVAILABLE = "unavailable"  # Redis could not be used
    UNKNOWN = "unknown"  # the loader does not know this client: nothing cached


def warm_context(
    core: CacheCore,
    who: Identity,
    loader: Loader,
    refresh_threshold: float | None,
    *,
    client: bool,
) -> Flow[WarmOutcome]:
    """Load and cache the parts with less than ``refresh_threshold`` s to live.

    With ``client`` the client's part and the company sections; without,
    the company sections alone (a sectioned loader is needed for that). Each
    part is loaded by one caller at a time and written through its guard, so
    an invalidation during the warm-up wins.
    """
    outcome = yield from _warm(core, who, loader, refresh_threshold, client=client)
    core.stats.add(f"warm_{outcome.value}")
    return outcome


def _warm(
    core: CacheCore,
    who: Identity,
    loader: Loader,
    refresh_threshold: float | None,
    *,
    client: bool,
    sections: tuple[str, ...] | None = None,
) -> Flow[WarmOutcome]:
    threshold = float(core.settings.warmup_refresh_threshold)
    if refresh_threshold is not None:
        threshold = refresh_threshold
    # Remaining TTLs in Redis include the stale grace: a threshold on the TTL does too.
    threshold_ms = _ALWAYS_MS if math.isinf(threshold) else int(threshold * 1000) + core.grace_ms
    names = core.layout.company_sections if sections is None else sections
    leases = Leases()
    commands = []
    if names:
        commands.append(
            company_lease_command(
                core, who, names, leases.token, threshold_ms=threshold_ms, with_values=False
            )
        )
    if client:
        lease_args = (leases.token, core.lock_ms, threshold_ms)
        commands.insert(0, Command("WARM_LEASE", lease_args, WARM_LEASE, who.client.lease))
    replies = yield from core.redis("WARM_LEASE", who.target, commands)
    if isinstance(replies, Unavailable):
        return WarmOutcome.UNAVAILABLE
    client_status = LEASE_HIT
    if client:
        client_status, generation = int(replies[0][0]), replies.pop(0)[1]
        leases.client_generation = _text(generation)
        leases.client_locked = client_status == LEASE_WON
    company_status, generations, stale = LEASE_HIT, [], []
    if names:
        company_status, generations, stale = int(replies[0][0]), replies[0][1], replies[0][3]
    leases.section_generations = {n: _text(g) for n, g in zip(names, generations, strict=True)}
    leases.company_locked = company_status == LEASE_WON
    if (
        leases.company_locked
        and not leases.client_locked
        and not isinstance(loader, SectionedLoader)
    ):
        # A plain loader brings company sections only with a client's: the
        # sections it would refresh are refreshed when a client's part is.
        yield from let_go(core, who, leases)
    needed = tuple(name for name, flag in zip(names, stale, strict=True) if int(flag))
    sections = needed if leases.company_locked else ()
    if not (leases.client_locked or sections):
        busy = client_status == LEASE_LOCKED or (not client and company_status == LEASE_LOCKED)
        return WarmOutcome.BUSY if busy else WarmOutcome.FRESH
    try:
        loaded = yield from load_missing(
            core, who, loader, client=leases.client_locked, sections=sections
        )
    except BaseException:
        yield from let_go(core, who, leases)
        raise
    if loaded.unknown:
        yield from let_go(core, who, leases)
        return WarmOutcome.UNKNOWN
    written, dropped, reached = yield from store_loaded(
        core, who, loaded, leases, store_client=leases.client_locked, store_sections=sections
    )
    if not reached:
        return WarmOutcome.UNAVAILABLE
    if not (written or dropped):
        return WarmOutcome.FRESH  # the loader had nothing the cache lacked
    return WarmOutcome.SUPERSEDED if dropped else WarmOutcome.WRITTEN


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def early_refresh(core: CacheCore, who: Identity, loader: Loader, parts: Parts) -> Flow[None]:
    """Start a background refresh of the parts XFetch finds due, and of the stale ones
    (served in their grace); never waits for it."""
    beta = core.settings.early_refresh_beta
    stale = set(parts.stale)
    if not (beta or stale):
        return
    due = [
        name
        for name, (ttl, delta) in parts.timing.items()
        if name in stale or (beta and ttl is not None and _xfetch_due(core, ttl, delta, beta))
    ]
    if not due:
        return
    refresh_client = "client" in due or not isinstance(loader, SectionedLoader)
    sections = tuple(name for name in due if name != "client")
    if sections or not isinstance(loader, SectionedLoader):
        # All of them in one load: they were stored together and expire together,
        # and one at a time would cost a load each while the company's lock,
        # held for one, makes the refreshes of the others skip (and expire).
        sections = tuple(parts.sections)
    keys = {who.company.section(name) for name in sections}
    if refresh_client:
        keys.add(who.client.full_context)
    with core.refreshing_lock:
        if keys & core.refreshing:
            return  # this process is refreshing them already
        core.refreshing |= keys
    core.stats.add("early_refreshes")
    logger.debug("refreshing %s early: %s", who.target, ", ".join(due))
    yield Background(_refresh(core, who, loader, refresh_client, sections, keys))


def _xfetch_due(core: CacheCore, ttl: float, delta: float, beta: float) -> bool:
    """XFetch's draw: due when ``-delta * beta * ln(rand()) >= ttl`` (never without a delta)."""
    return delta > 0 and -delta * beta * math.log(core.random()) >= ttl


def _refresh(
    core: CacheCore,
    who: Identity,
    loader: Loader,
    client: bool,
    sections: tuple[str, ...],
    keys: set[str],
) -> Flow[None]:
    try:
        outcome = yield from _warm(core, who, loader, math.inf, client=client, sections=sections)
        logger.debug("early refresh of %s: %s", who.target, outcome.value)
    except Exception as exc:  # the loader's own error: the part just expires as usual
        logger.warning("early refresh of %s failed: %s", who.target, exc)
    finally:
        with core.refreshing_lock:
            core.refreshing -= keys
