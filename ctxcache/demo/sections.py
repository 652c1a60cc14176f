"""The story's chapters about company sections (issue 9).

A booked slot disappears for every client of the company at once; a new
client of a company whose sections are cached loads only its own part; and
the company's clients take a fraction of the memory the old layout (every
client carrying its own copy of the company's data) would.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson
import redis
import zstandard

from ctxcache import sample_salon as salon
from ctxcache.core.phone import mask_phone
from ctxcache.core.wire import MAGIC
from ctxcache.demo.common import NAMESPACE, DemoError, LoaderCall, ms, table, timed

if TYPE_CHECKING:
    from ctxcache.demo.story import Story

__all__ = ["booking_for_two_clients", "company_clients", "fetched", "old_layout_blob"]

# The envelope of ctxcache 0.1: a whole context as one value (version 1, zstd).
_OLD_HEADER: Final = MAGIC + bytes((1, 1))
COMPANY_CLIENTS_LIMIT: Final = 1000  # the clients of one company the memory table covers
PROJECTED_CLIENTS: Final = 10_000  # the figure: 10,000 clients of one company


def fetched(calls: Sequence[LoaderCall]) -> str:
    """What a load fetched from the database, in words."""
    own = any(call.part == "client" for call in calls)
    names = [name for call in calls if call.part == "company" for name in call.sections]
    company = f"the company's {', '.join(names)}" if 0 < len(names) < 3 else ""
    company = company or (f"the company's {len(names)} sections" if names else "")
    if own and company:
        return f"its own part and {company}"
    return "its own part" if own else company or "nothing"


def first_offered_slot(context: dict[str, Any]) -> tuple[int, str]:
    """The first free slot a context offers: (staff id, start)."""
    for day in context.get("staffSchedules") or ():
        if day["slots"]:
            return day["staff_id"], day["slots"][0]
    raise DemoError("the context offers no free slot to book")


def offers(context: dict[str, Any], slot: tuple[int, str]) -> bool:
    staff_id, start = slot
    days = context.get("staffSchedules") or ()
    return any(day["staff_id"] == staff_id and start in day["slots"] for day in days)


def booking_for_two_clients(story: Story, before: dict[str, Any]) -> None:
    """A books the slot B was offered; after the hook, neither is offered it any more."""
    say, cache, company, other = story.say, story.cache, story.company, story.other
    b = mask_phone(other)
    story.console.rule("3. A booking: A takes the slot B is offered, and B stops being offered it")
    b_context, kind, seconds = story.load(other)
    got = fetched(story.loader.take())
    say(f"B's first load: {kind}, {got} from the database in {ms(seconds)}")
    slot = first_offered_slot(b_context)
    staff_id, start = slot
    say(f"B is offered {start} with staff #{staff_id}, its first free slot")
    booking_id = salon.create_booking(
        story.db, story.phone, company, staff_id=staff_id, start=start
    )
    say(f"created booking #{booking_id} in the database: A took that slot")
    stale = cache.get_cached_full_context(other, company)
    if stale is not None and offers(stale, slot):
        story.note("B's cached context still offers it: the cache has not been told yet")
    route, seconds = story.invalidate()
    say(f"booking_created hook: invalidation {route}; key gone {ms(seconds)} later")
    names = ", ".join(cache.core.layout.booking_sections)
    say(f"the same call invalidated the company's availability ({names}) for all its clients")

    context, kind, load_seconds = story.load()
    got = fetched(story.loader.take())
    say(f"next load: {kind}, from the database in {ms(load_seconds)} ({got})")
    old = [item["booking_id"] for item in (before["client"] or {}).get("upcomingBookings", [])]
    upcoming = (context["client"] or {}).get("upcomingBookings", [])
    new = next((item for item in upcoming if item["booking_id"] == booking_id), None)
    if new is None or booking_id in old:
        raise DemoError(f"booking #{booking_id} is not new in the reloaded context")
    say(
        f"client.upcomingBookings now lists booking #{booking_id}: {new['start']},"
        f" «{new['service_title']}» with {new['staff_name']}, {new['cost']} ₽"
        f" ({len(upcoming)} upcoming, {len(old)} before)"
    )

    b_context, kind, seconds = story.load(other)
    got = fetched(story.loader.take())
    if offers(b_context, slot):
        raise DemoError(f"B ({b}) is still offered {start} with staff #{staff_id}, booked by A")
    if b_context != story.loader(other, company):
        raise DemoError(f"B's ({b}) context differs from the database's")
    how = kind if got == "nothing" else f"{kind}, {got} from the database,"
    say(
        f"B's next load: {how} in {ms(seconds)}: no longer offers {start} with staff"
        f" #{staff_id}; the same context as the database's"
    )
    if got == "nothing":
        story.note("a hit: A's load fetched the company's fresh availability, for all its clients")


def company_clients(story: Story) -> None:
    """New clients of a cached company load their own part; what the company's clients take."""
    say, cache, company = story.say, story.cache, story.company
    story.console.rule("5. The company's clients: their own parts, and the memory they take")
    phones = salon.sample_clients(story.db, company, COMPANY_CLIENTS_LIMIT)
    keys = [cache.client_keys(phone, company).full_context for phone in phones]
    new = [phone for phone, key in zip(phones, keys, strict=True) if not cache.client.exists(key)]
    if len(new) <= story.runs:
        raise DemoError(f"the sample database has too few clients of {company} for this step")
    whole: list[tuple[float, float]] = []  # (database seconds, load_full_context seconds)
    own: list[tuple[float, float]] = []
    with story.progress() as bar:
        task = bar.add_task(f"loading the company's {len(new)} uncached clients", total=len(new))
        for index, phone in enumerate(new):
            cold = index < story.runs  # the first few with the company's sections dropped
            if cold:
                cache.invalidate_company(company)
            _, seconds = timed(
                functools.partial(cache.load_full_context, phone, company, story.loader)
            )
            calls = story.loader.take()
            parts = sorted(call.part for call in calls)
            if parts != (["client", "company"] if cold else ["client"]):
                raise DemoError(f"a load of {mask_phone(phone)} fetched {fetched(calls)}")
            (whole if cold else own).append((sum(call.seconds for call in calls), seconds))
            bar.advance(task)
    rows = table("a client not cached yet", "clients", "database", "load_full_context")
    for label, samples in (
        ("whole context, company cold", whole),
        ("own part, company cached", own),
    ):
        database, total = (statistics.median(column) for column in zip(*samples, strict=True))
        rows.add_row(label, str(len(samples)), ms(database), ms(total))
    say(rows)
    saved = statistics.median(s for s, _ in whole) / statistics.median(s for s, _ in own)
    say(
        f"new clients of a cached company: load_company_sections was not called for any of the"
        f" {len(own)}; {saved:.0f}x less database time than a whole load (medians)"
    )
    _memory(story, phones, keys)


