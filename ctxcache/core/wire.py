"""The wire format of cached values: a versioned envelope around orjson, zstd above a threshold.

Version 2 (written now) holds one *part* of a context, a client's own part or
one company section::

    b"\\x00ctx" | version u8 = 2 | kind u8 | encoding u8 | flags u8
    | stamp 8 bytes | load time u32 (ms) | written at u32 (unix s)
    | meta length u16 | meta (JSON) | payload

- ``kind``: 1 a client's part, 2 a company section.
- ``encoding``: 0 plain JSON, 1 zstd-compressed JSON.
- ``flags``: 0, or 1 when encrypted (``CTXCACHE_ENCRYPTION_KEYS``): then
  meta and payload are sealed together (:mod:`ctxcache.core.crypto`), with
  the Redis key name and this header as associated data, and the meta
  length is that of the plaintext meta. The header stays readable: the
  stamp check and operators' age and size figures work unchanged.
- ``stamp``: random bytes, new for every write, at a fixed offset so that a
  reader holding a decoded copy can check it is still current with a
  ``GETRANGE`` of 8 bytes instead of fetching the value.
- load time: how long the load that produced the value took (early refresh);
  written at: when it was written (its age, for operators).
- meta: for a client's part, the key order of the whole context and the
  company sections it was stored with.

Version 1 (ctxcache 0.1) held a whole context (``MAGIC | 1 | encoding |
payload``) and is still read, as is plain JSON from another writer (the
spec's Node service writes ``JSON.stringify(context)``): the leading NUL can
never start a JSON text. A reader that knows only version 1 refuses version
2, so it treats a part as a miss, never as a whole context.

Dialog and preference fields are JSON, or with encryption
``b"\\x00enc" | sealed JSON`` bound to the key and field name
(:meth:`WireCodec.seal_field`).
"""

from __future__ import annotations

import math
import secrets
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
import zstandard

from ctxcache.core.crypto import ValueCipher
from ctxcache.errors import (
    ContextTooLargeError,
    InvalidContextError,
    UndecodableValueError,
    UndecryptableValueError,
)

__all__ = [
    "DEFAULT_COMPRESSION_LEVEL",
    "DEFAULT_COMPRESSION_THRESHOLD",
    "DEFAULT_MAX_CONTEXT_BYTES",
    "FLAG_ENCRYPTED",
    "KIND_CLIENT",
    "KIND_FULL",
    "KIND_SECTION",
    "MAGIC",
    "STAMP_OFFSET",
    "STAMP_SIZE",
    "WIRE_VERSION",
    "JsonDefault",
    "Unpacked",
    "WireCodec",
    "offending_path",
]

MAGIC: Final = b"\x00ctx"
WIRE_VERSION_FULL: Final = 1
WIRE_VERSION: Final = 2
KIND_FULL: Final = 0  # a whole context: version 1 or plain JSON (read only)
KIND_CLIENT: Final = 1
KIND_SECTION: Final = 2
ENCODING_JSON: Final = 0
ENCODING_ZSTD: Final = 1
FLAG_ENCRYPTED: Final = 1
SEALED_FIELD: Final = b"\x00enc"  # JSON never starts with NUL

_V1_HEADER_SIZE: Final = len(MAGIC) + 2
_HEADER: Final = struct.Struct(">4sBBBB8sIIH")
HEADER_SIZE: Final = _HEADER.size
STAMP_OFFSET: Final = len(MAGIC) + 4
STAMP_SIZE: Final = 8
_FLAGS_OFFSET: Final = len(MAGIC) + 3
_PLAIN_REFUSED: Final = "plain value refused: CTXCACHE_REQUIRE_ENCRYPTION is on"
_MAX_U32: Final = 2**32 - 1
_MAX_META: Final = 2**16 - 1

DEFAULT_COMPRESSION_THRESHOLD: Final = 1024
# Level 1 keeps 23% of the 300 KB sample context, level 3 22% at 1.2x the CPU.
DEFAULT_COMPRESSION_LEVEL: Final = 1
DEFAULT_MAX_CONTEXT_BYTES: Final = 8 * 1024 * 1024

# orjson: keys that are ints, datetimes, UUIDs... become strings, as
# JSON.stringify does; without it a dict keyed by ids cannot be cached at all.
_DUMPS_OPTIONS: Final = orjson.OPT_NON_STR_KEYS

JsonDefault = Callable[[Any], Any]
"""Turns a value orjson cannot encode (``Decimal``...) into one it can, or raises ``TypeError``."""


@dataclass(frozen=True, slots=True)
class Unpacked:
    """A stored value taken out of its envelope; ``data`` is JSON."""

    kind: int
    data: bytes
    stamp: bytes | None  # None for version 1 and plain JSON: not tracked by stamps
    load_seconds: float
    meta: dict[str, Any]
    written_at: int = 0  # unix seconds; 0 when unknown


