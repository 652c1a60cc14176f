"""What only the blocking client shows: its wire traffic (the contract is in ``contract/``)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import COMPANY, PHONE
from test_wire import load_fixture

from ctxcache import ContextCache


def test_a_hit_costs_one_round_trip(
    real_cache: ContextCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_cache.set_cached_full_context(PHONE, COMPANY, load_fixture())
    real_cache.get_cached_full_context(PHONE, COMPANY)  # the connection is open now
    sent: list[object] = []
    connection_class = real_cache.client.connection_pool.connection_class
    original = connection_class.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        original(self, command, check_health)

    monkeypatch.setattr(connection_class, "send_packed_command", counting)
    assert real_cache.get_cached_full_context(PHONE, COMPANY) is not None
    assert len(sent) == 1
