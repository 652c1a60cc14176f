"""Keys without phone numbers (CTXCACHE_KEY_SECRET), with and without encrypted values.

The proof: after the cache's behaviour ran on the real Redis with both options
on, no key and no value in the database holds the digits of any cached phone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any

import pytest
import redis
from cli_support import run
from conftest import COMPANY
from security_support import stored

from ctxcache import ContextCache, KeyLayout, VipRegistry
from ctxcache.core.crypto import PHONE_DIGEST_HEX

SECRET = "k" * 8 + base64.b64encode(os.urandom(24)).decode()
VALUE_KEY = base64.b64encode(os.urandom(32)).decode()
PHONES = ["+79001234567", "+79161112233", "+77012345678", "+4915112345678"]
Factory = Callable[..., ContextCache]


def context(phone: str) -> dict[str, Any]:
    # The phone inside the value too: encryption must hide it there.
    return {
        "client": {"phone": phone, "name": "Anna"},
        "company": {"name": "Salon"},
        "services": [{"id": 1}],
        "staffSchedules": {"1": ["10:00"]},
        "dialog": {"last": f"call me at {phone}"},
    }


def digits(phone: str) -> set[bytes]:
    """The ways a phone could show: all its digits, and without the country code."""
    plain = phone.lstrip("+")
    return {plain.encode(), plain[1:].encode(), plain[-10:].encode()}


def test_client_keys_carry_an_hmac_of_the_phone() -> None:
    layout = KeyLayout("app:", b"0123456789abcdef")
    keys = layout.client(COMPANY, "+79001234567")
    digest = hmac.new(b"0123456789abcdef", b"+79001234567", hashlib.sha256).hexdigest()
    assert keys.full_context == f"app:full_context:{COMPANY}:{digest[:PHONE_DIGEST_HEX]}"
    assert keys.dialog == "{" + keys.full_context + "}:dialog"
    assert keys.masked == f"app:full_context:{COMPANY}:+79*******67"  # logs still mask
    assert "0123456789abcdef" not in repr(layout)
    assert KeyLayout("app:").client(COMPANY, "+79001234567").full_context.endswith("+79001234567")


@pytest.mark.integration
def test_no_key_or_value_holds_a_cached_phone(
    cache_factory: Factory, real_client: redis.Redis
) -> None:
    cache = cache_factory(key_secret=SECRET, encryption_keys=VALUE_KEY, stats_flush_interval=0.001)
    registry = VipRegistry(cache)
    for phone in PHONES:
        assert registry.add(phone, COMPANY)
        assert cache.update_dialog_context(phone, COMPANY, {"phone": phone})
        assert cache.update_client_preferences(phone, COMPANY, {"callback": phone})
    first, second, *_ = PHONES
    assert cache.set_cached_full_context(first, COMPANY, context(first))
    assert cache.get_cached_full_context(first, COMPANY) == context(first)
    assert cache.load_full_context(second, COMPANY, lambda p, c: context(p)) == context(second)
    assert cache.update_section(first, COMPANY, "dialog", {"last": first})
    assert cache.update_company_section(COMPANY, "services", [{"id": 2}])
    generation = cache.current_generation(second, COMPANY)
    assert cache.invalidate_cached_context(second, COMPANY)
    stale = cache.set_cached_full_context(second, COMPANY, context(second), generation=generation)
    assert not stale
    assert cache.apply_booking_invalidation(first, COMPANY) is not None
    # The VIP warm-up reads the phones back out of the registry.
    vips = list(registry())
    assert sorted(vips) == sorted((p, COMPANY) for p in PHONES)
    for phone, company in vips:
        cache.warm_full_context(phone, company, lambda p, c: context(p))
    for phone in PHONES:
        assert cache.get_cached_full_context(phone, COMPANY) == context(phone)
        assert cache.get_dialog_context(phone, COMPANY) == {"phone": phone}
    assert cache.flush_stats()
    # The CLI still takes phones.
    env = {"CTXCACHE_KEY_SECRET": SECRET, "CTXCACHE_ENCRYPTION_KEYS": VALUE_KEY}
    assert run("vip", "add", "8 916 555-44-33", str(COMPANY), **env).returncode == 0
    shown = run("get", "+79001234567", str(COMPANY), "--json", **env)
    assert shown.returncode == 0, shown.stderr
    assert '"cached":true' in shown.stdout
    assert cache.stats().undecryptable == 0
    forbidden = set().union(*(digits(p) for p in [*PHONES, "+79165554433"]))
    everything = list(stored(real_client))
    assert len(everything) > 20
    for key, values in everything:
        for text in (key, *values):
            found = [d for d in forbidden if d in text]
            assert not found, f"{key!r} holds {found}"


@pytest.mark.integration
def test_hashed_keys_alone_seal_the_vip_members(cache_factory: Factory) -> None:
    cache = cache_factory(key_secret=SECRET)
    registry = VipRegistry(cache)
    assert registry.add(PHONES[0], COMPANY)
    (member,) = cache.client.zrange(cache.keys.vip_registry, 0, -1)
    assert member.startswith(f"{COMPANY}:~".encode())
    assert b"9001234567" not in member
    assert registry.list(COMPANY) == [(PHONES[0], COMPANY)]
    assert registry.remove(PHONES[0], COMPANY)
    # Another secret is another keyspace: nothing of the first is found.
    assert cache.set_cached_full_context(PHONES[0], COMPANY, context(PHONES[0]))
    other = cache_factory(key_secret=SECRET + "x")
    assert other.get_cached_full_context(PHONES[0], COMPANY) is None
