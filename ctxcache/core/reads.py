"""Reading a context: its client's part and its company's sections, in one round trip.

The client's part and the company's sections live in two hash slots: on a
single server a read is one ``READ_PARTS`` script over all of them; on a
Cluster it sends one per slot in a single pipeline (one round trip per node). A hit needs the
client's part and every company section it was stored with; if any is
missing the read is a miss, never a half context.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ctxcache.core.engine import UNAVAILABLE, CacheCore, Identity, Unavailable
from ctxcache.core.l1 import L1Entry
from ctxcache.core.layout import ClientPart
from ctxcache.core.scripts import PART_UNCHANGED, PART_VALUE, READ_PARTS
from ctxcache.core.steps import Command, Flow
from ctxcache.core.wire import KIND_CLIENT, KIND_FULL, KIND_SECTION, Unpacked
from ctxcache.errors import UndecodableValueError, UndecryptableValueError

__all__ = [
    "ContextReport",
    "PartReport",
    "Parts",
    "count_lookup",
    "decode_part",
    "describe_context",
    "drop_corrupt",
    "get_context",
    "read_parts",
]

logger = logging.getLogger("ctxcache")


@dataclass(slots=True)
class Parts:
    """What one read found of a client's context."""

    whole: dict[str, Any] | None = None  # a whole context: ctxcache 0.1 or the Node service
    client: ClientPart | None = None
    client_stamp: bytes | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    corrupt: list[str] = field(default_factory=list)  # keys holding undecodable values
    # Per part found ("client" or a section's name): seconds to live before it
    # is stale (None: no expiry) and how long its load took, for early refresh.
    timing: dict[str, tuple[float | None, float]] = field(default_factory=dict)
    # Parts found past their TTL, in the stale grace (served, to be refreshed).
    stale: list[str] = field(default_factory=list)

    def merged(self) -> dict[str, Any] | None:
        """The whole context if every part it needs was found, else None."""
        if self.whole is not None:
            return self.whole
        if self.client is None or any(name not in self.sections for name in self.client.company):
            return None
        return self.client.merge(self.sections)

    def missing_sections(self, all_sections: tuple[str, ...]) -> tuple[str, ...]:
        """Company sections still needed: the client part's, or (without one) all of them."""
        wanted = self.client.company if self.client is not None else all_sections
        return tuple(name for name in wanted if name not in self.sections)


def decode_part(
    core: CacheCore, raw: bytes, kind: int, key: str, *, remember: bool = True
) -> tuple[Any, bytes | None, int]:
    """The content, stamp and kind of the value at ``key``; raises :class:`UndecodableValueError`.

    ``kind`` is what the key must hold: a client's part (which may also be a
    whole context of an older writer) or a company section. With ``remember``
    the part is kept in the in-process cache, and the content is what that
    cache hands out (read-only in shared mode).
    """
    content, entry = _decode(core, raw, kind, key)
    if entry is None:
        return content, None, KIND_FULL
    if remember and core.l1.enabled:
        core.l1.put(key, entry)
        if entry.shared is not None:
            content = _content(entry, kind)  # the shared, read-only value
    return content, entry.stamp, kind


def _decode(core: CacheCore, raw: bytes, kind: int, key: str) -> tuple[Any, L1Entry | None]:
    """The content, and an in-process cache entry for it (None for a whole context)."""
    unpacked = unpack(core, raw, key)
    if kind == KIND_SECTION and unpacked.kind != KIND_SECTION:
        raise UndecodableValueError("a company section key holds something else")
    if kind == KIND_CLIENT and unpacked.kind == KIND_FULL:
        return core.codec.loads_object(unpacked.data), None
    if kind == KIND_CLIENT and unpacked.kind != KIND_CLIENT:
        raise UndecodableValueError("a client key holds a company section")
    assert unpacked.stamp is not None
    if kind == KIND_SECTION:
        value = core.codec.loads(unpacked.data)
        entry = core.l1.make(
            "section", unpacked.stamp, unpacked.data, value, {}, unpacked.load_seconds
        )
        return value, entry
    data = core.codec.loads_object(unpacked.data)
    try:
        part = ClientPart.from_meta(data, unpacked.meta)
    except ValueError as exc:
        raise UndecodableValueError(str(exc)) from exc
    meta = part.meta()
    entry = core.l1.make("client", unpacked.stamp, unpacked.data, data, meta, unpacked.load_seconds)
    return part, entry


