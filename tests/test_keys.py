from __future__ import annotations

import pytest

from ctxcache import ConfigurationError, InvalidCompanyIdError, KeyLayout, validate_company_id
from ctxcache.core.keys import ClientKeys
from ctxcache.core.replication import hash_tag


def test_full_context_key_is_exactly_the_spec_layout() -> None:
    assert KeyLayout().full_context(962302, "+79001234567") == "full_context:962302:+79001234567"


def test_prefix_is_applied_exactly_once_to_every_key() -> None:
    keys = KeyLayout("app:").client(962302, "+79001234567")
    assert keys.full_context == "app:full_context:962302:+79001234567"
    others = [keys.generation, keys.lock, keys.dialog, keys.preferences]
    for key in [keys.full_context, *others]:
        assert key.count("app:") == 1


@pytest.mark.parametrize(
    ("key", "hashed"),
    [  # the examples of the Redis Cluster specification
        ("{user1000}.following", "user1000"),
        ("foo{}{bar}", "foo{}{bar}"),
        ("foo{{bar}}zap", "{bar"),
        ("foo{bar}{zap}", "bar"),
        ("plain", "plain"),
    ],
)
def test_hash_tag_follows_the_cluster_spec(key: str, hashed: str) -> None:
    assert hash_tag(key) == hashed


def test_all_keys_of_a_client_share_one_cluster_hash_slot() -> None:
    keys: ClientKeys = KeyLayout("app:").client(962302, "+79001234567")
    main = hash_tag(keys.full_context)
    for key in [keys.generation, keys.lock, keys.dialog, keys.preferences]:
        assert hash_tag(key) == main


def test_sibling_keys_do_not_match_the_full_context_scan_pattern() -> None:
    layout = KeyLayout("app:")
    keys = layout.client(962302, "+79001234567")
    prefix = layout.full_context_pattern.rstrip("*")
    assert keys.full_context.startswith(prefix)
    for key in [keys.generation, keys.lock, keys.dialog, keys.preferences]:
        assert not key.startswith(prefix)


def test_masked_key_hides_the_phone() -> None:
    keys = KeyLayout().client(962302, "+79001234567")
    assert "9001234567" not in keys.masked
    assert keys.masked.startswith("full_context:962302:")


@pytest.mark.parametrize("prefix", ["{x}", "a b", "a*", "p?"])
def test_prefix_that_would_break_hash_tags_or_patterns_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="CTXCACHE_KEY_PREFIX"):
        KeyLayout(prefix)


@pytest.mark.parametrize(("raw", "expected"), [(962302, 962302), ("962302", 962302), ("007", 7)])
def test_company_id_accepts_positive_ints_and_digit_strings(raw: object, expected: int) -> None:
    assert validate_company_id(raw) == expected


@pytest.mark.parametrize("raw", [0, -1, True, 1.5, "", "12a", "-5", " 12", None, "١٢", 2**63, [1]])
def test_bad_company_id_raises(raw: object) -> None:
    with pytest.raises(InvalidCompanyIdError) as info:
        validate_company_id(raw)
    assert isinstance(info.value, ValueError)
