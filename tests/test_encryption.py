"""Encrypted values (CTXCACHE_ENCRYPTION_KEYS) on the real Redis: round trips, key rotation,
values copied to another key, tampering, and CTXCACHE_REQUIRE_ENCRYPTION."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from typing import Any

import pytest
import redis
from conftest import COMPANY, PHONE
from security_support import stored

from ctxcache import ConfigurationError, ContextCache, VipRegistry
from ctxcache.core.crypto import ValueCipher, key_id, parse_keys
from ctxcache.core.wire import FLAG_ENCRYPTED, KIND_SECTION, MAGIC, WireCodec
from ctxcache.errors import UndecryptableValueError
from ctxcache.settings import CacheSettings

OTHER = "+79007654321"
CONTEXT: dict[str, Any] = {
    "client": {"name": "Анна Петрова", "visits": [1, 2, 3]},
    "company": {"name": "Salon Secret-Garden"},
    "services": [{"id": 1, "title": "haircut", "price": 1500}],
    "dialog": {"last": "хочу записаться"},
}
Factory = Callable[..., ContextCache]


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


K1, K2 = new_key(), new_key()


def stats(cache: ContextCache) -> dict[str, Any]:
    snapshot = cache.stats()
    return {"undecryptable": snapshot.undecryptable, "corrupt": snapshot.corrupt}


# -- the codec alone (no I/O) -----------------------------------------------------------


def test_keys_parse_and_name_themselves_without_showing_the_key() -> None:
    keys = parse_keys(f"{K1}, {K2}")
    assert len(keys) == 2
    assert all(len(k) == 32 for k in keys)
    assert parse_keys(base64.urlsafe_b64encode(keys[0]).decode().rstrip("=")) == keys[:1]
    for bad in ("not base64!", base64.b64encode(b"short").decode(), f"{K1},{K1}"):
        with pytest.raises(ValueError) as caught:
            parse_keys(bad)
        assert K1 not in str(caught.value)
    with pytest.raises(ConfigurationError) as error:
        CacheSettings.load(encryption_keys="x%" * 22)
    assert "x%x%x%" not in str(error.value)
    with pytest.raises(ConfigurationError, match="REQUIRE_ENCRYPTION"):
        CacheSettings.load(require_encryption=True)


def test_an_envelope_is_bound_to_its_key_and_header() -> None:
    codec = WireCodec(cipher=ValueCipher(parse_keys(K1)))
    value, _ = codec.pack(KIND_SECTION, b'{"secret":"Anna"}', key="k1")
    assert value[len(MAGIC) + 3] & FLAG_ENCRYPTED
    assert b"Anna" not in value
    assert codec.unpack(value, "k1").data == b'{"secret":"Anna"}'
    with pytest.raises(UndecryptableValueError, match="another key"):
        codec.unpack(value, "k2")
    age_changed = bytearray(value)
    age_changed[len(MAGIC) + 4 + 8 + 4] ^= 1  # "written at": the header is authenticated too
    with pytest.raises(UndecryptableValueError):
        codec.unpack(bytes(age_changed), "k1")
    with pytest.raises(UndecryptableValueError, match=key_id(parse_keys(K1)[0]).hex()):
        WireCodec(cipher=ValueCipher(parse_keys(K2))).unpack(value, "k1")


# -- on the real server -----------------------------------------------------------------


@pytest.mark.integration
def test_every_value_written_is_encrypted_and_reads_back(
    cache_factory: Factory, real_client: redis.Redis
) -> None:
    cache = cache_factory(encryption_keys=K1)
    assert cache.update_dialog_context(PHONE, COMPANY, {"step": "booking", "said": "Анна"})
    assert cache.update_client_preferences(PHONE, COMPANY, {"master": "Olga"})
    assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)  # records invalidate it
    registry = VipRegistry(cache)
    assert registry.add(PHONE, COMPANY)
    assert not registry.add(PHONE, COMPANY)
    for key, values in stored(real_client):
        for value in values:
            if key.startswith(b"ctxcache:stats") or key.endswith((b":gen", b":lock")):
                continue
            for plain in (b"Anna", "Анна".encode(), b"Olga", b"booking", b"haircut", b"9001234"):
                assert plain not in value, (key, plain)
    other = cache_factory(encryption_keys=K1)
    assert other.get_cached_full_context(PHONE, COMPANY) == CONTEXT
    assert other.get_dialog_context(PHONE, COMPANY) == {"step": "booking", "said": "Анна"}
    assert other.get_client_preferences(PHONE, COMPANY) == {"master": "Olga"}
    assert VipRegistry(other).list() == [(PHONE, COMPANY)]
    assert other.load_full_context(OTHER, COMPANY, lambda p, c: CONTEXT) == CONTEXT
    assert other.get_cached_full_context(OTHER, COMPANY) == CONTEXT
    assert other.update_section(PHONE, COMPANY, "dialog", {"last": "ok"})
    assert cache.get_cached_full_context(PHONE, COMPANY) == {**CONTEXT, "dialog": {"last": "ok"}}
    assert stats(other) == {"undecryptable": 0, "corrupt": 0}


@pytest.mark.integration
def test_keys_rotate_first_seals_every_one_opens(cache_factory: Factory) -> None:
    old = cache_factory(encryption_keys=K1)
    assert old.update_dialog_context(PHONE, COMPANY, {"a": 1})
    assert old.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert VipRegistry(old).add(PHONE, COMPANY)
    # Step 1 of a rotation: the new key listed second, everywhere; step 2: moved first.
    rotated = cache_factory(encryption_keys=f"{K2},{K1}")
    assert rotated.get_cached_full_context(PHONE, COMPANY) == CONTEXT
    assert rotated.get_dialog_context(PHONE, COMPANY) == {"a": 1}
    assert VipRegistry(rotated).list() == [(PHONE, COMPANY)]
    registry = VipRegistry(rotated)
    assert not registry.add(PHONE, COMPANY)  # re-sealed with the new key, not doubled
    assert len(registry) == 1
    assert registry.list() == [(PHONE, COMPANY)]
    assert rotated.update_dialog_context(OTHER, COMPANY, {"b": 2})
    assert rotated.set_cached_full_context(OTHER, COMPANY, CONTEXT)
    # Once the old key is dropped, values it sealed are misses until rewritten.
    new_only = cache_factory(encryption_keys=K2)
    assert new_only.get_cached_full_context(OTHER, COMPANY) == CONTEXT
    assert new_only.get_dialog_context(OTHER, COMPANY) == {"b": 2}
    assert new_only.get_dialog_context(PHONE, COMPANY) is None  # sealed with K1 alone
    assert VipRegistry(new_only).list() == [(PHONE, COMPANY)]
    assert new_only.stats().undecryptable == 1
    assert registry.remove(PHONE, COMPANY)
    assert len(registry) == 0


@pytest.mark.integration
def test_a_value_copied_to_another_clients_key_is_a_counted_miss(
    cache_factory: Factory, real_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    cache = cache_factory(encryption_keys=K1)
    assert cache.update_dialog_context(PHONE, COMPANY, {"secret": "Анна"})
    assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert cache.set_cached_full_context(OTHER, COMPANY, {**CONTEXT, "client": {"name": "Bob"}})
    victim, thief = cache.client_keys(PHONE, COMPANY), cache.client_keys(OTHER, COMPANY)
    real_client.set(thief.full_context, real_client.get(victim.full_context) or b"")
    real_client.hset(thief.dialog, "stolen", real_client.hget(victim.dialog, "secret") or b"")
    real_client.hset(victim.dialog, "renamed", real_client.hget(victim.dialog, "secret") or b"")
    with caplog.at_level(logging.INFO, logger="ctxcache"):
        assert cache.get_cached_full_context(OTHER, COMPANY) is None
        assert cache.get_dialog_context(OTHER, COMPANY) is None
        assert cache.get_dialog_context(PHONE, COMPANY) == {"secret": "Анна"}
    assert cache.stats().undecryptable == 3
    assert "another key" in caplog.text
    assert "Анна" not in caplog.text
    assert real_client.hexists(thief.dialog, "stolen")  # records are never deleted for it
    # The next load writes a good value over the copied one.
    assert cache.load_full_context(OTHER, COMPANY, lambda p, c: CONTEXT) == CONTEXT


@pytest.mark.integration
def test_a_tampered_value_is_a_counted_miss_never_an_exception(
    cache_factory: Factory, real_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    cache = cache_factory(encryption_keys=K1)
    assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    key = cache.client_keys(PHONE, COMPANY).full_context
    value = bytearray(real_client.get(key) or b"")
    value[-20] ^= 0x55
    real_client.set(key, bytes(value))
    with caplog.at_level(logging.INFO, logger="ctxcache"):
        assert cache.get_cached_full_context(PHONE, COMPANY) is None
        assert cache.describe_cached_context(PHONE, COMPANY).parts[0].found is False
    assert stats(cache) == {"undecryptable": 1, "corrupt": 1}
    assert "fails authentication" in caplog.text
    assert cache.load_full_context(PHONE, COMPANY, lambda p, c: CONTEXT) == CONTEXT


@pytest.mark.integration
def test_required_encryption_refuses_plain_values(
    cache_factory: Factory, real_client: redis.Redis
) -> None:
    plain = cache_factory()
    assert plain.update_client_preferences(PHONE, COMPANY, {"master": "Olga"})
    assert plain.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert VipRegistry(plain).add(PHONE, COMPANY)
    real_client.set(plain.client_keys(OTHER, COMPANY).full_context, b'{"node": "json"}')
    # Lenient (the default) with keys: plain values of before the switch still read.
    lenient = cache_factory(encryption_keys=K1)
    assert lenient.get_client_preferences(PHONE, COMPANY) == {"master": "Olga"}
    assert lenient.get_cached_full_context(OTHER, COMPANY) == {"node": "json"}
    strict = cache_factory(encryption_keys=K1, require_encryption="true")
    assert strict.get_cached_full_context(PHONE, COMPANY) is None
    assert strict.get_cached_full_context(OTHER, COMPANY) is None
    assert strict.get_client_preferences(PHONE, COMPANY) is None
    assert VipRegistry(strict).list() == []
    assert strict.stats().undecryptable >= 3
    # Encrypted without keys at all: a counted miss too.
    assert strict.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert plain.get_cached_full_context(PHONE, COMPANY) is None
    assert plain.stats().undecryptable >= 1
