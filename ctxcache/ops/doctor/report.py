"""The doctor's report: one :class:`Check` per line, its verdict, and sizes for people."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Check", "human_bytes", "verdict"]


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


def verdict(checks: Sequence[Check]) -> str:
    """``3 of 12 checks failed, 2 skipped``: a skipped check is neither a failure nor a pass."""
    failed = sum(check.status == "FAIL" for check in checks)
    skipped = sum(check.status == "SKIP" for check in checks)
    if failed:
        text = f"{failed} of {len(checks)} checks failed"
    elif skipped:
        text = f"all {len(checks) - skipped} checks that ran passed"
    else:
        text = "all checks passed"
    return f"{text}, {skipped} skipped" if skipped else text


def human_bytes(size: float) -> str:
    """``3.0 GB`` style (binary multiples), for people."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