class WireCodec:
    """Turns contexts and their parts into envelopes and back; safe to share between threads."""

    def __init__(
        self,
        *,
        compression_threshold: int = DEFAULT_COMPRESSION_THRESHOLD,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
        default: JsonDefault | None = None,
        wall_clock: Callable[[], float] = time.time,
        cipher: ValueCipher | None = None,
        require_encryption: bool = False,
    ) -> None:
        if require_encryption and cipher is None:
            raise ValueError("require_encryption needs a cipher")
        self.cipher = cipher
        self.require_encryption = require_encryption
        self.compression_threshold = compression_threshold
        self.wall_clock = wall_clock
        self.compression_level = compression_level
        self.max_context_bytes = max_context_bytes
        self.default = default
        # zstd (de)compressor objects must not be used by two threads at once.
        self._local = threading.local()

    # -- encoding -----------------------------------------------------------------------

    def serialize(self, value: Any, *, where: str = "") -> bytes:
        """The JSON of ``value``; raises :class:`InvalidContextError` naming the bad value's path.

        NaN and infinities are refused (orjson would write them as ``null``
        without a word). ``where`` prefixes the path (a section's name).
        """
        try:
            data = orjson.dumps(value, default=self.default, option=_DUMPS_OPTIONS)
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            path = offending_path(value, self.default, where) or where or "the context"
            raise InvalidContextError(
                f"cannot encode {path} as JSON: {exc}; pass a JSON `default=` encoder "
                "(CTXCACHE_JSON_DEFAULT) for such types",
                path=path,
            ) from exc
        # NaN and inf come out as null: only a context that has a null can hold one.
        if b"null" in data:
            bad = offending_path(value, self.default, where, floats_only=True)
            if bad is not None:
                raise InvalidContextError(
                    f"{bad} is NaN or infinite, which JSON cannot hold", path=bad
                )
        if len(data) > self.max_context_bytes:
            self.refuse_size(len(data))
        return data

    def refuse_size(self, size: int) -> None:
        raise ContextTooLargeError(
            f"context is {size} bytes of JSON, over the cap of "
            f"{self.max_context_bytes} (CTXCACHE_MAX_CONTEXT_BYTES)",
            size=size,
            limit=self.max_context_bytes,
        )

    def pack(
        self,
        kind: int,
        data: bytes,
        *,
        meta: Mapping[str, Any] | None = None,
        load_seconds: float = 0.0,
        key: str = "",
    ) -> tuple[bytes, bytes]:
        """An envelope around serialized JSON for Redis key ``key``, and its random stamp."""
        meta_bytes = orjson.dumps(meta) if meta else b""
        if len(meta_bytes) > _MAX_META:
            raise InvalidContextError(f"a context with {len(meta_bytes)} bytes of section names")
        encoding = ENCODING_JSON
        if len(data) >= self.compression_threshold:
            data = self._compressor().compress(data)
            encoding = ENCODING_ZSTD
        stamp = secrets.token_bytes(STAMP_SIZE)
        load_ms = min(_MAX_U32, max(0, round(load_seconds * 1000)))
        written = min(_MAX_U32, max(0, int(self.wall_clock())))
        flags = FLAG_ENCRYPTED if self.cipher is not None else 0
        header = _HEADER.pack(
            MAGIC, WIRE_VERSION, kind, encoding, flags, stamp, load_ms, written, len(meta_bytes)
        )
        if self.cipher is not None:
            if not key:  # a value bound to no key would fail at every read: a bug, say so now
                raise ValueError("an encrypted value needs the Redis key it is stored at")
            body = self.cipher.seal(meta_bytes + data, _aad(key, header))
            return header + body, stamp
        return header + meta_bytes + data, stamp

    def seal_field(self, data: bytes, key: str, field: str) -> bytes:
        """A record field's JSON as stored: sealed (bound to key and field) when encrypting."""
        if self.cipher is None:
            return data
        return SEALED_FIELD + self.cipher.seal(data, _aad(key, field.encode()))

    def open_field(self, value: bytes, key: str, field: str) -> bytes:
        """A record field's JSON; raises :class:`UndecryptableValueError` (never shows it)."""
        if value.startswith(SEALED_FIELD):
            if self.cipher is None:
                raise UndecryptableValueError("field is encrypted; set CTXCACHE_ENCRYPTION_KEYS")
            return self.cipher.open(value[len(SEALED_FIELD) :], _aad(key, field.encode()))
        if self.require_encryption:
            raise UndecryptableValueError(_PLAIN_REFUSED)
        return value

    # -- decoding -----------------------------------------------------------------------

    def unpack(self, value: bytes, key: str = "") -> Unpacked:
        """The JSON and header of the value at ``key``, or raise :class:`UndecodableValueError`."""
        if self.require_encryption and not (
            len(value) >= HEADER_SIZE
            and value.startswith(MAGIC)
            and value[len(MAGIC)] == WIRE_VERSION
            and value[_FLAGS_OFFSET] & FLAG_ENCRYPTED
        ):
            raise UndecryptableValueError(_PLAIN_REFUSED)
        if not value.startswith(MAGIC):
            return Unpacked(KIND_FULL, value, None, 0.0, {})  # plain JSON from another writer
        if len(value) < _V1_HEADER_SIZE:
            raise UndecodableValueError("envelope is truncated")
        version = value[len(MAGIC)]
        if version == WIRE_VERSION_FULL:
            data = self._payload(value[len(MAGIC) + 1], value[_V1_HEADER_SIZE:])
            return Unpacked(KIND_FULL, data, None, 0.0, {})
        if version != WIRE_VERSION:
            raise UndecodableValueError(f"unknown wire version {version}")
        if len(value) < HEADER_SIZE:
            raise UndecodableValueError("envelope is truncated")
        _, _, kind, encoding, flags, stamp, load_ms, written, meta_size = _HEADER.unpack_from(value)
        if kind not in (KIND_CLIENT, KIND_SECTION) or flags & ~FLAG_ENCRYPTED:
            raise UndecodableValueError(f"unknown part kind {kind} or flags {flags}")
        body = value[HEADER_SIZE:]
        if flags & FLAG_ENCRYPTED:
            if self.cipher is None:
                raise UndecryptableValueError("value is encrypted; set CTXCACHE_ENCRYPTION_KEYS")
            body = self.cipher.open(body, _aad(key, value[:HEADER_SIZE]))
        meta: dict[str, Any] = {}
        if meta_size:
            try:
                loaded = orjson.loads(body[:meta_size])
            except orjson.JSONDecodeError as exc:
                raise UndecodableValueError(f"envelope metadata is not JSON: {exc}") from exc
            if not isinstance(loaded, dict):
                raise UndecodableValueError("envelope metadata is not an object")
            meta = loaded
        data = self._payload(encoding, body[meta_size:])
        return Unpacked(kind, data, stamp, load_ms / 1000, meta, written)

    def decode(self, value: bytes, key: str = "") -> dict[str, Any]:
        """A whole context (version 1 or plain JSON) in ``value``; parts are refused."""
        unpacked = self.unpack(value, key)
        if unpacked.kind != KIND_FULL:
            raise UndecodableValueError("value is a part of a context, not a whole one")
        return self.loads_object(unpacked.data)

    @staticmethod
    def loads(data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UndecodableValueError(f"value is not valid JSON: {exc}") from exc

    def loads_object(self, data: bytes) -> dict[str, Any]:
        value = self.loads(data)
        if not isinstance(value, dict):
            raise UndecodableValueError(f"value is JSON but not an object: {type(value).__name__}")
        return value

    def _payload(self, encoding: int, payload: bytes) -> bytes:
        if encoding == ENCODING_JSON:
            return payload
        if encoding != ENCODING_ZSTD:
            raise UndecodableValueError(f"unknown encoding {encoding}")
        # Refuse to inflate past the cap: a corrupted or hostile frame must not
        # make a worker allocate gigabytes.
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as exc:
            raise UndecodableValueError(f"bad zstd frame: {exc}") from exc
        if declared > self.max_context_bytes:
            raise UndecodableValueError(f"zstd frame declares {declared} bytes, over the cap")
        try:
            out: bytes = self._decompressor().decompress(
                payload, max_output_size=self.max_context_bytes
            )
        except zstandard.ZstdError as exc:
            raise UndecodableValueError(f"bad zstd frame: {exc}") from exc
        return out

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self.compression_level)
            self._local.compressor = compressor
        return compressor

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        decompressor: zstandard.ZstdDecompressor | None = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = zstandard.ZstdDecompressor()
            self._local.decompressor = decompressor
        return decompressor


