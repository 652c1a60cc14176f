"""Phones in task messages, sealed whenever the cache has a key.

A broker keeps messages on disk, shows them in its management UI and moves
them to dead-letter queues: a phone there is personal data outside Redis.
With ``CTXCACHE_ENCRYPTION_KEYS`` (or ``CTXCACHE_KEY_SECRET`` alone) set, the
booking hooks and the warm-up send a client's phone sealed with the key that
seals VIP members (AES-GCM, bound to the company id and to this use, so a
sealed phone cannot be replayed for another company or read as a value);
workers open it. Without a key the phone goes plain, as it is in the keys.

A plain phone is still accepted from the queue: messages sent before the
keys were set, or by an older version (an invalidation of a plain phone
deletes what that phone's keys hold, nothing more).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from ctxcache import ContextCache
from ctxcache.errors import UndecryptableValueError

__all__ = ["SEALED_PREFIX", "open_phone", "seal_phone"]

# No E.164 phone (nor anything a caller would pass as one) starts with it.
SEALED_PREFIX: Final = "sealed:"


def _aad(company_id: int) -> bytes:
    return f"ctxcache task phone\x00{company_id}".encode()


def seal_phone(cache: ContextCache, phone: str, company_id: int) -> str:
    """``phone`` as a task argument: sealed when the cache has a key, else as it is."""
    cipher = cache.core.member_cipher
    if cipher is None:
        return phone
    sealed = cipher.seal(phone.encode(), _aad(company_id))
    return SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode()


def open_phone(cache: ContextCache, argument: str, company_id: int) -> str:
    """The phone a task argument carries.

    Raises :class:`~ctxcache.errors.UndecryptableValueError` when it is sealed
    and this process has no key that opens it (the message names the key's
    fingerprint, never the phone).
    """
    if not argument.startswith(SEALED_PREFIX):
        return argument
    cipher = cache.core.member_cipher
    if cipher is None:
        raise UndecryptableValueError(
            "the task's phone is sealed; this worker has no CTXCACHE_ENCRYPTION_KEYS"
            " or CTXCACHE_KEY_SECRET to open it"
        )
    try:
        sealed = base64.b64decode(argument[len(SEALED_PREFIX) :], altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise UndecryptableValueError("the task's sealed phone is not valid base64") from None
    return cipher.open(sealed, _aad(company_id)).decode()
