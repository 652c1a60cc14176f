"""ctxcache: a client's full dialog context cached in Redis, for every worker to share."""

from .cache import GENERATION_UNKNOWN, ContextCache, WarmOutcome
from .errors import (
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
from .keys import KeyLayout, validate_company_id
from .phone import mask_phone, normalize_phone
from .protocols import ContextLoader, VipSource
from .settings import (
    DIALOG_CONTEXT_TTL,
    FULL_CONTEXT_TTL,
    PREFERENCES_TTL,
    CacheSettings,
)
from .stats import CacheStats
from .vip import VipRegistry

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
