from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxcache import InvalidPhoneError, mask_phone, normalize_phone

SAME_CLIENT = [
    "+79001234567",
    "79001234567",
    "89001234567",
    "+7 (900) 123-45-67",
    "8 900 123 45 67",
    "79001234567@c.us",
    " +79001234567 ",
]


@pytest.mark.parametrize("raw", SAME_CLIENT)
def test_spellings_of_one_client_normalize_to_one_e164(raw: str) -> None:
    assert normalize_phone(raw) == "+79001234567"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("4915112345678@c.us", "+4915112345678"),  # chat ids are international
        ("+12025550123", "+12025550123"),
        ("12025550123", "+12025550123"),  # not Russian: read as international
        ("9001234567", "+79001234567"),
    ],
)
def test_other_countries_and_bare_national_numbers(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


def test_default_region_is_configurable() -> None:
    assert normalize_phone("030 1234567", region="DE") == "+49301234567"


@pytest.mark.parametrize(
    "raw", ["", "   ", "abc", "123", "+7900", "@c.us", "x@c.us", "1" * 80, "+7900123456789012"]
)
def test_garbage_raises_invalid_phone(raw: str) -> None:
    with pytest.raises(InvalidPhoneError) as info:
        normalize_phone(raw)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("raw", [None, 79001234567, b"+79001234567"])
def test_non_strings_raise_invalid_phone(raw: object) -> None:
    with pytest.raises(InvalidPhoneError):
        normalize_phone(raw)  # type: ignore[arg-type]


def test_error_message_masks_the_number() -> None:
    with pytest.raises(InvalidPhoneError) as info:
        normalize_phone("+7900123456789012")
    assert "900123456789" not in str(info.value)


def test_mask_keeps_only_the_edges() -> None:
    assert mask_phone("+79001234567") == "+79*******67"
    assert mask_phone("123") == "***"


russian_mobile = st.integers(min_value=900_000_0000, max_value=999_999_9999).map(str)


@given(russian_mobile)
def test_every_spelling_of_a_russian_mobile_normalizes_alike(national: str) -> None:
    e164 = "+7" + national
    spellings = [
        e164,
        "7" + national,
        "8" + national,
        f"+7 ({national[:3]}) {national[3:6]}-{national[6:8]}-{national[8:]}",
        "7" + national + "@c.us",
    ]
    assert {normalize_phone(s) for s in spellings} == {e164}


@given(russian_mobile)
def test_normalization_is_idempotent(national: str) -> None:
    once = normalize_phone("8" + national)
    assert normalize_phone(once) == once


@given(st.text(max_size=40))
def test_any_text_normalizes_to_e164_or_raises_invalid_phone(text: str) -> None:
    try:
        result = normalize_phone(text)
    except InvalidPhoneError:
        return
    assert result.startswith("+")
    assert result[1:].isdigit()
    assert normalize_phone(result) == result
