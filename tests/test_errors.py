"""Errors cross process boundaries intact (process pools and Celery pickle them)."""

from __future__ import annotations

import pickle

import pytest

from ctxcache import errors
from ctxcache.core.phone import normalize_phone
from ctxcache.errors import CtxCacheError, InvalidPhoneError


def _every_error() -> list[CtxCacheError]:
    return [
        errors.ConfigurationError("bad", variable="CTXCACHE_REDIS_URL"),
        errors.InvalidUrlError("bad url", variable="CTXCACHE_BROKER_URL"),
        errors.InvalidPhoneError("bad phone", masked="+7******67"),
        errors.InvalidCompanyIdError("bad id", company_id="x"),
        errors.InvalidTTLError("bad ttl"),
        errors.InvalidContextError("bad context", path="services[3].price"),
        errors.ContextTooLargeError("too large", size=10, limit=5),
        errors.CacheUnavailableError("down"),
        errors.MissingKeyError("sealed with key 0a1b2c3d"),
    ]


@pytest.mark.parametrize("error", _every_error(), ids=lambda e: type(e).__name__)
def test_errors_survive_pickling_with_their_fields(error: CtxCacheError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_a_real_invalid_phone_error_survives_pickling() -> None:
    with pytest.raises(InvalidPhoneError) as raised:
        normalize_phone("12")
    copy = pickle.loads(pickle.dumps(raised.value))
    assert copy.masked == raised.value.masked