def unpack(core: CacheCore, raw: bytes, key: str) -> Unpacked:
    """``core.codec.unpack`` that counts values that fail to decrypt (their callers
    count them as corrupt too, and remove them)."""
    try:
        return core.codec.unpack(raw, key)
    except UndecryptableValueError:
        core.stats.add("undecryptable")
        raise


def _content(entry: L1Entry, kind: int) -> Any:
    """What a caller gets from an in-process cache entry (new objects in copy mode)."""
    value = entry.value()
    if kind == KIND_SECTION:
        return value
    meta = entry.meta
    return ClientPart(data=value, company=tuple(meta["company"]), order=tuple(meta["order"]))


def read_parts(
    core: CacheCore,
    who: Identity,
    names: tuple[str, ...],
    operation: str = "GET",
    *,
    serve_stale: bool = False,
) -> Flow[Parts | Unavailable]:
    """The client's part and the company sections ``names``, in one round trip.

    Parts this process holds in its in-process cache go with their stamps,
    and come back as "unchanged" (a few bytes) while they are current. A
    part past its TTL, in its stale grace, is found (and listed in
    ``Parts.stale``) only with ``serve_stale``: for reads that refresh it.
    """
    keys = (who.client.full_context, *who.company.sections(names))
    l1 = core.l1
    held = [l1.get(key) for key in keys] if l1.enabled else [None] * len(keys)
    stamps = [entry.stamp if entry is not None else b"" for entry in held]
    if core.cluster:  # one script per slot
        commands: tuple[Command, ...] = (
            Command("READ_PARTS", (stamps[0],), READ_PARTS, keys[:1]),
            Command("READ_PARTS", tuple(stamps[1:]), READ_PARTS, keys[1:]),
        )
    else:  # one script call: a hit's trip is a single command, the cheapest on both ends
        commands = (Command("READ_PARTS", tuple(stamps), READ_PARTS, keys),)
    replies = yield from core.redis(operation, who.target, commands)
    if isinstance(replies, Unavailable):
        return UNAVAILABLE
    flat = [item for reply in replies for item in reply]
    parts = Parts()
    l1_hits = 0
    for index, key in enumerate(keys):
        status, raw, pttl = int(flat[3 * index]), flat[3 * index + 1], int(flat[3 * index + 2])
        name, kind = ("client", KIND_CLIENT) if index == 0 else (names[index - 1], KIND_SECTION)
        entry = held[index]
        if status == PART_UNCHANGED and entry is not None:
            if not serve_stale and _stale(core, pttl):
                continue  # past its TTL, for a read that cannot refresh it (see below)
            l1_hits += 1
            content = _content(entry, kind)
        elif status == PART_VALUE:
            try:
                content, entry = _decode(core, raw, kind, key)
            except UndecodableValueError as exc:
                _log_corrupt(core, who.target if index == 0 else f"{who.company.label}:{name}", exc)
                parts.corrupt.append(key)
                continue
            if entry is None:  # an older writer's whole context
                parts.whole = content
                continue
            if l1.enabled:
                core.stats.add("l1_misses")
                l1.put(key, entry)
                if entry.shared is not None:
                    content = _content(entry, kind)  # the shared, read-only value
        else:
            if entry is not None:
                l1.discard(key)
            continue
        if _stale(core, pttl):
            if not serve_stale:
                continue  # past its TTL: a miss for a read that cannot refresh it
            parts.stale.append(name)
        parts.timing[name] = (core.logical_ttl(pttl), entry.load_seconds)
        if kind == KIND_CLIENT:
            parts.client, parts.client_stamp = content, entry.stamp
        else:
            parts.sections[name] = content
    if l1_hits:
        core.stats.add("l1_hits", l1_hits)
    yield from drop_corrupt(core, parts.corrupt, who.target)
    return parts


def _stale(core: CacheCore, pttl: int) -> bool:
    """Whether a part with this PTTL is past its TTL, living on in its grace."""
    return core.grace_ms > 0 and 0 <= pttl <= core.grace_ms


def _log_corrupt(core: CacheCore, target: str, exc: Exception) -> None:
    core.stats.add("corrupt")
    logger.error("removing undecodable value at %s: %s", target, exc)


def drop_corrupt(core: CacheCore, keys: list[str], target: str) -> Flow[None]:
    """Delete values that could not be decoded, so the next read is a plain miss."""
    if keys:
        # One DEL per key: a client's part and its company's sections are in two slots.
        yield from core.redis("DEL", target, [Command("DEL", (key,)) for key in keys])


