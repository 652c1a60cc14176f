"""Load-through: the spec's "load context" flow, per part, safe under stampedes and races.

On a miss only the missing parts are loaded, each by one caller across all
processes: the client's part under the client's load lock, the company's
missing sections under the company's. Callers that find a lock taken poll
(bounded by ``lock_wait``) for the parts to appear, then load themselves.
Every write is guarded by the generations read with the lease, so a load
that an invalidation overtook is returned to its caller but never cached.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ctxcache.core.engine import CacheCore, Identity, Unavailable
from ctxcache.core.layout import ClientPart
from ctxcache.core.reads import Parts, count_lookup, decode_part, drop_corrupt, read_parts
from ctxcache.core.scripts import COMPANY_LEASE, LEASE, LEASE_HIT, LEASE_WON, RELEASE_LOCK
from ctxcache.core.steps import CallLoader, Command, Flow, Pause
from ctxcache.core.wire import KIND_CLIENT, KIND_SECTION
from ctxcache.core.writes import NOTHING, encode_parts, store_commands
from ctxcache.errors import InvalidContextError, SectionScopeError, UndecodableValueError
from ctxcache.protocols import ContextLoader, SectionedLoader

__all__ = [
    "Leases",
    "Loaded",
    "call_loader",
    "company_lease_command",
    "let_go",
    "load_context",
    "load_missing",
    "store_loaded",
]

logger = logging.getLogger("ctxcache")

_POLL_FIRST: Final = 0.005
_POLL_MAX: Final = 0.05

Loader = ContextLoader | SectionedLoader


@dataclass(slots=True)
class Leases:
    """Generations read before loading, and the load locks this caller holds."""

    token: str = field(default_factory=lambda: secrets.token_hex(16))
    client_generation: str | None = None
    client_locked: bool = False
    section_generations: dict[str, str] = field(default_factory=dict)
    company_locked: bool = False

    def release(self, who: Identity) -> list[Command]:
        """Commands that let go of the locks this caller holds."""
        commands = []
        if self.client_locked:
            commands.append(Command("RELEASE", (self.token,), RELEASE_LOCK, (who.client.lock,)))
        if self.company_locked:
            commands.append(Command("RELEASE", (self.token,), RELEASE_LOCK, (who.company.lock,)))
        self.client_locked = self.company_locked = False
        return commands


@dataclass(slots=True)
class Loaded:
    """What one load produced: a whole context (plain loader) or parts (sectioned)."""

    whole: dict[str, Any] | None = None
    client: ClientPart | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    unknown: bool = False  # the loader does not know this client


def company_lease_command(
    core: CacheCore,
    who: Identity,
    names: tuple[str, ...],
    token: str,
    *,
    threshold_ms: int = -1,
    with_values: bool = True,
) -> Command:
    """The ``COMPANY_LEASE`` of ``names``: their generations, values, and the company's lock."""
    keys = (who.company.generations, who.company.lock, *who.company.sections(names))
    args = (token, core.lock_ms, threshold_ms, "1" if with_values else "0", *names)
    return Command("COMPANY_LEASE", args, COMPANY_LEASE, keys)


def call_loader(core: CacheCore, who: Identity, function: Any, args: tuple[Any, ...]) -> Flow[Any]:
    """Call a loader function, timing it into the stats; its errors propagate."""
    logger.info("loading %s from the database", who.target)
    started = core.clock()
    try:
        result = yield CallLoader(function, args)
    finally:
        elapsed = core.clock() - started
        core.stats.record_load(elapsed)
    logger.debug("loaded %s in %.1f ms", who.target, elapsed * 1000)
    return result, elapsed


def _as_dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidContextError(f"{what} returned {type(value).__name__}, not a mapping")
    return value if isinstance(value, dict) else dict(value)


def load_missing(
    core: CacheCore,
    who: Identity,
    loader: Loader,
    *,
    client: bool,
    sections: tuple[str, ...],
) -> Flow[Loaded]:
    """Call the loader for the client's part and/or ``sections``; a plain loader loads all."""
    loaded = Loaded()
    if not isinstance(loader, SectionedLoader):
        result, loaded.seconds = yield from call_loader(
            core, who, loader, (who.phone, who.company_id)
        )
        if result is None:
            loaded.unknown = True
            return loaded
        loaded.whole = _as_dict(result, "the loader")
        loaded.client, loaded.sections = core.layout.split(loaded.whole)
        return loaded
    if client:
        result, loaded.seconds = yield from call_loader(
            core, who, loader.load_client, (who.phone, who.company_id)
        )
        if result is None:
            loaded.unknown = True
            return loaded
        data = _as_dict(result, "load_client")
        core.layout.check_client_sections(data, source="load_client")
        company = core.layout.company_sections
        loaded.client = ClientPart(data=data, company=company, order=(*company, *data))
    if sections:
        result, seconds = yield from call_loader(
            core, who, loader.load_company_sections, (who.company_id, sections)
        )
        loaded.seconds += seconds
        found = _as_dict(result, "load_company_sections")
        strays = [name for name in found if not core.layout.is_company(name)]
        if strays:
            raise SectionScopeError(
                f"load_company_sections returned {', '.join(strays)}, not company sections"
            )
        lacking = [name for name in sections if name not in found]
        if lacking:
            raise InvalidContextError(
                f"load_company_sections did not return {', '.join(lacking)}; "
                "return a company that lacks a section as an empty value"
            )
        loaded.sections = {name: found[name] for name in sections}
    return loaded


