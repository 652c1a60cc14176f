"""Encryption of cached values and hashing of phones in keys; no I/O.

Values (``CTXCACHE_ENCRYPTION_KEYS``) are sealed with AES-GCM::

    key id (4 bytes) | nonce (12 bytes) | ciphertext | tag (16 bytes)

- The key id is a fingerprint of the key (SHA-256 of a label and the key, cut
  to 4 bytes), so a reader holding several keys picks the right one without
  trying each; it says nothing usable about the key.
- The associated data is the full Redis key name (and more the caller binds,
  such as the envelope header): a value copied to another key fails to open.
- The first key seals, every key opens: a new key is first added second
  everywhere, then moved first; the old one is dropped once the values it
  sealed have expired.

VIP registry members must stay unique in a sorted set and be found again to
be removed, so they are sealed deterministically (the nonce is an HMAC of the
plaintext and associated data, as in SIV): equal members seal equally under
one key, and nothing else repeats.

Keys without phones (``CTXCACHE_KEY_SECRET``) use :func:`phone_digest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ctxcache.errors import MissingKeyError, UndecryptableValueError

__all__ = [
    "KEY_ID_SIZE",
    "NONCE_SIZE",
    "PHONE_DIGEST_HEX",
    "ValueCipher",
    "derived_key",
    "key_id",
    "parse_keys",
    "phone_digest",
]

KEY_ID_SIZE: Final = 4
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
_KEY_SIZES: Final = (16, 24, 32)
_KEY_ID_LABEL: Final = b"ctxcache key id\x00"
# 32 hex digits = 128 bits of HMAC-SHA256: no collision among any number of
# clients a salon chain could have, and half the length of the full digest.
PHONE_DIGEST_HEX: Final = 32


def parse_keys(text: str) -> list[bytes]:
    """Comma-separated base64 keys of 16, 24 or 32 bytes; ``ValueError`` never shows a key."""
    keys: list[bytes] = []
    for position, item in enumerate(text.split(","), 1):
        item = item.strip()
        if not item:
            continue
        standard = item.replace("-", "+").replace("_", "/")  # url-safe base64 too
        try:
            raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {position} is not base64") from None
        if len(raw) not in _KEY_SIZES:
            raise ValueError(
                f"key {position} is {len(raw)} bytes; AES-GCM takes 16, 24 or 32 "
                "(make one with: python -c 'import os,base64;"
                "print(base64.b64encode(os.urandom(32)).decode())')"
            )
        keys.append(raw)
    if not keys:
        raise ValueError("no key given")
    if len({key_id(k) for k in keys}) != len(keys):
        raise ValueError("the same key is listed twice")
    return keys


def key_id(key: bytes) -> bytes:
    """A 4-byte fingerprint naming ``key`` in sealed values."""
    return hashlib.sha256(_KEY_ID_LABEL + key).digest()[:KEY_ID_SIZE]


def derived_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for ``purpose`` from a secret (HMAC-SHA256 as the KDF)."""
    return hmac.new(secret, b"ctxcache " + purpose.encode(), hashlib.sha256).digest()


def phone_digest(secret: bytes, phone: str) -> str:
    """The hex HMAC-SHA256 of an E.164 phone, cut to :data:`PHONE_DIGEST_HEX` digits."""
    return hmac.new(secret, phone.encode(), hashlib.sha256).hexdigest()[:PHONE_DIGEST_HEX]


class ValueCipher:
    """AES-GCM with a list of keys: the first seals, any opens; safe to share between threads."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a cipher needs at least one key")
        self._keys = [(key_id(k), k, AESGCM(k)) for k in keys]
        self._by_id = {kid: aead for kid, _, aead in self._keys}
        self._macs = {kid: key for kid, key, _ in self._keys}

    @property
    def key_ids(self) -> list[bytes]:
        """Fingerprints of the keys, the sealing one first."""
        return [kid for kid, _, _ in self._keys]

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """``plaintext`` sealed under the first key, bound to ``aad``."""
        kid, _, aead = self._keys[0]
        nonce = os.urandom(NONCE_SIZE)
        return kid + nonce + aead.encrypt(nonce, plaintext, aad)

    def seal_fixed(self, plaintext: bytes, aad: bytes, kid: bytes | None = None) -> bytes:
        """A deterministic seal (nonce from an HMAC of aad and plaintext), by key ``kid``."""
        kid = kid if kid is not None else self._keys[0][0]
        mac = hmac.new(self._macs[kid], b"nonce\x00" + aad + b"\x00" + plaintext, hashlib.sha256)
        nonce = mac.digest()[:NONCE_SIZE]
        return kid + nonce + self._by_id[kid].encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext of a sealed value; :class:`UndecryptableValueError` if it cannot be."""
        if len(sealed) < KEY_ID_SIZE + NONCE_SIZE + TAG_SIZE:
            raise UndecryptableValueError("encrypted value is truncated")
        kid = sealed[:KEY_ID_SIZE]
        aead = self._by_id.get(kid)
        if aead is None:
            # The fingerprint is safe to show: it names the key an operator must add.
            raise MissingKeyError(
                f"value is encrypted with key {kid.hex()}, not in CTXCACHE_ENCRYPTION_KEYS"
                " (nor the key CTXCACHE_KEY_SECRET derives)"
            )
        nonce = sealed[KEY_ID_SIZE : KEY_ID_SIZE + NONCE_SIZE]
        try:
            return aead.decrypt(nonce, sealed[KEY_ID_SIZE + NONCE_SIZE :], aad)
        except InvalidTag:
            raise UndecryptableValueError(
                "encrypted value fails authentication (tampered, or copied from another key)"
            ) from None
