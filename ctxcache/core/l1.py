"""The in-process cache (L1): decoded parts, kept correct by one stamp check per read.

Every part a process reads is kept here with the 8-byte stamp its envelope
carries (a new one for every write). A read sends the stamps it holds
along with its single round trip; Redis answers "unchanged" instead of the
value when the stamp at offset 8 still matches. So a hit from L1 costs one
round trip of a few bytes and no decoding, and it can never return a part
older than a write or invalidation that completed before the read began:
every use is checked against Redis, and when Redis cannot be reached
nothing is served from here.

Three modes decide what callers get:

- ``shared-company`` (the default): company sections are decoded once into
  read-only dicts and lists shared by every caller (changing one raises
  :class:`ReadOnlySectionError`; :func:`thaw` gives a private copy); the
  client's own sections are private copies, as in ``copy``.
- ``copy``: each read decodes the part's JSON anew, so every caller has
  private objects it may change at any depth (a repeated hit of the 300 KB
  sample context costs ~3x the default's, for the decoding).
- ``shared``: every section is shared and read-only.

The top-level dict is always the caller's own, so ``{**context, "startTime": t}``
and ``context["startTime"] = t`` work in every mode.

The store is a byte-bounded LRU (the JSON size of each part), thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn

import orjson

from ctxcache.errors import CtxCacheError

__all__ = [
    "L1_MODES",
    "FrozenDict",
    "FrozenList",
    "L1Cache",
    "L1Entry",
    "ReadOnlySectionError",
    "freeze",
    "thaw",
]

L1Mode = Literal["copy", "shared-company", "shared"]
L1_MODES: Final = ("copy", "shared-company", "shared")
# The part kinds (ctxcache.core.wire) each mode shares read-only.
_SHARED_KINDS: Final = {"copy": (), "shared-company": ("section",), "shared": ("section", "client")}


class ReadOnlySectionError(CtxCacheError, TypeError):
    """A shared, read-only section of a cached context was changed.

    With ``CTXCACHE_L1_MODE=shared`` (or ``shared-company``) sections are
    shared by every caller of the process; take a private copy with
    :func:`ctxcache.thaw` first.
    """


def _refuse(*_: Any, **__: Any) -> NoReturn:
    raise ReadOnlySectionError(
        "this section of a cached context is shared and read-only "
        "(CTXCACHE_L1_MODE): use ctxcache.thaw(value) for a private copy"
    )


class FrozenDict(dict[str, Any]):
    """A dict that refuses changes; JSON encoders see a plain dict."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return dict, (dict(self),)  # a pickled or deep-copied one is an ordinary dict

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __copy__(self) -> dict[str, Any]:
        return dict(self)


class FrozenList(list[Any]):
    """A list that refuses changes; JSON encoders see a plain list."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        return list, (list(self),)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __copy__(self) -> list[Any]:
        return list(self)


def freeze(value: Any) -> Any:
    """``value`` (decoded JSON) with every dict and list made read-only, at any depth."""
    if isinstance(value, dict):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return FrozenList([freeze(item) for item in value])
    return value


def thaw(value: Any) -> Any:
    """A private, changeable deep copy of a (possibly read-only) JSON value."""
    return orjson.loads(orjson.dumps(value))


@dataclass(frozen=True, slots=True)
class L1Entry:
    """One part as this process last read it."""

    stamp: bytes
    data: bytes  # the part's JSON
    shared: Any  # the decoded, read-only value when shared; None when copied
    meta: dict[str, Any]  # a client part's section lists
    load_seconds: float
    size: int

    def value(self) -> Any:
        """What a caller gets: a fresh decoding, or the shared read-only value."""
        return self.shared if self.shared is not None else orjson.loads(self.data)


class L1Cache:
    """A byte-bounded LRU of :class:`L1Entry` by Redis key; ``max_bytes`` 0 disables it."""

    def __init__(
        self,
        max_bytes: int,
        mode: L1Mode = "shared-company",
        *,
        count: Callable[[str, float], None] | None = None,
    ) -> None:
        """``count(name, amount)`` gets ``l1_bytes`` changes and ``l1_evictions``."""
        if mode not in L1_MODES:
            raise ValueError(f"unknown L1 mode {mode!r}; use one of {', '.join(L1_MODES)}")
        self.max_bytes = max_bytes
        self.mode = mode
        self._shared_kinds = _SHARED_KINDS[mode]
        self._entries: OrderedDict[str, L1Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._count = count or (lambda name, amount: None)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def size(self) -> int:
        """Bytes of JSON held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> L1Entry | None:
        """The entry for ``key`` (made the most recent), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def make(
        self,
        kind: str,
        stamp: bytes,
        data: bytes,
        decoded: Any,
        meta: dict[str, Any],
        load_seconds: float,
    ) -> L1Entry:
        """An entry for a part just decoded; ``kind`` is ``"client"`` or ``"section"``.

        ``decoded`` is frozen when the mode shares that kind of part.
        """
        shared = freeze(decoded) if self.enabled and kind in self._shared_kinds else None
        return L1Entry(stamp, data, shared, meta, load_seconds, len(data))

    def put(self, key: str, entry: L1Entry) -> int:
        """Keep ``entry``, evicting the least recently used over the bound; returns evictions."""
        if not self.enabled or entry.size > self.max_bytes:
            self.discard(key)
            return 0
        evicted = 0
        with self._lock:
            before = self._bytes
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = entry
            self._bytes += entry.size
            while self._bytes > self.max_bytes:
                _, gone = self._entries.popitem(last=False)
                self._bytes -= gone.size
                evicted += 1
            change = self._bytes - before
        self._count("l1_bytes", change)
        if evicted:
            self._count("l1_evictions", evicted)
        return evicted

    def discard(self, *keys: str) -> None:
        with self._lock:
            before = self._bytes
            for key in keys:
                old = self._entries.pop(key, None)
                if old is not None:
                    self._bytes -= old.size
            change = self._bytes - before
        if change:
            self._count("l1_bytes", change)

    def clear(self) -> None:
        self.discard(*list(self._entries))