def store_loaded(
    core: CacheCore,
    who: Identity,
    loaded: Loaded,
    leases: Leases,
    *,
    store_client: bool,
    store_sections: tuple[str, ...],
) -> Flow[tuple[int, int, bool]]:
    """Write what may be written of ``loaded`` through the guards, and release the locks.

    Returns (parts written, parts dropped by an invalidation, whether Redis
    answered). A part JSON cannot hold is counted and logged, never raised:
    the caller has its data.
    """
    part = loaded.client if store_client else None
    sections = {name: loaded.sections[name] for name in store_sections if name in loaded.sections}
    try:
        encoded = encode_parts(core, who, part, sections, load_seconds=loaded.seconds)
    except InvalidContextError as exc:
        core.stats.add("uncacheable")
        logger.warning("not caching %s: %s", who.target, exc)
        encoded = NOTHING
    commands = store_commands(
        core,
        who,
        encoded,
        core.stored_ms(None),
        leases.client_generation or "never",
        leases.section_generations,
        client_token=leases.token if leases.client_locked else "",
        company_token=leases.token if leases.company_locked else "",
    )
    leases.client_locked = leases.company_locked = False
    if not commands:
        return 0, 0, True
    replies = yield from core.redis("STORE", who.target, commands)
    if isinstance(replies, Unavailable):
        return 0, 0, False
    written = 0
    for reply in replies:
        written += sum(int(flag) for flag in reply) if isinstance(reply, list) else int(reply)
    wanted = (encoded.client is not None) + len(encoded.sections)
    core.stats.add("sets", written)
    if written < wanted:
        core.stats.add("superseded", wanted - written)
        logger.info("not caching all of %s: invalidated while it was loading", who.target)
    elif written:
        logger.info("cached %s (%d bytes stored)", who.target, encoded.size)
    return written, wanted - written, True


OnHit = Callable[[CacheCore, Identity, Loader, Parts], Flow[None]]


def load_context(
    core: CacheCore,
    phone: str,
    company_id: int | str,
    loader: Loader,
    on_hit: OnHit | None = None,
) -> Flow[dict[str, Any] | None]:
    """The cache, else the loader once across all callers, part by part.

    ``on_hit`` runs after a hit (the early refresh of :mod:`ctxcache.core.refresh`);
    with it, parts in their stale grace are hits, which it refreshes.
    """
    who = core.identify(phone, company_id)
    # Stale parts (in their grace) are served only where on_hit can refresh them.
    names = core.layout.company_sections
    parts = yield from read_parts(core, who, names, serve_stale=on_hit is not None)
    if isinstance(parts, Unavailable):
        core.stats.add("misses")
        # Redis just failed: no lease (another timeout), and without
        # generations nothing may be written. Just load.
        loaded = yield from load_missing(
            core, who, loader, client=True, sections=core.layout.company_sections
        )
        return _result(loaded, None, {})
    context = parts.merged()
    count_lookup(core, who, parts, context)
    if context is not None:
        if on_hit is not None:
            yield from on_hit(core, who, loader, parts)
        return context
    return (yield from _fill(core, who, loader, parts.client, parts.sections))


def _result(
    loaded: Loaded, client: ClientPart | None, have: dict[str, Any]
) -> dict[str, Any] | None:
    if loaded.unknown:
        return None
    if loaded.whole is not None:
        return loaded.whole
    part = loaded.client or client
    assert part is not None
    return part.merge({**have, **loaded.sections})


def _missing(
    core: CacheCore, client: ClientPart | None, have: Mapping[str, Any]
) -> tuple[str, ...]:
    wanted = client.company if client is not None else core.layout.company_sections
    return tuple(name for name in wanted if name not in have)


