"""Where the sample database lives and how to open it: read snapshots and write transactions."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

__all__ = [
    "DEFAULT_DB_ENV",
    "connect",
    "default_db_path",
    "read_snapshot",
    "resolve_path",
    "write_transaction",
]

DEFAULT_DB_ENV = "CTXCACHE_SAMPLE_DB"


def default_db_path() -> Path:
    """``$CTXCACHE_SAMPLE_DB`` if set, else ``.ctxcache-demo/salon.sqlite3``."""
    return Path(os.environ.get(DEFAULT_DB_ENV) or ".ctxcache-demo/salon.sqlite3")


def resolve_path(path: str | Path | None) -> Path:
    """``path``, or :func:`default_db_path` when it is ``None``."""
    return Path(path) if path is not None else default_db_path()


def connect(path: Path, mode: str) -> sqlite3.Connection:
    """A connection in ``mode`` (``ro``, ``rw``); the file must exist."""
    # URI mode keeps sqlite from silently creating an empty file at a wrong path;
    # isolation_level=None lets us issue BEGIN ourselves.
    if not path.exists():
        raise FileNotFoundError(
            f"sample salon database {path} does not exist; create it with create_sample_database()"
        )
    uri = f"{path.resolve().as_uri()}?mode={mode}"
    conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


@contextmanager
def read_snapshot(path: Path) -> Iterator[sqlite3.Connection]:
    """A fresh read-only connection in one read transaction: one consistent snapshot.

    A connection per call is safe from any thread or process.
    """
    with closing(connect(path, "ro")) as conn:
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


@contextmanager
def write_transaction(path: str | Path | None) -> Iterator[sqlite3.Connection]:
    """A write transaction that holds the write lock from its start; committed on success."""
    with closing(connect(resolve_path(path), "rw")) as conn:
        # IMMEDIATE takes the write lock up front, so picking a free slot and taking it
        # cannot race with another writer.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
