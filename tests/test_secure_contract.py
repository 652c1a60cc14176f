"""The contract suites again, on the real Redis, with hashed keys and encrypted values on.

Every test of ``test_cache`` and ``test_sections`` that goes through
``any_cache`` runs here once more with ``CTXCACHE_KEY_SECRET`` and
``CTXCACHE_ENCRYPTION_KEYS`` set; after each, every key and value in the
database is scanned: none may hold a phone.
"""

from __future__ import annotations

import base64
import inspect
import os
import re
from collections.abc import Iterator

import pytest
import redis
import test_cache
import test_sections
from conftest import FakeClock, make_settings
from security_support import stored

from ctxcache import ContextCache

SECRET = base64.b64encode(os.urandom(32)).decode()
VALUE_KEY = base64.b64encode(os.urandom(32)).decode()
# E.164 anywhere; and the national digits of the phones those suites cache.
E164 = re.compile(rb"\+\d{10,}")
KNOWN = (b"9001234567", b"9007654321", b"9161112233")

# These read or write raw keys and bytes of the plain layout (the phone in the key
# name, a plain or corrupt value planted by hand): they test the layout and the
# decoding of other writers' values, which test_encryption and test_hashed_keys cover.
LAYOUT_BOUND = frozenset(
    {
        "test_miss_set_hit_invalidate",
        "test_default_ttl_is_twelve_hours_and_explicit_ttl_is_kept",
        "test_corrupt_value_is_a_counted_miss_and_is_removed",
        "test_plain_json_written_by_the_node_service_is_read",
        "test_key_prefix_is_applied_once",
        "test_hit_is_logged_at_info_with_the_phone_masked",
        "test_company_sections_are_stored_once_per_company",
        "test_a_hit_needs_every_part_it_was_stored_with",
        "test_old_node_blobs_and_v1_envelopes_are_read",
        "test_update_section_replaces_one_client_section",
        "test_a_legacy_whole_context_is_dropped_by_an_update",
        "test_a_layout_from_settings_changes_the_scopes",
    }
)


def _contract_tests() -> dict[str, object]:
    """The tests of both suites that take ``any_cache``, but for the layout-bound ones."""
    found: dict[str, object] = {}
    for module in (test_cache, test_sections):
        for name, test in vars(module).items():
            if not name.startswith("test_") or name in LAYOUT_BOUND or not callable(test):
                continue
            if "any_cache" in inspect.signature(test).parameters:
                found[name] = test
    return found


globals().update(_contract_tests())


@pytest.fixture
def any_cache(real_client: redis.Redis, clock: FakeClock) -> Iterator[ContextCache]:
    settings = make_settings(key_secret=SECRET, encryption_keys=VALUE_KEY)
    cache = ContextCache.from_settings(settings, clock=clock, sleep=clock.sleep)
    yield cache
    cache.close()
    assert cache.stats().undecryptable == 0
    for key, values in stored(real_client):
        assert not E164.search(key), key
        assert not any(digits in key for digits in KNOWN), key
        for value in values:
            assert not E164.search(value), (key, value[:80])
            assert not any(digits in value for digits in KNOWN), key
