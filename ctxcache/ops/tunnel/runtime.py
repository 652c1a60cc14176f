"""Where a tunnel keeps its pid, state and log files, and how its processes are recognized.

One tunnel per runtime directory: ``CTXCACHE_TUNNEL_RUNTIME_DIR``, else
``$XDG_RUNTIME_DIR/ctxcache``, else ``<tmp>/ctxcache-<uid>``. The directory is
private (0700, owned by the user): a directory another user could write to
would let them plant a pid file that makes ``stop`` signal their process.

A process is only treated as ours when ``/proc/<pid>/cmdline`` says so: the
supervisor's names its module and this runtime directory, the ssh's is exactly
the command the state file recorded. A pid reused by an unrelated process is
never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from ctxcache.errors import TunnelError

__all__ = [
    "SUPERVISOR_MODULE",
    "TunnelFiles",
    "TunnelState",
    "is_our_ssh",
    "is_our_supervisor",
    "port_listening",
    "process_command",
    "runtime_dir",
]

SUPERVISOR_MODULE = "ctxcache.ops.tunnel.supervisor"
_PROC = Path("/proc")
_ELSEWHERE = "set CTXCACHE_TUNNEL_RUNTIME_DIR to a private directory"


def runtime_dir(configured: str | None = None, *, create: bool = True) -> Path:
    """The private directory for the tunnel's files, created (0700) when missing.

    With ``create=False`` a missing directory is returned as it is (nothing runs there).
    Raises :class:`TunnelError` for a directory that is not private to this user.
    """
    if configured:
        directory = Path(configured).expanduser()
    elif os.environ.get("XDG_RUNTIME_DIR"):
        directory = Path(os.environ["XDG_RUNTIME_DIR"]) / "ctxcache"
    else:
        directory = Path(tempfile.gettempdir()) / f"ctxcache-{os.getuid()}"
    if not create and not directory.exists():
        return directory.absolute()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise TunnelError(f"{directory} is not a directory; {_ELSEWHERE}")
    if info.st_uid != os.getuid():
        raise TunnelError(f"{directory} belongs to another user; {_ELSEWHERE}")
    if info.st_mode & 0o022:
        raise TunnelError(f"{directory} is writable by other users: chmod 700 it")
    return directory.resolve()


@dataclass
class TunnelState:
    """What the supervisor reports in ``tunnel.json``; rewritten atomically on every change.

    ``phase`` is ``connecting`` (ssh started, port not yet listening), ``up``,
    ``waiting`` (ssh exited, backing off before the next attempt) or ``stopped``.
    """

    supervisor_pid: int
    local_port: int
    target: str
    ssh_command: list[str]
    phase: str = "connecting"
    ssh_pid: int | None = None
    restarts: int = 0
    last_error: str | None = None
    retry_in: float | None = None
    started_at: float = 0.0
    updated_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TunnelState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TunnelFiles:
    """The paths of one tunnel's files in its runtime directory."""

    directory: Path

    @property
    def pid(self) -> Path:
        return self.directory / "tunnel.pid"

    @property
    def state(self) -> Path:
        return self.directory / "tunnel.json"

    @property
    def log(self) -> Path:
        return self.directory / "tunnel.log"

    @property
    def lock(self) -> Path:
        return self.directory / "tunnel.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held by ``start`` and ``stop``, so two of them never race on the pid file."""
        with self.lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_pid(self) -> int | None:
        try:
            text = self.pid.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() and int(text) > 0 else None

    def write_pid(self, pid: int) -> None:
        _write_atomically(self.pid, f"{pid}\n".encode())

    def read_state(self) -> TunnelState | None:
        """The last state written, or ``None`` when there is none or it is unreadable."""
        try:
            data = orjson.loads(self.state.read_bytes())
            return TunnelState.from_dict(data) if isinstance(data, dict) else None
        except (FileNotFoundError, orjson.JSONDecodeError, TypeError):
            return None

    def write_state(self, state: TunnelState) -> None:
        _write_atomically(self.state, orjson.dumps(state.as_dict(), option=orjson.OPT_INDENT_2))

    def remove(self) -> None:
        """Remove the pid and state files (the log stays, for the post-mortem)."""
        for path in (self.pid, self.state):
            path.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    # Readers never see half a file: write a sibling, then rename over.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def process_command(pid: int) -> str | None:
    """A live process's command line, arguments joined by spaces; ``None`` if it is gone.

    Read from ``/proc`` (Linux); elsewhere from ``ps``. Zombies count as gone.
    """
    if _PROC.is_dir():
        try:
            raw = (_PROC / str(pid) / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        # Zombies and kernel threads have an empty command line.
        return raw.rstrip(b"\0").decode(errors="replace").replace("\0", " ") or None
    ps = shutil.which("ps")
    if ps is None:
        return None
    result = subprocess.run(  # noqa: S603 - a fixed argv, no shell
        [ps, "-ww", "-o", "stat=", "-o", "command=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    status, _, command = result.stdout.strip().partition(" ")
    if result.returncode != 0 or "Z" in status:
        return None
    return command.strip() or None


def is_our_supervisor(pid: int, directory: Path) -> bool:
    """``pid`` runs this package's supervisor for ``directory``."""
    command = process_command(pid)
    if command is None:
        return False
    return SUPERVISOR_MODULE in command.split() and f"--runtime-dir {directory} " in command + " "


def is_our_ssh(pid: int, ssh_command: list[str]) -> bool:
    """``pid`` runs exactly the ssh command the supervisor recorded."""
    return process_command(pid) == " ".join(ssh_command)


def port_listening(port: int, timeout: float = 0.5) -> bool:
    """Something accepts TCP connections on ``127.0.0.1:port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False
