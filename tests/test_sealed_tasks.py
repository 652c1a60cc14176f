"""Phones in task messages are sealed when the cache has a key (``tasks/sealed.py``).

Unit tests of sealing, then the real thing: the booking hook's message read
back from the real broker carries no phone digits, and a real worker opens
it; one without the key retries instead of losing the invalidation.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import test_celery
from celery import Celery
from conftest import COMPANY, PHONE, free_port, make_settings
from test_encryption import K1, K2
from test_hooks import hooks_using, queued_messages
from worker_support import CeleryProcess, wait_until

from ctxcache import ContextCache, mask_phone
from ctxcache.errors import ConfigurationError, MissingKeyError, UndecryptableValueError
from tasks import INVALIDATE_TASK, InvalidationOutcome, booking_created
from tasks.sealed import SEALED_PREFIX, open_phone, seal_phone

broker = test_celery.broker  # parametrized: both brokers
app = test_celery.app
celery_process = test_celery.celery_process
DIGITS = PHONE.removeprefix("+")


def keyed_cache(url: str | None = None, **settings: object) -> ContextCache:
    values: dict[str, object] = {"encryption_keys": K1, "seal_task_phones": True, **settings}
    if url is not None:
        values["redis_url"] = url
    return ContextCache.from_settings(make_settings(**values))


def test_a_phone_is_sealed_with_a_key_and_opens_only_for_its_company() -> None:
    cache = keyed_cache()
    try:
        sealed = seal_phone(cache, PHONE, COMPANY)
        assert sealed.startswith(SEALED_PREFIX)
        assert DIGITS not in sealed
        assert sealed != seal_phone(cache, PHONE, COMPANY)  # a fresh nonce each time
        assert open_phone(cache, sealed, COMPANY) == PHONE
        with pytest.raises(UndecryptableValueError, match="fails authentication") as raised:
            open_phone(cache, sealed, COMPANY + 1)  # replayed for another company
        assert not isinstance(raised.value, MissingKeyError)  # never opens: not retried
        assert open_phone(cache, PHONE, COMPANY) == PHONE  # a plain one from an older sender
        with pytest.raises(UndecryptableValueError, match="base64"):
            open_phone(cache, SEALED_PREFIX + "%%%", COMPANY)
    finally:
        cache.close()


def test_the_phone_goes_plain_unless_sealing_is_on_and_a_missing_key_is_named() -> None:
    keyed, plain = keyed_cache(), ContextCache.from_settings(make_settings())
    rotated = keyed_cache(encryption_keys=K2)
    not_yet = keyed_cache(seal_task_phones=False)  # keys, but old workers may still run
    try:
        assert seal_phone(plain, PHONE, COMPANY) == PHONE
        assert seal_phone(not_yet, PHONE, COMPANY) == PHONE
        sealed = seal_phone(keyed, PHONE, COMPANY)
        assert open_phone(not_yet, sealed, COMPANY) == PHONE  # workers open it regardless
        with pytest.raises(MissingKeyError, match="no CTXCACHE_ENCRYPTION_KEYS"):
            open_phone(plain, sealed, COMPANY)
        with pytest.raises(MissingKeyError, match="not in CTXCACHE_ENCRYPTION_KEYS"):
            open_phone(rotated, sealed, COMPANY)
    finally:
        for cache in (keyed, plain, rotated, not_yet):
            cache.close()


def test_sealing_needs_a_key() -> None:
    with pytest.raises(ConfigurationError, match="CTXCACHE_SEAL_TASK_PHONES"):
        make_settings(seal_task_phones=True)


def test_a_key_secret_alone_seals_too() -> None:
    cache = ContextCache.from_settings(make_settings(key_secret="s" * 32, seal_task_phones=True))
    try:
        sealed = seal_phone(cache, PHONE, COMPANY)
        assert sealed.startswith(SEALED_PREFIX)
        assert open_phone(cache, sealed, COMPANY) == PHONE
    finally:
        cache.close()


@pytest.mark.celery
def test_the_hooks_message_carries_the_phone_sealed(app: Celery) -> None:
    with hooks_using(keyed_cache()):
        assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.INLINE_AND_QUEUED
        [(name, args, kwargs)] = queued_messages(app)
    assert name == INVALIDATE_TASK
    assert DIGITS not in json.dumps([args, kwargs])
    assert open_phone(keyed_cache(), args[0], COMPANY) == PHONE


@pytest.mark.celery
def test_a_worker_opens_the_sealed_phone_and_one_without_the_key_retries(
    app: Celery, celery_process: Callable[..., CeleryProcess]
) -> None:
    cache = keyed_cache()
    key = cache.client_keys(PHONE, COMPANY).full_context
    assert cache.set_cached_full_context(PHONE, COMPANY, {"stale": True})
    with hooks_using(keyed_cache(f"redis://127.0.0.1:{free_port()}/0")):  # its Redis fails
        assert booking_created(PHONE, COMPANY, app=app) is InvalidationOutcome.QUEUED_ONLY
    keyless = celery_process("worker")
    wait_until(
        lambda: "no CTXCACHE_ENCRYPTION_KEYS" in keyless.log() and "retrying" in keyless.log(),
        20,
        "the worker without the key to refuse the message and retry it",
    )
    assert cache.client.exists(key)  # not applied, and not lost: back in the queue
    keyless.stop()
    worker = celery_process("worker", CTXCACHE_ENCRYPTION_KEYS=K1)
    wait_until(lambda: not cache.client.exists(key), 30, "the keyed worker to apply it")
    wait_until(lambda: f"{mask_phone(PHONE)} / {COMPANY}:" in worker.log(), 15, "its log line")
    assert DIGITS not in worker.log() + keyless.log()
    cache.close()
