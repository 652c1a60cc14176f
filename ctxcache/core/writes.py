"""Writing contexts: whole ones split into parts, guarded writes, and partial updates.

A whole context is split by the section layout: the client's part goes
under the client's key, each company section under the company's keys.
Every part is encoded before anything is sent, so bad input raises and
nothing is written. Guarded writes compare generations read before the
load (a lease); partial updates replace one section and void the loads in
flight, so neither ever resurrects what an invalidation removed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ctxcache.core.engine import CacheCore, Identity, Unavailable
from ctxcache.core.keys import validate_company_id
from ctxcache.core.layout import ClientPart
from ctxcache.core.reads import decode_part, drop_corrupt
from ctxcache.core.scripts import (
    INVALIDATE,
    STORE_IF_GENERATION,
    STORE_SECTIONS_IF_GENERATIONS,
    UPDATE_CLIENT_PART,
    UPDATE_COMPANY_SECTION,
)
from ctxcache.core.steps import Command, Flow
from ctxcache.core.wire import KIND_CLIENT, KIND_FULL, KIND_SECTION
from ctxcache.errors import InvalidContextError, UndecodableValueError

__all__ = [
    "GENERATION_UNKNOWN",
    "NOTHING",
    "EncodedContext",
    "current_generation",
    "encode_context",
    "encode_parts",
    "set_context",
    "store_commands",
    "update_client_section",
    "update_company_section",
]

logger = logging.getLogger("ctxcache")

# A generation token that never matches: a guarded write with it is always dropped.
GENERATION_UNKNOWN: Final = "unknown"
# Attempts of a partial update that keeps losing the race to other writers.
_UPDATE_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class EncodedContext:
    """A context split and encoded: the client's part and each company section, as envelopes."""

    client: bytes | None
    sections: dict[str, bytes]
    size: int  # stored bytes in all


def encode_context(
    core: CacheCore, who: Identity, context: Mapping[str, Any], *, load_seconds: float = 0.0
) -> EncodedContext:
    """Split and encode ``context``; raises :class:`InvalidContextError` before any I/O."""
    if not isinstance(context, Mapping):
        raise InvalidContextError(
            f"a context must be a JSON object (a mapping), got {type(context).__name__}"
        )
    part, sections = core.layout.split(context)
    return encode_parts(core, who, part, sections, load_seconds=load_seconds)


def encode_parts(
    core: CacheCore,
    who: Identity,
    part: ClientPart | None,
    sections: Mapping[str, Any],
    *,
    load_seconds: float = 0.0,
) -> EncodedContext:
    """Encode a client's part (if given) and company sections for ``who``'s keys (bound to
    them when encrypting); raises on what JSON cannot hold."""
    codec = core.codec
    encoded: dict[str, bytes] = {}
    size = 0
    for name, value in sections.items():
        data = codec.serialize(value, where=name)
        size += len(data)
        key = who.company.section(name)
        encoded[name] = codec.pack(KIND_SECTION, data, load_seconds=load_seconds, key=key)[0]
    client_value = None
    if part is not None:
        data = codec.serialize(part.data)
        size += len(data)
        client_value = codec.pack(
            KIND_CLIENT,
            data,
            meta=part.meta(),
            load_seconds=load_seconds,
            key=who.client.full_context,
        )[0]
    if size > codec.max_context_bytes:
        codec.refuse_size(size)
    stored = len(client_value or b"") + sum(map(len, encoded.values()))
    return EncodedContext(client_value, encoded, stored)


NOTHING: Final = EncodedContext(None, {}, 0)


def parse_generation(token: str) -> tuple[str, dict[str, str]] | None:
    """The client's and sections' generations in a token of :func:`current_generation`."""
    if token == GENERATION_UNKNOWN:
        return None
    try:
        client, sections = orjson.loads(token)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return (token, {})  # a bare generation: the client's part alone
    if not isinstance(client, str) or not isinstance(sections, dict):
        return None
    return client, {str(k): str(v) for k, v in sections.items()}


def current_generation(core: CacheCore, phone: str, company_id: int | str) -> Flow[str]:
    """An opaque token of the generations of a client's part and company sections."""
    who = core.identify(phone, company_id)
    names = core.layout.company_sections
    commands = [
        Command("GET", (who.client.generation,)),
        Command("HMGET", (who.company.generations, *names)),
    ]
    replies = yield from core.redis("GENERATION", who.target, commands)
    if isinstance(replies, Unavailable):
        return GENERATION_UNKNOWN
    client = _text(replies[0]) if replies[0] is not None else "0"
    sections = {
        n: _text(g) if g is not None else "0" for n, g in zip(names, replies[1], strict=True)
    }
    return orjson.dumps([client, sections]).decode()


def store_commands(
    core: CacheCore,
    who: Identity,
    encoded: EncodedContext,
    ttl_ms: int,  # as written, the stale grace included (CacheCore.stored_ms)
    client_generation: str | None,
    section_generations: Mapping[str, str] | None,
    *,
    client_token: str = "",
    company_token: str = "",
) -> list[Command]:
    """Commands that write ``encoded``; with generations, only what no invalidation voided.

    A lock token releases that lock in the same step, whether or not
    anything could be written.
    """
    commands: list[Command] = []
    if client_generation is None and encoded.client is not None:
        commands.append(Command("SET", (who.client.full_context, encoded.client, "PX", ttl_ms)))
    elif client_generation is not None and (encoded.client is not None or client_token):
        # With nothing to write, "never" matches no generation: the lock is just let go.
        expected = client_generation if encoded.client is not None else "never"
        store = (expected, encoded.client or b"", ttl_ms, client_token)
        commands.append(Command("STORE", store, STORE_IF_GENERATION, who.client.lease))
    if section_generations is None:
        commands.extend(
            Command("SET", (who.company.section(name), value, "PX", ttl_ms))
            for name, value in encoded.sections.items()
        )
    elif encoded.sections or company_token:
        names = tuple(encoded.sections)
        args: list[Any] = [company_token, ttl_ms]
        for name in names:
            args += [name, section_generations.get(name, "never"), encoded.sections[name]]
        keys = (who.company.generations, who.company.lock, *who.company.sections(names))
        commands.append(Command("STORE_SECTIONS", tuple(args), STORE_SECTIONS_IF_GENERATIONS, keys))
    return commands


