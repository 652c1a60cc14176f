"""ctxcache: a client's full dialog context cached in Redis, for every worker to share."""

from ctxcache.client.sync import GENERATION_UNKNOWN, ContextCache, EnsureOutcome, WarmOutcome
from ctxcache.client.vip import VipRegistry
from ctxcache.core.keys import KeyLayout, validate_company_id
from ctxcache.core.phone import mask_phone, normalize_phone
from ctxcache.core.stats import CacheStats
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
    UndecodableValueError,
)
from ctxcache.protocols import ContextLoader, VipSource
from ctxcache.settings import (
    DIALOG_CONTEXT_TTL,
    FULL_CONTEXT_TTL,
    PREFERENCES_TTL,
    CacheSettings,
)

__all__ = [
    "DIALOG_CONTEXT_TTL",
    "FULL_CONTEXT_TTL",
    "GENERATION_UNKNOWN",
    "PREFERENCES_TTL",
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
    "InvalidationFailedError",
    "KeyLayout",
    "UndecodableValueError",
    "VipRegistry",
    "VipSource",
    "WarmOutcome",
    "mask_phone",
    "normalize_phone",
    "validate_company_id",
]