def old_layout_blob(context: dict[str, Any], compressor: zstandard.ZstdCompressor) -> bytes:
    """``context`` as ctxcache 0.1 stored it: one zstd (level 1) envelope of its JSON."""
    return _OLD_HEADER + compressor.compress(orjson.dumps(context))


def _memory(story: Story, phones: list[str], keys: list[str]) -> None:
    cache, company, client = story.cache, story.company, story.cache.client
    layout = cache.core.layout
    section_keys = cache.keys.company(company).sections(layout.company_sections)
    compressor = zstandard.ZstdCompressor(level=1)
    blobs: list[int] = []  # the old layout's value sizes
    real = not story.backend.embedded
    old_memory = 0
    for phone in phones:  # one context at a time: the whole set would take a lot of RAM
        context = cache.load_full_context(phone, company, story.loader)
        if context is None:
            raise DemoError(f"the sample database does not know {mask_phone(phone)}")
        blob = old_layout_blob(context, compressor)
        blobs.append(len(blob))
        if real:  # measured in Redis, in the demo's namespace, deleted at once
            key = f"{NAMESPACE}old-layout:{company}:{phone}"  # as long as the real one
            old_memory += _memory_of_value(client, key, blob)
    if story.loader.take():
        raise DemoError("the company's clients were not all cached")
    if real:
        parts = _memory_usage(client, keys)
        shared = sum(_memory_usage(client, section_keys))
        unit = "Redis memory (MEMORY USAGE)"
    else:  # fakeredis has no MEMORY USAGE: compare the bytes stored
        parts = [int(client.strlen(key)) for key in keys]
        shared = sum(int(client.strlen(key)) for key in section_keys)
        old_memory = sum(blobs)
        unit = "bytes stored"
    count, new_memory = len(phones), sum(parts) + shared
    rows = table("layout", "keys", unit, "per client")
    sections = f"{count} + {len(section_keys)}"
    rows.add_row("by section (now)", sections, _size(new_memory), _size(new_memory / count))
    rows.add_row(
        "one blob per client (0.1)", str(count), _size(old_memory), _size(old_memory / count)
    )
    story.say(rows)
    projected_new = shared + PROJECTED_CLIENTS * statistics.fmean(parts)
    projected_old = PROJECTED_CLIENTS * old_memory / count
    story.say(
        f"memory: the company's {count} clients take {_size(new_memory)}, against"
        f" {_size(old_memory)} in the old layout ({old_memory / new_memory:.1f}x less);"
        f" {PROJECTED_CLIENTS:,} such clients: {_size(projected_new)} against"
        f" {_size(projected_old)}"
    )
    story.note(
        f"by section: {count} client parts and the company's {len(section_keys)} sections,"
        " stored once. Old layout: each client's whole context encoded as ctxcache 0.1 stored"
        " it, one zstd (level 1) envelope of its JSON"
        + (", written under the demo's namespace to measure it, then deleted" if real else "")
        + ("" if real else "; with a real Redis the table shows MEMORY USAGE")
    )


def _memory_usage(client: redis.Redis, keys: Iterable[str]) -> list[int]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return [int(used or 0) for used in pipe.execute()]


def _memory_of_value(client: redis.Redis, key: str, value: bytes) -> int:
    """What Redis takes to hold ``value`` under ``key`` (set, measured, deleted)."""
    pipe = client.pipeline(transaction=True)
    pipe.set(key, value, px=60_000)  # gone by itself should the demo die here
    pipe.memory_usage(key, samples=0)
    pipe.delete(key)
    return int(pipe.execute()[1] or 0)


def _size(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:,.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{count:,.0f} B"
