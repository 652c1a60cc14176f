"""Phones in task messages, sealed when ``CTXCACHE_SEAL_TASK_PHONES`` is on.

A broker keeps messages on disk, shows them in its management UI and moves
them to dead-letter queues: a phone there is personal data outside Redis.
With the setting on (it needs ``CTXCACHE_ENCRYPTION_KEYS`` or
``CTXCACHE_KEY_SECRET``), the booking hooks and the warm-up send a client's
phone sealed with the key that seals VIP members (AES-GCM, bound to the
company id and to this use, so a sealed phone cannot be replayed for another
company or read as a value). It is a setting, not implied by the keys,
because a worker of an older version would take a sealed phone for a bad one
and drop the invalidation: turn it on once every worker runs this version.

Workers open a sealed phone whatever the setting, and still take plain ones
(messages queued before, or by senders with the setting off).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from ctxcache import ContextCache
from ctxcache.errors import MissingKeyError, UndecryptableValueError

__all__ = ["SEALED_PREFIX", "open_phone", "seal_phone"]

# No E.164 phone (nor anything a caller would pass as one) starts with it.
SEALED_PREFIX: Final = "sealed:"


def _aad(company_id: int) -> bytes:
    return f"ctxcache task phone\x00{company_id}".encode()


def seal_phone(cache: ContextCache, phone: str, company_id: int) -> str:
    """``phone`` as a task argument: sealed when ``CTXCACHE_SEAL_TASK_PHONES`` is on."""
    cipher = cache.core.member_cipher
    if not cache.settings.seal_task_phones or cipher is None:
        return phone
    sealed = cipher.seal(phone.encode(), _aad(company_id))
    return SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode()


def open_phone(cache: ContextCache, argument: str, company_id: int) -> str:
    """The phone a task argument carries.

    Raises :class:`~ctxcache.errors.MissingKeyError` when it is sealed with a
    key this process does not hold (it names the key's fingerprint, never the
    phone), :class:`~ctxcache.errors.UndecryptableValueError` when it can never
    be opened (tampered, truncated, not base64).
    """
    if not argument.startswith(SEALED_PREFIX):
        return argument
    cipher = cache.core.member_cipher
    if cipher is None:
        raise MissingKeyError(
            "the task's phone is sealed; this worker has no CTXCACHE_ENCRYPTION_KEYS"
            " or CTXCACHE_KEY_SECRET to open it"
        )
    try:
        sealed = base64.b64decode(argument[len(SEALED_PREFIX) :], altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise UndecryptableValueError("the task's sealed phone is not valid base64") from None
    return cipher.open(sealed, _aad(company_id)).decode()
