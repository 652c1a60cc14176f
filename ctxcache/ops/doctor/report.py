"""The doctor's report: one :class:`Check` per line, and sizes for people."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Check", "human_bytes"]


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's report.

    A passing check may still carry advice in ``fix`` (shown as WARN); a
    ``skipped`` check could not run because an earlier one failed.
    """

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    skipped: bool = False

    @property
    def status(self) -> str:
        if self.skipped:
            return "SKIP"
        if not self.ok:
            return "FAIL"
        return "WARN" if self.fix else "PASS"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def human_bytes(size: float) -> str:
    """``3.0 GB`` style (binary multiples), for people."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
