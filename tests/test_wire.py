from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from ctxcache import ContextTooLargeError, InvalidContextError, UndecodableValueError
from ctxcache.core.wire import MAGIC, WIRE_VERSION, WireCodec

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


@given(contexts, st.sampled_from([0, 64, 1024, 10**9]))
def test_envelope_round_trip(context: dict[str, Any], threshold: int) -> None:
    codec = WireCodec(compression_threshold=threshold)
    value = codec.encode(context)
    assert value.startswith(MAGIC)
    assert value[len(MAGIC)] == WIRE_VERSION
    assert codec.decode(value) == context


def test_fixture_shrinks_by_at_least_70_percent() -> None:
    context = load_fixture()
    raw = orjson.dumps(context)
    value = WireCodec().encode(context)
    assert len(value) <= 0.30 * len(raw), f"{len(value)} of {len(raw)} bytes"
    assert WireCodec().decode(value) == context


def test_small_values_are_not_compressed() -> None:
    value = WireCodec(compression_threshold=1024).encode({"a": 1})
    assert value == MAGIC + bytes((WIRE_VERSION, 0)) + b'{"a":1}'


def test_plain_json_from_another_service_is_read() -> None:
    context = load_fixture()
    node_style = json.dumps(context, ensure_ascii=False).encode()  # JSON.stringify
    assert WireCodec().decode(node_style) == context
    assert WireCodec().decode(b'  {"a": [1, 2]}\n') == {"a": [1, 2]}


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"a string"',
        MAGIC,
        MAGIC + bytes((WIRE_VERSION,)),
        MAGIC + bytes((99, 0)) + b"{}",  # unknown version
        MAGIC + bytes((WIRE_VERSION, 7)) + b"{}",  # unknown encoding
        MAGIC + bytes((WIRE_VERSION, 1)) + b"garbage",  # bad zstd frame
        MAGIC + bytes((WIRE_VERSION, 0)) + b"\xff\xfe{",  # bad UTF-8
        b"\x80\x04\x95",  # a pickle
    ],
)
def test_undecodable_values_raise_one_error_type(value: bytes) -> None:
    with pytest.raises(UndecodableValueError):
        WireCodec().decode(value)


def test_truncated_compressed_value_is_undecodable() -> None:
    value = WireCodec(compression_threshold=0).encode(load_fixture())
    with pytest.raises(UndecodableValueError):
        WireCodec().decode(value[: len(value) // 2])


def test_decompression_bomb_is_refused_before_inflating() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"{" + b" " * (20 * 1024 * 1024) + b"}")
    value = MAGIC + bytes((WIRE_VERSION, 1)) + bomb
    with pytest.raises(UndecodableValueError, match="over the cap"):
        WireCodec(max_context_bytes=1024 * 1024).decode(value)


@pytest.mark.parametrize("context", [[1, 2], "text", 42, None, b"{}"])
def test_non_objects_are_refused(context: Any) -> None:
    with pytest.raises(InvalidContextError, match="JSON object"):
        WireCodec().encode(context)


@pytest.mark.parametrize(
    "context", [{"a": object()}, {1: "non-str key"}, {"a": {1, 2}}, {"big": 2**70}]
)
def test_unencodable_values_are_refused(context: Any) -> None:
    with pytest.raises(InvalidContextError, match="cannot be encoded"):
        WireCodec().encode(context)


def test_oversized_context_is_refused_with_sizes() -> None:
    with pytest.raises(ContextTooLargeError) as info:
        WireCodec(max_context_bytes=100).encode({"a": "x" * 200})
    assert info.value.limit == 100
    assert info.value.size > 100
    assert isinstance(info.value, ValueError)
