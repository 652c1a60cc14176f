"""Pluggable parts (the context loader, the VIP source) and their resolution from dotted paths."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ctxcache.errors import ConfigurationError

__all__ = [
    "ContextLoader",
    "LoaderResult",
    "SectionedLoader",
    "VipSource",
    "resolve_callable",
    "resolve_loader",
]


LoaderResult = Mapping[str, Any] | None
"""What a loader returns: a JSON object, or ``None`` for a client the database does not know."""


@runtime_checkable
class ContextLoader(Protocol):
    """Loads a client's full context from the database.

    Called with the normalized E.164 phone and the validated company id.
    Returns a JSON object (a mapping of str keys to JSON values), or ``None``
    for a client the database does not know (nothing is cached then). The
    cache splits the result into the client's part and the company sections.
    :class:`~ctxcache.AsyncContextCache` also takes a coroutine function
    (awaited on the loop); a plain function runs in a thread there.
    """

    def __call__(
        self, phone: str, company_id: int, /
    ) -> LoaderResult | Awaitable[LoaderResult]: ...


@runtime_checkable
class SectionedLoader(Protocol):
    """Loads a context in its parts, so that a miss loads only what is missing.

    A new client of a company whose sections are cached then costs only
    :meth:`load_client`. Either kind of loader may be passed where a loader
    is expected; the cache tells them apart by these two methods.
    """

    def load_client(self, phone: str, company_id: int, /) -> Mapping[str, Any] | None:
        """The client-scope sections of a client (no company section), or ``None`` if unknown."""
        ...

    def load_company_sections(
        self, company_id: int, sections: Sequence[str], /
    ) -> Mapping[str, Any] | Awaitable[Mapping[str, Any]]:
        """Each of the named company sections (a company that lacks one returns it empty)."""
        ...


@runtime_checkable
class VipSource(Protocol):
    """Returns the (phone, company_id) pairs of the VIP clients to warm up."""

    def __call__(self) -> Iterable[tuple[str, int]]: ...


def resolve_loader(path: str, *, variable: str = "CTXCACHE_LOADER") -> Any:
    """Import a loader: a function, or an object with the :class:`SectionedLoader` methods."""
    return resolve_callable(path, variable=variable, accept=_is_sectioned)


def _is_sectioned(target: object) -> bool:
    return isinstance(target, SectionedLoader)


def resolve_callable(
    path: str, *, variable: str, accept: Callable[[object], bool] | None = None
) -> Any:
    """Import ``package.module:function`` (or ``package.module.function``).

    A wrong path raises :class:`ConfigurationError` naming ``variable``, so a
    worker fails at start instead of at its first task. ``accept`` admits
    targets that are not callable (a sectioned loader object).
    """
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"{variable}={path!r} must look like 'package.module:function'", variable=variable
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{variable}={path!r}: cannot import {module_name!r}: {exc}", variable=variable
        ) from exc
    target = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(
                f"{variable}={path!r}: {module_name!r} has no attribute {attribute!r}",
                variable=variable,
            ) from None
    if not callable(target) and not (accept is not None and accept(target)):
        raise ConfigurationError(f"{variable}={path!r} is not callable", variable=variable)
    return target