def _fill(
    core: CacheCore,
    who: Identity,
    loader: Loader,
    client: ClientPart | None,
    have: dict[str, Any],
) -> Flow[dict[str, Any] | None]:
    """Lease, wait or load until every part is there; the loop of :func:`load_context`.

    A plain loader loads everything at once, so while the client's part is
    missing it loads under the client's lock alone, and writes the missing
    sections it brings through their guards. The company's lock serves
    sectioned loaders, and plain ones when only sections are missing.
    """
    plain = not isinstance(loader, SectionedLoader)
    leases = Leases()
    deadline = core.clock() + core.settings.lock_wait
    delay = _POLL_FIRST
    while True:
        missing = _missing(core, client, have)
        commands = []
        if client is None and not leases.client_locked:
            commands.append(Command("LEASE", (leases.token, core.lock_ms), LEASE, who.client.lease))
        if missing and not leases.company_locked:
            lock = leases.token if not (plain and client is None) else ""
            commands.append(company_lease_command(core, who, missing, lock))
        if commands:
            replies = yield from core.redis("LEASE", who.target, commands)
            if isinstance(replies, Unavailable):
                # Without generations nothing may be written: load and return.
                loaded = yield from load_missing(
                    core, who, loader, client=client is None, sections=missing
                )
                yield from let_go(core, who, leases)
                return _result(loaded, client, have)
            if client is None and not leases.client_locked:
                found = yield from _client_lease(core, who, leases, replies.pop(0))
                if isinstance(found, dict):  # an older writer's whole context
                    yield from let_go(core, who, leases)
                    core.stats.add("coalesced")
                    return found
                client = found
            if missing and not leases.company_locked:
                yield from _company_lease(core, who, leases, replies.pop(0), missing, have)
            missing = _missing(core, client, have)
        if client is not None and not missing:
            yield from let_go(core, who, leases)
            core.stats.add("coalesced")
            return client.merge(have)
        past = core.clock() >= deadline
        load_client = client is None and (leases.client_locked or past)
        load_sections = bool(missing) and (leases.company_locked or past or (plain and load_client))
        if plain and client is None and not load_client:
            load_sections = False  # it would load the client's part too: wait for its holder
        if not (load_client or load_sections):
            yield Pause(delay)
            delay = min(delay * 2, _POLL_MAX)
            continue
        if past and not (leases.client_locked or leases.company_locked):
            logger.info("gave up waiting for the load of %s; loading here", who.target)
        try:
            loaded = yield from load_missing(
                core, who, loader, client=load_client, sections=missing if load_sections else ()
            )
        except BaseException:
            yield from let_go(core, who, leases)
            raise
        if loaded.unknown:
            yield from let_go(core, who, leases)
            return None
        yield from store_loaded(
            core,
            who,
            loaded,
            leases,
            store_client=load_client,
            store_sections=missing if load_sections else (),
        )
        if loaded.whole is not None:
            return loaded.whole  # a plain loader's result: everything, fresh
        if load_client:
            client = loaded.client
        have.update(loaded.sections)
        if client is not None and not _missing(core, client, have):
            return client.merge(have)
        # Sections another caller is still loading: wait for them with what we have.


def let_go(core: CacheCore, who: Identity, leases: Leases) -> Flow[None]:
    commands = leases.release(who)
    if commands:
        yield from core.redis("RELEASE", who.target, commands)


def _client_lease(
    core: CacheCore, who: Identity, leases: Leases, reply: list[Any]
) -> Flow[ClientPart | dict[str, Any] | None]:
    """The client's part if it appeared meanwhile (or an older writer's whole context)."""
    status = int(reply[0])
    leases.client_generation = _text(reply[1])
    if status == LEASE_WON:
        leases.client_locked = True
    if status != LEASE_HIT:
        return None
    try:
        content, _, _ = decode_part(core, reply[2], KIND_CLIENT, who.client.full_context)
    except UndecodableValueError as exc:
        core.stats.add("corrupt")
        logger.error("removing undecodable value at %s: %s", who.target, exc)
        yield from drop_corrupt(core, [who.client.full_context], who.target)
        return None
    part: ClientPart | dict[str, Any] = content
    return part


def _company_lease(
    core: CacheCore,
    who: Identity,
    leases: Leases,
    reply: list[Any],
    names: tuple[str, ...],
    have: dict[str, Any],
) -> Flow[None]:
    status, generations, values = int(reply[0]), reply[1], reply[2]
    if status == LEASE_WON:
        leases.company_locked = True
    corrupt = []
    for name, generation, raw in zip(names, generations, values, strict=True):
        leases.section_generations[name] = _text(generation)
        if not raw:
            continue
        try:
            have[name] = decode_part(core, raw, KIND_SECTION, who.company.section(name))[0]
        except UndecodableValueError as exc:
            core.stats.add("corrupt")
            logger.error("removing undecodable value at %s:%s: %s", who.company.label, name, exc)
            corrupt.append(who.company.section(name))
    yield from drop_corrupt(core, corrupt, who.target)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
