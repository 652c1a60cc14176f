"""A client's records beside the context: dialog context (30 days) and preferences (1 year).

Each record is a hash, one JSON value per field. Writing one invalidates the
client's part in the same Lua step (the context holds both), so no reader
sees a new record next to an old context. A field another program wrote
that is not JSON is skipped, counted and removed on its own: one bad field
never costs the whole record.

With encryption each field value is sealed, bound to the record's key and
the field's name. A field that fails to open is skipped and counted but
kept: records are not a cache, and a key missing from this process's list
during a rotation must not destroy what other processes can read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from ctxcache.core.engine import CacheCore, Unavailable
from ctxcache.core.scripts import UPDATE_RECORD
from ctxcache.core.steps import Command, Flow
from ctxcache.errors import InvalidContextError, UndecryptableValueError

__all__ = ["RECORDS", "get_record", "update_record"]

logger = logging.getLogger("ctxcache")

RECORDS = ("dialog", "preferences")


def _record_key(core: CacheCore, phone: str, company_id: int | str, record: str) -> tuple[Any, str]:
    who = core.identify(phone, company_id)
    key = who.client.dialog if record == "dialog" else who.client.preferences
    return who, key


def get_record(
    core: CacheCore, phone: str, company_id: int | str, record: str
) -> Flow[dict[str, Any] | None]:
    """The record's fields, or ``None`` if it is empty, absent, or Redis failed."""
    who, key = _record_key(core, phone, company_id, record)
    replies = yield from core.redis("HGETALL", who.target, [Command("HGETALL", (key,))])
    if isinstance(replies, Unavailable) or not replies[0]:
        return None
    fields: dict[str, Any] = {}
    bad: list[bytes | str] = []
    for name, value in replies[0].items():
        try:
            text = name.decode() if isinstance(name, bytes) else name
            fields[text] = orjson.loads(core.codec.open_field(value, key, text))
        except UndecryptableValueError as exc:
            core.stats.add("undecryptable")
            core.stats.add("corrupt_fields")
            logger.error("skipping a field of the %s of %s: %s", record, who.target, exc)
        except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
            bad.append(name)
            logger.error("skipping undecodable field of the %s of %s: %s", record, who.target, exc)
    if bad:
        core.stats.add("corrupt_fields", len(bad))
        yield from core.redis("HDEL", who.target, [Command("HDEL", (key, *bad))])
    return fields or None


def update_record(
    core: CacheCore,
    phone: str,
    company_id: int | str,
    record: str,
    fields: Mapping[str, Any] | None,
    *,
    clear: bool = False,
) -> Flow[bool]:
    """Merge ``fields`` (``None`` deletes a field), or clear the record first; invalidates.

    Bad input raises before anything is written; ``False`` if Redis failed.
    """
    who, key = _record_key(core, phone, company_id, record)
    if fields is None:
        fields = {}
    if not isinstance(fields, Mapping) or not (fields or clear):
        raise InvalidContextError("fields must be a non-empty mapping of str to JSON values")
    to_set: list[str | bytes] = []
    to_delete: list[str] = []
    size = 0
    for name, value in fields.items():
        if not isinstance(name, str):
            raise InvalidContextError(f"field names must be strings, got {name!r}"[:200])
        if value is None:
            to_delete.append(name)
            continue
        encoded = core.codec.serialize(value, where=name)
        size += len(encoded)
        to_set += [name, core.codec.seal_field(encoded, key, name)]
    if size > core.settings.max_context_bytes:
        core.codec.refuse_size(size)
    ttl = core.settings.dialog_context_ttl if record == "dialog" else core.settings.preferences_ttl
    args = (
        ttl,
        core.settings.generation_ttl,
        "clear" if clear else "merge",
        len(to_set) // 2,
        *to_set,
        *to_delete,
    )
    keys = (key, who.client.full_context, who.client.generation)
    replies = yield from core.redis(
        "UPDATE", who.target, [Command("UPDATE", args, UPDATE_RECORD, keys)]
    )
    if isinstance(replies, Unavailable):
        return False
    core.stats.add("invalidations")
    what = "cleared" if clear and not fields else f"updated {len(fields)} field(s) of"
    logger.info("%s the %s of %s and invalidated its context", what, record, who.target)
    return True