def _aad(key: str, bound: bytes) -> bytes:
    """Associated data: the full Redis key name, then what else the value is bound to."""
    return key.encode() + b"\x00" + bound


def offending_path(
    value: Any, default: JsonDefault | None, where: str = "", *, floats_only: bool = False
) -> str | None:
    """The path (``services[3].price``) of the first value JSON cannot hold, or None.

    Only called after orjson refused a value (or wrote a null), so its cost
    is paid on the error path alone. ``floats_only`` looks for NaN and
    infinities alone, also inside what ``default`` turns a value into.
    """
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((_join(path, key), child) for key, child in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))
        elif isinstance(item, float):
            if not math.isfinite(item):
                return path or "the value"
        elif isinstance(item, int) and not isinstance(item, bool):
            if not floats_only and not -(2**63) <= item < 2**64:  # orjson's integer range
                return path or "the value"
        elif not isinstance(item, str | None) and not _native(item):
            try:
                if default is None:
                    raise TypeError(type(item).__name__)
                stack.append((path, default(item)))
            except Exception:
                if not floats_only:
                    return path or "the value"
    return None


def _join(path: str, key: object) -> str:
    name = key if isinstance(key, str) else repr(key)
    return f"{path}.{name}" if path else str(name)


def _native(item: Any) -> bool:
    """Whether orjson encodes ``item`` by itself (datetime, UUID, enum...)."""
    try:
        orjson.dumps(item, option=_DUMPS_OPTIONS)
    except TypeError:
        return False
    return True
