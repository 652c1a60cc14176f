"""The public methods of both cache clients, written once.

Each method returns a flow of the I/O-free core. The :class:`api` descriptor
runs it with the client it is looked up on: :class:`~ctxcache.ContextCache`
returns the result, :class:`~ctxcache.AsyncContextCache` a coroutine. Type
checkers see both signatures exactly (the descriptor's ``__get__`` is
overloaded on the client's type), and nothing is copied between the sync and
the async client.
"""

from __future__ import annotations

import functools
import time
import types
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Self,
    TypedDict,
    TypeVar,
    Unpack,
    overload,
)

from redis import exceptions as redis_errors

from ctxcache.client.connection import is_cluster
from ctxcache.core import invalidation, loads, reads, records, refresh, writes
from ctxcache.core.engine import CacheCore, Identity, Unavailable
from ctxcache.core.invalidation import EnsureOutcome, Invalidation
from ctxcache.core.keys import ClientKeys
from ctxcache.core.layout import SectionLayout
from ctxcache.core.loads import Loader
from ctxcache.core.refresh import WarmOutcome
from ctxcache.core.stats import CacheStats
from ctxcache.core.steps import Command, Flow, RoundTrip
from ctxcache.core.wire import JsonDefault
from ctxcache.protocols import SectionedLoader
from ctxcache.settings import CacheSettings

if TYPE_CHECKING:
    from ctxcache.client.aio import AsyncContextCache
    from ctxcache.client.sync import ContextCache

__all__ = ["CacheMethods", "CoreOptions", "api"]

P = ParamSpec("P")
T = TypeVar("T")


class api(Generic[P, T]):
    """Turns a method returning a flow into one that runs it on the client's I/O."""

    def __init__(self, method: Callable[Concatenate[Any, P], Flow[T]]) -> None:
        self.method = method
        self.__doc__ = method.__doc__
        self.__name__ = method.__name__
        self.__wrapped__ = method

        # ``run`` is a plain method of the sync client and a coroutine function
        # of the asyncio one: the same line returns a result or a coroutine.
        # Built once: binding it per call is cheap, wrapping it per call was not.
        @functools.wraps(method)
        def call(client: Any, *args: Any, **kwargs: Any) -> Any:
            return client.run(_deferred(method, client, args, kwargs))

        self._call = call

    @overload
    def __get__(self, client: None, owner: type[Any]) -> api[P, T]: ...

    @overload
    def __get__(self, client: ContextCache, owner: type[Any]) -> Callable[P, T]: ...

    @overload
    def __get__(
        self, client: AsyncContextCache, owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, client: Any, owner: type[Any]) -> Any:
        if client is None:
            return self
        return types.MethodType(self._call, client)


