"""What the demo's parts share: its namespace, its error, timing, tables and a recording loader."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from rich import box
from rich.table import Table

from ctxcache import sample_salon as salon

__all__ = [
    "NAMESPACE",
    "QUEUES",
    "TASK_TIMEOUT",
    "DemoError",
    "LoaderCall",
    "RecordingLoader",
    "ms",
    "table",
    "timed",
    "wait",
]

T = TypeVar("T")
# Every key the demo writes to a real server starts with this (or is a hash tag
# "{ctxcache-demo:...}"): cache and Redis broker alike.
NAMESPACE: Final = "ctxcache-demo:"
QUEUES: Final = ["ctxcache.invalidate", "ctxcache.warmup"]
TASK_TIMEOUT: Final = 30.0


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


def ms(seconds: float) -> str:
    """``12.3 ms`` under a second, ``1.23 s`` above."""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def table(*headers: str) -> Table:
    return Table(*headers, box=box.SIMPLE_HEAVY, show_edge=False)  # fits 80 columns, logs well


def timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def wait(predicate: Callable[[], bool], what: str, every: float = 0.0005) -> float:
    """Poll ``predicate`` until true: the seconds it took, or DemoError after TASK_TIMEOUT."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > TASK_TIMEOUT:
            raise DemoError(f"timed out after {TASK_TIMEOUT:.0f} s waiting for {what}")
        time.sleep(every)
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class LoaderCall:
    """One call the cache made to the loader: which part, and the database time it took."""

    part: str  # "client" or "company"
    sections: tuple[str, ...]  # the company sections asked for
    seconds: float


class RecordingLoader:
    """The sample salon's sectioned loader, recording each call the cache makes to it.

    The demo shows with it which parts a load had to fetch from the database,
    and how long that took. Calling it loads the whole context, unrecorded.
    """

    def __init__(self, db: Path) -> None:
        self.inner = salon.SqlContextLoader(db)
        self.calls: list[LoaderCall] = []

    def __call__(self, phone: str, company_id: int) -> dict[str, Any]:
        return self.inner(phone, company_id)

    def load_client(self, phone: str, company_id: int) -> dict[str, Any]:
        part, seconds = timed(lambda: self.inner.load_client(phone, company_id))
        self.calls.append(LoaderCall("client", (), seconds))
        return part

    def load_company_sections(self, company_id: int, sections: Sequence[str]) -> dict[str, Any]:
        found, seconds = timed(lambda: self.inner.load_company_sections(company_id, sections))
        self.calls.append(LoaderCall("company", tuple(sections), seconds))
        return found

    def take(self) -> list[LoaderCall]:
        """The calls since the last take."""
        calls, self.calls = self.calls, []
        return calls
