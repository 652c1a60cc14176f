from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from ctxcache import ContextTooLargeError, InvalidContextError, UndecodableValueError
from ctxcache.core.wire import (
    KIND_CLIENT,
    KIND_FULL,
    KIND_SECTION,
    MAGIC,
    STAMP_OFFSET,
    STAMP_SIZE,
    WIRE_VERSION,
    WireCodec,
)

REPO = Path(__file__).resolve().parents[1]
# The ~300 KB sample context the tests and the benchmarks share; it ships with the repository.
FIXTURE = REPO / "tests" / "data" / "full_context_300k.json"


def load_fixture() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(FIXTURE.read_bytes())
    return data


def test_the_fixture_ships_inside_the_repository() -> None:
    """A fresh clone is self-contained: no code, test or benchmark reads beside the checkout."""
    assert FIXTURE.is_file()
    outside = ("/".join(["..", "shared"]), "/".join(["shared", "fixtures"]))  # apart: no self-match
    readers = [
        str(path.relative_to(REPO))
        for folder in ("ctxcache", "tasks", "tests", "benchmarks")
        for path in (REPO / folder).rglob("*.py")
        if any(text in path.read_text(encoding="utf-8") for text in outside)
    ]
    assert readers == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
contexts = st.dictionaries(st.text(max_size=20), json_values, max_size=8)
V1 = 1  # ctxcache 0.1's envelope: a whole context


def v1_envelope(data: bytes, encoding: int = 0) -> bytes:
    return MAGIC + bytes((V1, encoding)) + data


@given(contexts, st.sampled_from([0, 64, 1024, 10**9]), st.floats(0, 4000))
def test_part_envelope_round_trip(context: dict[str, Any], threshold: int, seconds: float) -> None:
    codec = WireCodec(compression_threshold=threshold)
    meta = {"company": [], "order": list(context)}
    value, stamp = codec.pack(
        KIND_CLIENT, codec.serialize(context), meta=meta, load_seconds=seconds
    )
    assert value.startswith(MAGIC)
    assert value[len(MAGIC)] == WIRE_VERSION
    assert value[STAMP_OFFSET : STAMP_OFFSET + STAMP_SIZE] == stamp  # where GETRANGE finds it
    unpacked = codec.unpack(value)
    assert (unpacked.kind, unpacked.stamp, unpacked.meta) == (KIND_CLIENT, stamp, meta)
    assert unpacked.load_seconds == pytest.approx(seconds, abs=0.001)
    assert codec.loads(unpacked.data) == context


def test_every_write_gets_a_new_stamp() -> None:
    codec = WireCodec()
    stamps = {codec.pack(KIND_SECTION, b"[1]")[1] for _ in range(100)}
    assert len(stamps) == 100


def test_fixture_parts_shrink_by_at_least_70_percent() -> None:
    context = load_fixture()
    codec = WireCodec()
    stored = sum(len(codec.pack(KIND_SECTION, codec.serialize(v))[0]) for v in context.values())
    raw = len(orjson.dumps(context))
    assert stored <= 0.30 * raw, f"{stored} of {raw} bytes"


def test_small_values_are_not_compressed() -> None:
    value, _ = WireCodec(compression_threshold=1024).pack(KIND_SECTION, b'{"a":1}')
    assert value[len(MAGIC) + 2] == 0  # encoding: plain JSON
    assert value.endswith(b'{"a":1}')


def test_whole_contexts_of_older_writers_are_read() -> None:
    context = load_fixture()
    node_style = json.dumps(context, ensure_ascii=False).encode()  # JSON.stringify
    assert WireCodec().decode(node_style) == context
    assert WireCodec().decode(b'  {"a": [1, 2]}\n') == {"a": [1, 2]}
    compressed = zstandard.ZstdCompressor().compress(orjson.dumps(context))
    assert WireCodec().decode(v1_envelope(compressed, 1)) == context  # ctxcache 0.1
    assert WireCodec().unpack(v1_envelope(b"{}")).kind == KIND_FULL


def test_a_part_is_never_read_as_a_whole_context() -> None:
    codec = WireCodec()
    value, _ = codec.pack(KIND_CLIENT, b'{"client":1}', meta={"company": [], "order": ["client"]})
    with pytest.raises(UndecodableValueError, match="part"):
        codec.decode(value)
    # What ctxcache 0.1 did with it: refuse the version, so a miss.
    assert value[len(MAGIC)] != V1


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"a string"',
        MAGIC,
        MAGIC + bytes((V1,)),
        MAGIC + bytes((99, 0)) + b"{}",  # unknown version
        v1_envelope(b"{}", 7),  # unknown encoding
        v1_envelope(b"garbage", 1),  # bad zstd frame
        v1_envelope(b"\xff\xfe{"),  # bad UTF-8
        MAGIC + bytes((WIRE_VERSION, KIND_CLIENT, 0, 0)) + b"short",  # truncated header
        MAGIC + bytes((WIRE_VERSION, 9, 0, 0)) + bytes(14) + b"{}",  # unknown kind
        b"\x80\x04\x95",  # a pickle
    ],
)
def test_undecodable_values_raise_one_error_type(value: bytes) -> None:
    with pytest.raises(UndecodableValueError):
        WireCodec().decode(value)


def test_truncated_compressed_value_is_undecodable() -> None:
    codec = WireCodec(compression_threshold=0)
    value, _ = codec.pack(KIND_SECTION, codec.serialize(load_fixture()))
    with pytest.raises(UndecodableValueError):
        codec.unpack(value[: len(value) // 2])


def test_decompression_bomb_is_refused_before_inflating() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"{" + b" " * (20 * 1024 * 1024) + b"}")
    with pytest.raises(UndecodableValueError, match="over the cap"):
        WireCodec(max_context_bytes=1024 * 1024).decode(v1_envelope(bomb, 1))


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": object()}, "a"),
        ({"services": [{"price": 1}, {"price": Decimal("1.50")}]}, "services[1].price"),
        ({"a": {1, 2}}, "a"),
        ({"big": 2**70}, "big"),
        ({"x": {"y": [1, float("nan")]}}, "x.y[1]"),
        ({"inf": float("-inf")}, "inf"),
    ],
)
def test_values_json_cannot_hold_are_refused_with_their_path(value: Any, path: str) -> None:
    with pytest.raises(InvalidContextError) as info:
        WireCodec().serialize(value)
    assert info.value.path == path
    assert path in str(info.value)


def test_an_encoder_hook_turns_such_types_into_json() -> None:
    def default(value: object) -> object:
        if isinstance(value, Decimal):
            return float(value)
        raise TypeError

    codec = WireCodec(default=default)
    data = codec.serialize({"price": Decimal("1.50"), 1: uuid.UUID(int=1), "at": date(2026, 1, 2)})
    assert orjson.loads(data) == {
        "price": 1.5,
        "1": "00000000-0000-0000-0000-000000000001",
        "at": "2026-01-02",
    }
    with pytest.raises(InvalidContextError, match="NaN"):
        codec.serialize({"price": Decimal("NaN")})


def test_oversized_context_is_refused_with_sizes() -> None:
    with pytest.raises(ContextTooLargeError) as info:
        WireCodec(max_context_bytes=100).serialize({"a": "x" * 200})
    assert info.value.limit == 100
    assert info.value.size > 100
    assert isinstance(info.value, ValueError)