def count_lookup(core: CacheCore, who: Identity, parts: Parts, context: object) -> None:
    """Count a whole-context lookup and its parts by scope."""
    if parts.whole is not None:
        core.stats.add("client_hits")
    else:
        core.stats.add("client_hits" if parts.client is not None else "client_misses")
        wanted = parts.client.company if parts.client is not None else core.layout.company_sections
        found = sum(1 for name in wanted if name in parts.sections)
        if found:
            core.stats.add("company_hits", found)
        if len(wanted) > found:
            core.stats.add("company_misses", len(wanted) - found)
    if context is None:
        core.stats.add("misses")
        logger.debug("cache miss %s", who.target)
    else:
        core.stats.add("hits")
        if parts.stale:
            core.stats.add("stale_hits")  # of the hits: served in the grace, refreshing
        logger.info("cache hit %s%s", who.target, " (stale)" if parts.stale else "")


def get_context(core: CacheCore, phone: str, company_id: int | str) -> Flow[dict[str, Any] | None]:
    """The cached context, or ``None`` on a miss, a corrupt value or a Redis failure."""
    who = core.identify(phone, company_id)
    parts = yield from read_parts(core, who, core.layout.company_sections)
    if isinstance(parts, Unavailable):
        core.stats.add("misses")
        return None
    context = parts.merged()
    count_lookup(core, who, parts, context)
    return context


@dataclass(frozen=True, slots=True)
class PartReport:
    """One part of a cached context, as an operator sees it."""

    name: str  # "client", or the company section's name
    scope: str  # "client" | "company"
    key: str
    found: bool
    stored_bytes: int = 0
    json_bytes: int = 0
    compressed: bool = False
    ttl_seconds: float | None = None  # before it is stale; None: no expiry (or not found)
    age_seconds: float | None = None  # None: unknown (an older writer's value)
    problem: str | None = None  # why it cannot be decoded
    # Past its TTL, in the stale grace: ttl_seconds is negative, the part
    # lives on for grace_seconds more (served only by load-through reads).
    stale: bool = False
    grace_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ContextReport:
    """What :func:`describe_context` found: the merged context and each part."""

    context: dict[str, Any] | None
    parts: tuple[PartReport, ...]
    whole: bool  # a whole context of an older writer


def describe_context(
    core: CacheCore, phone: str, company_id: int | str
) -> Flow[ContextReport | Unavailable]:
    """Every part of a client's context with its size, TTL and age; nothing is changed."""
    who = core.identify(phone, company_id)
    names = core.layout.company_sections
    section_keys = tuple(who.company.sections(names))
    commands = (
        Command("READ_PARTS", ("",), READ_PARTS, (who.client.full_context,)),
        Command("READ_PARTS", ("",) * len(names), READ_PARTS, section_keys),
    )
    replies = yield from core.redis("DESCRIBE", who.target, commands)
    if isinstance(replies, Unavailable):
        return UNAVAILABLE
    raw = [replies[0][0:3], *(replies[1][3 * i : 3 * i + 3] for i in range(len(names)))]
    entries = [
        ("client", "client", who.client.full_context),
        *((name, "company", key) for name, key in zip(names, section_keys, strict=True)),
    ]
    now = core.codec.wall_clock()
    reports: list[PartReport] = []
    parts = Parts()
    for (name, scope, key), (status, value, pttl) in zip(entries, raw, strict=True):
        if int(status) != PART_VALUE:
            reports.append(PartReport(name, scope, key, found=False))
            continue
        ttl = core.logical_ttl(int(pttl))
        stale = _stale(core, int(pttl))
        grace = int(pttl) / 1000 if stale else None
        try:
            unpacked = core.codec.unpack(value, key)
            content, _, kind = decode_part(
                core, value, KIND_CLIENT if scope == "client" else KIND_SECTION, key, remember=False
            )
        except UndecodableValueError as exc:
            reports.append(
                PartReport(name, scope, key, True, len(value), ttl_seconds=ttl, problem=str(exc))
            )
            continue
        if kind == KIND_FULL:
            parts.whole = content
        elif scope == "client":
            parts.client = content
        else:
            parts.sections[name] = content
        age = now - unpacked.written_at if unpacked.written_at else None
        compressed = len(unpacked.data) > len(value)
        reports.append(
            PartReport(
                name,
                scope,
                key,
                True,
                len(value),
                len(unpacked.data),
                compressed,
                ttl,
                age,
                stale=stale,
                grace_seconds=grace,
            )
        )
    wanted = parts.client.company if parts.client is not None else names
    shown = [r for r in reports if r.scope == "client" or r.name in wanted or r.found]
    return ContextReport(parts.merged(), tuple(shown), parts.whole is not None)
