"""Who the sample salon's clients are: its VIPs (the warm-up's source) and samples of a company."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from ctxcache.sample_salon.database import connect, default_db_path, resolve_path

__all__ = ["list_vip_clients", "sample_clients", "vip_clients"]


def list_vip_clients(path: str | Path | None = None) -> list[tuple[str, int]]:
    """``(phone, company_id)`` of every VIP client, ordered by company and client id."""
    with closing(connect(resolve_path(path), "ro")) as conn:
        rows = conn.execute(
            "SELECT phone, company_id FROM clients WHERE is_vip = 1 ORDER BY company_id, id"
        )
        return [(row["phone"], row["company_id"]) for row in rows]


def vip_clients() -> list[tuple[str, int]]:
    """VIP clients of the database at :func:`default_db_path` (a ``CTXCACHE_VIP_SOURCE``)."""
    return list_vip_clients(default_db_path())


def sample_clients(path: str | Path | None, company_id: int, limit: int = 10) -> list[str]:
    """Up to ``limit`` client phones of a company, VIPs first."""
    with closing(connect(resolve_path(path), "ro")) as conn:
        rows = conn.execute(
            "SELECT phone FROM clients WHERE company_id = ? ORDER BY is_vip DESC, id LIMIT ?",
            (company_id, limit),
        )
        return [row["phone"] for row in rows]