def set_context(
    core: CacheCore,
    phone: str,
    company_id: int | str,
    context: Mapping[str, Any],
    ttl: float | None,
    generation: str | None,
) -> Flow[bool]:
    """Store a whole context in its parts; ``False`` if not (all) written."""
    who = core.identify(phone, company_id)
    ttl_ms = core.stored_ms(ttl)
    encoded = encode_context(core, who, context)
    sections: Mapping[str, str] | None = None
    client_generation: str | None = None
    if generation is not None:
        parsed = parse_generation(generation)
        if parsed is None:
            core.stats.add("superseded")
            return False
        client_generation, sections = parsed
    commands = store_commands(core, who, encoded, ttl_ms, client_generation, sections)
    replies = yield from core.redis("SET", who.target, commands)
    if isinstance(replies, Unavailable):
        return False
    written = sum(_written(reply) for reply in replies)
    parts = 1 + len(encoded.sections)
    core.stats.add("sets", written)
    if written < parts:
        core.stats.add("superseded", parts - written)
        logger.info("not caching %s in full: invalidated while it was loading", who.target)
        return False
    logger.info("cached %s (%d bytes stored)", who.target, encoded.size)
    return True


def _written(reply: Any) -> int:
    if isinstance(reply, list):
        return sum(int(flag) for flag in reply)
    return 1 if reply is True or reply == b"OK" or reply == 1 else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def update_client_section(
    core: CacheCore, phone: str, company_id: int | str, name: str, value: Any
) -> Flow[bool]:
    """Replace one client section in the cached client part; ``False`` if none is cached.

    Voids the loads in flight either way (they read the database before the
    update), and never recreates a part an invalidation removed.
    """
    who = core.identify(phone, company_id)
    if not isinstance(name, str):
        raise InvalidContextError(f"a section name must be a string, got {type(name).__name__}")
    core.layout.check_client_sections([name], source="update_section")
    section_json = core.codec.serialize(value, where=name)  # bad input raises before any I/O
    ttl = core.settings.generation_ttl
    for _ in range(_UPDATE_ATTEMPTS):
        replies = yield from core.redis(
            "GET", who.target, [Command("GET", (who.client.full_context,))]
        )
        if isinstance(replies, Unavailable):
            return False
        stamp, new_value = b"", b""
        if replies[0] is not None:
            try:
                part, stamp_or_none, kind = decode_part(
                    core, replies[0], KIND_CLIENT, who.client.full_context, remember=False
                )
            except UndecodableValueError as exc:
                core.stats.add("corrupt")
                logger.error("removing undecodable value at %s: %s", who.target, exc)
                yield from drop_corrupt(core, [who.client.full_context], who.target)
                continue
            if kind == KIND_FULL:
                # An older writer's whole context: drop it (the next load splits it).
                drop = Command("INVALIDATE", (ttl,), INVALIDATE, who.client.lease[:2])
                replies = yield from core.redis("INVALIDATE", who.target, [drop])
                return False
            assert isinstance(part, ClientPart)
            stamp = stamp_or_none or b""
            new_value = _replace_section(core, who, part, name, section_json)
        command = Command(
            "UPDATE_CLIENT_PART", (stamp, new_value, ttl), UPDATE_CLIENT_PART, who.client.lease[:2]
        )
        replies = yield from core.redis("UPDATE", who.target, [command])
        if isinstance(replies, Unavailable):
            return False
        status = int(replies[0][0])
        if status == -1:
            continue  # another writer changed it since we read it: read again
        if status == 1:
            core.stats.add("updates")
            logger.info("updated section %s of %s", name, who.target)
        return status == 1
    logger.warning("gave up updating %s: it kept changing", who.target)
    return False


def _replace_section(
    core: CacheCore, who: Identity, part: ClientPart, name: str, section_json: bytes
) -> bytes:
    data = dict(part.data)
    data[name] = orjson.loads(section_json)
    order = part.order if name in part.order else (*part.order, name)
    updated = ClientPart(data=data, company=part.company, order=order)
    payload = core.codec.serialize(updated.data)
    return core.codec.pack(KIND_CLIENT, payload, meta=updated.meta(), key=who.client.full_context)[
        0
    ]


def update_company_section(
    core: CacheCore, company_id: int | str, name: str, value: Any
) -> Flow[bool]:
    """Replace one company section for every client of the company; voids its loads in flight."""
    company = core.keys.company(validate_company_id(company_id))
    (name,) = core.layout.company_names([name])
    data = core.codec.serialize(value, where=name)
    envelope = core.codec.pack(KIND_SECTION, data, key=company.section(name))[0]
    ttl_ms = core.stored_ms(None)
    command = Command(
        "UPDATE_COMPANY_SECTION",
        (name, envelope, ttl_ms, core.settings.generation_ttl),
        UPDATE_COMPANY_SECTION,
        (company.generations, company.section(name)),
    )
    replies = yield from core.redis("UPDATE", company.label, [command])
    if isinstance(replies, Unavailable):
        return False
    core.stats.add("updates")
    logger.info("updated section %s of %s", name, company.label)
    return True
