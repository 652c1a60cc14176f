"""Invalidating parts of contexts, and the safety net that checks an invalidation still holds.

An invalidation deletes a part and increments its generation, which voids
every load of it in flight (their guarded writes are dropped). It reports
the generations it produced, so that a later check (the queued safety-net
task of the booking hooks) can tell "still in effect" from "undone" (a
failover to a replica that never saw it, a restored backup) and apply it
again only then.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctxcache.core.engine import CacheCore, Identity, Unavailable
from ctxcache.core.replication import wait_commands, waits_acknowledged
from ctxcache.core.scripts import (
    INVALIDATE,
    INVALIDATE_IF_BEHIND,
    INVALIDATE_SECTIONS,
    INVALIDATE_SECTIONS_IF_BEHIND,
)
from ctxcache.core.steps import Command, Flow

__all__ = ["EnsureOutcome", "Invalidation", "apply_invalidation", "ensure_invalidated"]

logger = logging.getLogger("ctxcache")


class EnsureOutcome(enum.Enum):
    """What :meth:`ContextCache.ensure_invalidated` found and did."""

    IN_EFFECT = "in_effect"  # the earlier invalidation still holds: nothing done
    REAPPLIED = "reapplied"  # it had been undone (or none was given): applied now
    UNAVAILABLE = "unavailable"  # Redis could not be used


@dataclass(frozen=True, slots=True)
class Invalidation:
    """The generations an applied invalidation produced, part by part.

    ``client`` is the client's generation (``None`` when the client's part
    was not invalidated), ``sections`` the generation of each company section
    invalidated. JSON-friendly through :meth:`as_dict`, for a task message.
    """

    client: int | None = None
    sections: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"client": self.client, "sections": dict(self.sections)}


def _commands(
    who: Identity,
    client: int | bool | None,
    sections: Mapping[str, int | None],
    ttl: int,
) -> list[Command]:
    """Scripts that invalidate the parts; a known generation makes one conditional.

    ``client`` is ``False`` to leave the client's part alone, ``None`` to
    invalidate it, or the generation an earlier invalidation produced.
    """
    commands: list[Command] = []
    keys: tuple[str, ...]
    company = who.company
    if client is not False:
        keys = (who.client.full_context, who.client.generation)
        if client is None or client is True:
            commands.append(Command("INVALIDATE", (ttl,), INVALIDATE, keys))
        else:
            commands.append(
                Command("INVALIDATE_IF_BEHIND", (ttl, client), INVALIDATE_IF_BEHIND, keys)
            )
    plain = [name for name, generation in sections.items() if generation is None]
    if plain:
        keys = (company.generations, *company.sections(tuple(plain)))
        commands.append(Command("INVALIDATE_SECTIONS", (ttl, *plain), INVALIDATE_SECTIONS, keys))
    known = [(name, gen) for name, gen in sections.items() if gen is not None]
    if known:
        keys = (company.generations, *company.sections(tuple(name for name, _ in known)))
        args = [ttl] + [item for pair in known for item in pair]
        commands.append(
            Command(
                "INVALIDATE_SECTIONS_IF_BEHIND", tuple(args), INVALIDATE_SECTIONS_IF_BEHIND, keys
            )
        )
    return commands


def apply_invalidation(
    core: CacheCore, who: Identity, *, client: bool, sections: tuple[str, ...]
) -> Flow[Invalidation | None]:
    """Invalidate the client's part (if ``client``) and ``sections``, in one round trip."""
    target = who.target
    commands = _commands(who, client, dict.fromkeys(sections), core.settings.generation_ttl)
    replies = yield from _replicated(core, "INVALIDATE", target, commands)
    if replies is None:
        return None
    client_generation = int(replies.pop(0)[1]) if client else None
    generations = dict(zip(sections, map(int, replies[0]), strict=True)) if sections else {}
    _forget(core, who, client, sections)
    core.stats.add("invalidations", int(client) + len(sections))
    logger.info("invalidated %s%s", target, f" sections {', '.join(sections)}" if sections else "")
    return Invalidation(client_generation, generations)


def ensure_invalidated(
    core: CacheCore,
    who: Identity,
    client: int | bool | None,
    sections: Mapping[str, int | None],
) -> Flow[EnsureOutcome]:
    """Re-apply whatever part of an earlier invalidation was undone; a no-op where it holds.

    ``client``: ``False`` skips the client's part; ``None`` (or ``True``)
    invalidates it unconditionally; an int is the generation the earlier
    invalidation produced. ``sections`` maps section names likewise.
    """
    target = who.target
    commands = _commands(who, client, sections, core.settings.generation_ttl)
    replies = yield from _replicated(core, "ENSURE_INVALIDATED", target, commands)
    if replies is None:
        return EnsureOutcome.UNAVAILABLE
    reapplied = 0
    for command, reply in zip(commands, replies, strict=True):
        if command.name == "INVALIDATE":
            reapplied += 1
        elif command.name == "INVALIDATE_IF_BEHIND":
            reapplied += int(reply[0])
        elif command.name == "INVALIDATE_SECTIONS":
            reapplied += len(reply)
        else:
            reapplied += sum(int(flag) for flag in reply[::2])
    if not reapplied:
        logger.debug("invalidation of %s still in effect", target)
        return EnsureOutcome.IN_EFFECT
    _forget(core, who, client is not False, tuple(sections))
    core.stats.add("invalidations", reapplied)
    logger.warning("invalidation of %s had been undone (or was never applied): applied", target)
    return EnsureOutcome.REAPPLIED


def _replicated(
    core: CacheCore, operation: str, target: str, commands: list[Command]
) -> Flow[list[Any] | None]:
    """Run ``commands`` and wait for replicas in the same round trip (see core.replication).

    ``None`` when Redis failed or too few replicas acknowledged in time: the
    invalidation is then not reported done (the primary may have it; applying
    it again is harmless).
    """
    waits = yield from wait_commands(core, commands)
    if waits is None:
        return None
    replies = yield from core.redis(operation, target, [*commands, *waits])
    if isinstance(replies, Unavailable):
        return None
    if waits and not waits_acknowledged(core, waits, replies[len(commands) :]):
        core.stats.add("unacknowledged")
        logger.warning(
            "invalidation of %s not acknowledged by %s replica(s) within %d ms: not done yet",
            target,
            waits[0].args[0],
            core.replicas.timeout_ms,
        )
        return None
    return replies[: len(commands)]


def _forget(core: CacheCore, who: Identity, client: bool, sections: tuple[str, ...]) -> None:
    """Drop invalidated parts from this process's in-process cache (memory, not correctness)."""
    keys = who.company.sections(sections)
    if client:
        keys.append(who.client.full_context)
    core.l1.discard(*keys)