def _deferred(
    method: Callable[..., Flow[T]], client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Flow[T]:
    """The method's flow, made when first advanced: bad input raises where the call is run
    (on ``await`` for the asyncio client), never while a coroutine is being created."""
    return (yield from method(client, *args, **kwargs))


class CoreOptions(TypedDict, total=False):
    """The core's options that both clients take as keywords.

    ``clock`` is injected by tests; ``layout`` and ``json_default`` override
    ``CTXCACHE_COMPANY_SECTIONS`` and ``CTXCACHE_JSON_DEFAULT``.
    """

    clock: Callable[[], float]
    layout: SectionLayout | None
    json_default: JsonDefault | None


class CacheMethods:
    """What both clients offer; a subclass supplies ``run`` (and the I/O behind it).

    It also holds what both set up alike: the core (settings, layouts, codec,
    breaker, counters) and the constructors from the settings or a URL, which
    build the subclass's kind of redis-py client with its ``_connect``.
    """

    @staticmethod
    def _connect(settings: CacheSettings) -> Any:
        """The subclass's redis-py client for ``settings``."""
        raise NotImplementedError

    def __init__(
        self,
        client: Any,
        settings: CacheSettings | None = None,
        **options: Unpack[CoreOptions],
    ) -> None:
        self.settings = settings if settings is not None else CacheSettings.load()
        self.client = client
        self.core = CacheCore(
            self.settings,
            clock=options.get("clock", time.monotonic),
            layout=options.get("layout"),
            json_default=options.get("json_default"),
        )
        self.core.cluster = is_cluster(client)  # a Cluster waits for replicas slot by slot
        self.keys = self.core.keys
        self.codec = self.core.codec
        self.breaker = self.core.breaker

    @classmethod
    def from_settings(cls, settings: CacheSettings | None = None, **kwargs: Any) -> Self:
        """A cache configured from ``CTXCACHE_*`` environment variables (or ``settings``)."""
        settings = settings if settings is not None else CacheSettings.load()
        return cls(cls._connect(settings), settings, **kwargs)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """A cache on ``url``; other settings come from the environment."""
        settings = CacheSettings.load(redis_url=url)
        return cls(cls._connect(settings), settings, **kwargs)

    # -- the spec's API -----------------------------------------------------------------

    @api
    def get_cached_full_context(
        self, phone: str, company_id: int | str
    ) -> Flow[dict[str, Any] | None]:
        """The cached context, or ``None`` on a miss, a corrupt value or a Redis failure.

        The client's part and its company's sections, merged into the dict
        that was stored (or loaded), in its key order. A hit needs every part
        it was stored with: if any is missing the read is a miss.

        The dict and the client's sections are the caller's own; the company
        sections are shared and read-only (``ReadOnlySectionError``;
        ``ctxcache.thaw`` gives a private copy) unless ``CTXCACHE_L1_MODE=copy``.
        """
        return reads.get_context(self.core, phone, company_id)

    @api
    def set_cached_full_context(
        self,
        phone: str,
        company_id: int | str,
        context: Mapping[str, Any],
        ttl: float | None = None,
        *,
        generation: str | None = None,
    ) -> Flow[bool]:
        """Store ``context`` for ``ttl`` seconds (default 12 h); ``False`` if not written.

        Its company sections are stored once for the company (shared by its
        clients), the rest as the client's part. With ``generation`` (from
        :meth:`current_generation`, read before the context was loaded) a part
        invalidated since is not written. Bad input raises before anything is
        written: a context that is not a JSON object, a value JSON cannot hold
        (the error names its path, such as ``services[3].price``), NaN or
        infinity, or more than ``CTXCACHE_MAX_CONTEXT_BYTES`` of JSON.
        """
        return writes.set_context(self.core, phone, company_id, context, ttl, generation)

    @api
    def invalidate_cached_context(self, phone: str, company_id: int | str) -> Flow[bool]:
        """Delete the client's part and void its loads in flight; ``False`` on failure.

        Company sections are left alone: see :meth:`invalidate_company`.
        """
        return _succeeded(self._invalidate(phone, company_id, ()))

    @api
    def load_full_context(
        self, phone: str, company_id: int | str, loader: Loader
    ) -> Flow[dict[str, Any] | None]:
        """The spec's "load context": the cache, else ``loader`` once across all callers.

        Only the missing parts are loaded. ``loader`` is a function
        ``(phone, company_id) -> dict`` (its result is split), or a
        :class:`~ctxcache.SectionedLoader` that loads the client's part and
        named company sections apart. Concurrent callers that miss the same
        part wait (at most ``lock_wait`` seconds) for the one that holds its
        load lock, then read its result; if it dies they load themselves. A
        result loaded while it was invalidated is returned but not cached; so
        is one JSON cannot hold (logged, counted as ``uncacheable``). A loader
        that returns ``None`` (unknown client) gives ``None``, caching
        nothing. Loader errors propagate. What the caller may change: as for
        :meth:`get_cached_full_context`.
        """
        return loads.load_context(self.core, phone, company_id, loader, refresh.early_refresh)

    # -- company sections and partial updates -----------------------------------------

    @api
    def invalidate_company(
        self, company_id: int | str, sections: Iterable[str] | None = None
    ) -> Flow[bool]:
        """Delete company sections (``None``: all of them) for every client; voids their loads."""
        return _succeeded(self._invalidate_company(company_id, sections))

    @api
    def update_section(
        self, phone: str, company_id: int | str, name: str, value: Any
    ) -> Flow[bool]:
        """Replace one client section of a cached context, nothing else reloaded.

        ``False`` if the client's part is not cached (nothing to update). Loads
        in flight are voided either way, and an invalidated part is never
        recreated. A company section raises :class:`~ctxcache.SectionScopeError`.
        """
        return writes.update_client_section(self.core, phone, company_id, name, value)

    @api
    def update_company_section(self, company_id: int | str, name: str, value: Any) -> Flow[bool]:
        """Replace one company section for all the company's clients; voids its loads in flight.

        A name that is not a company section raises :class:`~ctxcache.SectionScopeError`.
        """
        return writes.update_company_section(self.core, company_id, name, value)

    # -- generations and the invalidation safety net ----------------------------------

    @api
    def current_generation(self, phone: str, company_id: int | str) -> Flow[str]:
        """An opaque token for a guarded :meth:`set_cached_full_context`; read it before loading.

        :data:`~ctxcache.GENERATION_UNKNOWN` (which no write matches) when
        Redis cannot be read.
        """
        return writes.current_generation(self.core, phone, company_id)

    @api
    def apply_invalidation(self, phone: str, company_id: int | str) -> Flow[int | None]:
        """Invalidate the client's part; the generation it produced, ``None`` if not taken.

        Hand it to :meth:`ensure_invalidated` later to check the invalidation
        was not undone meanwhile (a failover, a restore).
        """
        done = yield from self._invalidate(phone, company_id, ())
        return None if done is None else done.client

    @api
    def apply_booking_invalidation(
        self, phone: str, company_id: int | str
    ) -> Flow[Invalidation | None]:
        """What a booking changes: the client's part and the availability sections, at once.

        The sections are ``CTXCACHE_BOOKING_SECTIONS`` (``staffSchedules``,
        ``businessStats``). Returns the generations produced, for
        :meth:`confirm_invalidation`; ``None`` if Redis did not take it.
        """
        return self._invalidate(phone, company_id, self.core.layout.booking_sections)

    @api
    def apply_company_invalidation(
        self, company_id: int | str, sections: Iterable[str] | None = None
    ) -> Flow[Invalidation | None]:
        """Invalidate company sections (``None``: all); the generations produced, or ``None``."""
        return self._invalidate_company(company_id, sections)

    @api
    def ensure_invalidated(
        self, phone: str, company_id: int | str, generation: int | None
    ) -> Flow[EnsureOutcome]:
        """Make sure the client-part invalidation that produced ``generation`` still holds.

        A no-op while the generation is at or past it (a context loaded since
        is kept); if it is behind or gone the invalidation was undone and is
        applied again. ``None``: apply it unconditionally.
        """
        who = self.core.identify(phone, company_id)
        return invalidation.ensure_invalidated(self.core, who, generation, {})

    @api
    def confirm_invalidation(
        self,
        company_id: int | str,
        done: Invalidation | Mapping[str, Any] | None,
        *,
        phone: str | None = None,
        sections: Iterable[str] = (),
    ) -> Flow[EnsureOutcome]:
        """The safety net of an :class:`~ctxcache.Invalidation` (or its :meth:`as_dict`).

        Re-applies each part that was undone; with ``done`` ``None`` (the
        inline invalidation failed) it invalidates the client's part (with
        ``phone``) and ``sections`` unconditionally.
        """
        core = self.core
        if isinstance(done, Mapping):
            done = Invalidation(done.get("client"), dict(done.get("sections") or {}))
        names = core.layout.company_names(tuple(sections)) if sections else ()
        known = done.sections if done is not None else {}
        wanted: dict[str, int | None] = {name: None for name in names}
        wanted.update(
            {name: int(gen) for name, gen in known.items() if core.layout.is_company(name)}
        )
        if phone is None:
            who = core.identify_company(company_id)
            return invalidation.ensure_invalidated(core, who, False, wanted)
        generation = done.client if done is not None else None
        who = core.identify(phone, company_id)
        return invalidation.ensure_invalidated(core, who, generation, wanted)

    # -- warm-up ------------------------------------------------------------------------

    @api
    def warm_full_context(
        self,
        phone: str,
        company_id: int | str,
        loader: Loader,
        refresh_threshold: float | None = None,
    ) -> Flow[WarmOutcome]:
        """Load and cache the parts with less than ``refresh_threshold`` s to live.

        Writes through the same generation guards as :meth:`load_full_context`,
        so an invalidation during the warm-up wins.
        """
        who = self.core.identify(phone, company_id)
        return refresh.warm_context(self.core, who, loader, refresh_threshold, client=True)

    @api
    def warm_company(
        self, company_id: int | str, loader: Loader, refresh_threshold: float | None = None
    ) -> Flow[WarmOutcome]:
        """Load and cache a company's sections once, for all its clients (sectioned loaders)."""
        if not isinstance(loader, SectionedLoader):
            raise TypeError("warm_company needs a SectionedLoader (load_company_sections)")
        who = self.core.identify_company(company_id)
        return refresh.warm_context(self.core, who, loader, refresh_threshold, client=False)

    # -- the neighbouring records -------------------------------------------------------

    @api
    def get_dialog_context(self, phone: str, company_id: int | str) -> Flow[dict[str, Any] | None]:
        """The client's dialog context (30 days), or ``None``; a field not JSON is skipped."""
        return records.get_record(self.core, phone, company_id, "dialog")

    @api
    def update_dialog_context(
        self, phone: str, company_id: int | str, fields: Mapping[str, Any]
    ) -> Flow[bool]:
        """Merge ``fields`` into the dialog context (``None`` deletes a field); invalidates."""
        return records.update_record(self.core, phone, company_id, "dialog", fields)

    @api
    def clear_dialog_context(self, phone: str, company_id: int | str) -> Flow[bool]:
        """Delete the dialog context; invalidates the client's part."""
        return records.update_record(self.core, phone, company_id, "dialog", None, clear=True)

    @api
    def get_client_preferences(
        self, phone: str, company_id: int | str
    ) -> Flow[dict[str, Any] | None]:
        """The client's preferences (1 year), or ``None``; a field that is not JSON is skipped."""
        return records.get_record(self.core, phone, company_id, "preferences")

    @api
    def update_client_preferences(
        self, phone: str, company_id: int | str, fields: Mapping[str, Any]
    ) -> Flow[bool]:
        """Merge ``fields`` into the preferences (``None`` deletes a field); invalidates."""
        return records.update_record(self.core, phone, company_id, "preferences", fields)

    @api
    def clear_client_preferences(self, phone: str, company_id: int | str) -> Flow[bool]:
        """Delete the preferences; invalidates the client's part."""
        return records.update_record(self.core, phone, company_id, "preferences", None, clear=True)

    # -- operations ---------------------------------------------------------------------

    @api
    def flush_stats(self) -> Flow[bool]:
        """Add this process's counts since the last push to the shared stats hash now.

        Otherwise they go at most every ``stats_flush_interval`` seconds, along
        with a cache call. ``False`` if Redis could not be used: they are kept.
        """
        return self.core.flush_stats()

    @api
    def describe_cached_context(
        self, phone: str, company_id: int | str
    ) -> Flow[reads.ContextReport | None]:
        """Each part of a client's cached context: found or not, sizes, TTL, age (for operators).

        Reads only; ``None`` if Redis could not be used.
        """
        return _available(reads.describe_context(self.core, phone, company_id))

    @api
    def ping(self) -> Flow[bool]:
        """Whether Redis answers (bypassing the circuit breaker)."""
        return _ping()

    def stats(self) -> CacheStats:
        """This process's counters: hits, misses, hit rate, errors, loads, average load time."""
        return self.core.stats.snapshot()

    def identify(self, phone: str, company_id: int | str) -> tuple[str, int]:
        """The normalized phone and validated company id; raises on bad input."""
        who = self.core.identify(phone, company_id)
        assert who.phone is not None
        return who.phone, who.company_id

    def client_keys(self, phone: str, company_id: int | str) -> ClientKeys:
        """Validate the identity and return the client's keys; raises on bad input."""
        return self.core.identify(phone, company_id).client

    def _invalidate(
        self, phone: str, company_id: int | str, sections: tuple[str, ...]
    ) -> Flow[Invalidation | None]:
        who: Identity = self.core.identify(phone, company_id)
        return invalidation.apply_invalidation(self.core, who, client=True, sections=sections)

    def _invalidate_company(
        self, company_id: int | str, sections: Iterable[str] | None
    ) -> Flow[Invalidation | None]:
        who = self.core.identify_company(company_id)
        names = self.core.layout.company_names(sections)
        return invalidation.apply_invalidation(self.core, who, client=False, sections=names)


def _succeeded(flow: Flow[Invalidation | None]) -> Flow[bool]:
    return (yield from flow) is not None


def _available(flow: Flow[T | Unavailable]) -> Flow[T | None]:
    result = yield from flow
    return None if isinstance(result, Unavailable) else result


def _ping() -> Flow[bool]:
    try:
        replies = yield RoundTrip((Command("PING"),), "PING", "server")
    except redis_errors.RedisError:
        return False
    return bool(replies[0]) and not isinstance(replies[0], Exception)
