"""ctxcache: a client's full dialog context cached in Redis, for every worker to share."""

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

from ctxcache.client.sync import ContextCache
from ctxcache.client.vip import VipRegistry
from ctxcache.core.invalidation import EnsureOutcome, Invalidation
from ctxcache.core.keys import KeyLayout, validate_company_id
from ctxcache.core.l1 import ReadOnlySectionError, thaw
from ctxcache.core.layout import SectionLayout
from ctxcache.core.phone import mask_phone, normalize_phone
from ctxcache.core.refresh import WarmOutcome
from ctxcache.core.stats import CacheStats
from ctxcache.core.writes import GENERATION_UNKNOWN
from ctxcache.errors import (
    CacheUnavailableError,
    ConfigurationError,
    ContextTooLargeError,
    CtxCacheError,
    InvalidationFailedError,
    InvalidCompanyIdError,
    InvalidContextError,
    InvalidPhoneError,
    InvalidTTLError,
    SectionScopeError,
    UndecodableValueError,
)
from ctxcache.protocols import ContextLoader, SectionedLoader, VipSource
from ctxcache.settings import (
    DIALOG_CONTEXT_TTL,
    FULL_CONTEXT_TTL,
    PREFERENCES_TTL,
    CacheSettings,
)

if TYPE_CHECKING:
    from ctxcache.client.aio import AsyncContextCache

__all__ = [
    "DIALOG_CONTEXT_TTL",
    "FULL_CONTEXT_TTL",
    "GENERATION_UNKNOWN",
    "PREFERENCES_TTL",
    "AsyncContextCache",
    "CacheSettings",
    "CacheStats",
    "CacheUnavailableError",
    "ConfigurationError",
    "ContextCache",
    "ContextLoader",
    "ContextTooLargeError",
    "CtxCacheError",
    "EnsureOutcome",
    "InvalidCompanyIdError",
    "InvalidContextError",
    "InvalidPhoneError",
    "InvalidTTLError",
    "Invalidation",
    "InvalidationFailedError",
    "KeyLayout",
    "ReadOnlySectionError",
    "SectionLayout",
    "SectionScopeError",
    "SectionedLoader",
    "UndecodableValueError",
    "VipRegistry",
    "VipSource",
    "WarmOutcome",
    "mask_phone",
    "normalize_phone",
    "thaw",
    "validate_company_id",
]


def __getattr__(name: str) -> Any:
    # The asyncio client is imported on first use: sync programs never load it.
    if name == "AsyncContextCache":
        from ctxcache.client.aio import AsyncContextCache

        return AsyncContextCache
    raise AttributeError(f"module 'ctxcache' has no attribute {name!r}")


try:  # the installed distribution's version; reading its metadata is the only work done here
    __version__: str = _metadata.version("ctxcache")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"
