"""Phone numbers: one normalization to E.164 used everywhere, and log masking."""

from __future__ import annotations

import phonenumbers

from ctxcache.errors import InvalidPhoneError

__all__ = ["DEFAULT_REGION", "mask_phone", "normalize_phone"]

DEFAULT_REGION = "RU"

# WhatsApp chat ids look like "79001234567@c.us"; the part before "@" is the number.
_CHAT_ID_SEPARATOR = "@"
# Longer input is not a phone number; refuse it before the parser spends time on it.
_MAX_INPUT_LENGTH = 64


def normalize_phone(phone: str, region: str = DEFAULT_REGION) -> str:
    """Return ``phone`` in E.164 (``+79001234567``) or raise :class:`InvalidPhoneError`.

    ``+79001234567``, ``79001234567``, ``89001234567``, ``+7 (900) 123-45-67``
    and ``79001234567@c.us`` are the same client. Numbers without a country
    code are read in ``region``. Validation is by length for the country
    (``is_possible_number``), not by the allocation tables, so a newly issued
    range is never refused.
    """
    if not isinstance(phone, str):
        raise InvalidPhoneError(
            f"phone must be a string, got {type(phone).__name__}", masked="<not a string>"
        )
    text = phone.strip()
    is_chat_id = _CHAT_ID_SEPARATOR in text
    if is_chat_id:
        text = text.split(_CHAT_ID_SEPARATOR, 1)[0]
    if len(text) > _MAX_INPUT_LENGTH:
        # Masked and cut: a 5,000-digit input must not fill the log line or the terminal.
        masked = mask_phone(text[:_MAX_INPUT_LENGTH]) + "..."
        raise InvalidPhoneError(
            f"not a phone number: {masked!r} ({len(text):,} characters)", masked=masked
        )
    masked = mask_phone(text)
    if not text:
        raise InvalidPhoneError(f"not a phone number: {masked!r}", masked=masked)
    # Chat ids are international numbers without the "+". Bare digits are read
    # in the default region first, then as international ("4915112345678").
    candidates = [] if is_chat_id else [text]
    if text.isdigit():
        candidates.append(f"+{text}")
    for candidate in candidates:
        number = _parse(candidate, region)
        if number is not None and phonenumbers.is_possible_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidPhoneError(f"not a phone number: {masked!r}", masked=masked)


def _parse(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def mask_phone(phone: str) -> str:
    """Hide all but the first three and last two characters: ``+79*******67``."""
    if len(phone) <= 5:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 5) + phone[-2:]
