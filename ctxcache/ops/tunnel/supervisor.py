"""The tunnel's supervisor: keeps one ssh running and restarts it, backing off, when it drops.

``ctxcache tunnel start`` runs it detached, in a session of its own::

    python -m ctxcache.ops.tunnel.supervisor --runtime-dir DIR --local-port N --target T -- ssh ...

It rewrites the state file on every change (ssh started, port listening, ssh
exited and why, the next delay) and exits, taking ssh with it, on SIGTERM,
SIGINT or SIGHUP. The loop, :class:`Supervisor`, is given its clock, its wait,
how to spawn ssh and how to test the port, so tests drive it without processes
or sleeping.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ctxcache.ops.tunnel.runtime import TunnelFiles, TunnelState, port_listening

__all__ = ["Backoff", "SshProcess", "Supervisor", "main", "spawn_ssh"]

logger = logging.getLogger("ctxcache.tunnel")

LOG_LIMIT = 1 << 20  # the log is emptied before an attempt once it passes 1 MiB
_PR_SET_PDEATHSIG = 1


@dataclass
class Backoff:
    """Capped exponential delays between ssh attempts: ``initial * factor**n``, at most ``maximum``.

    A connection that lived ``stable_after`` seconds or more counts as a
    success: the next delay starts again from ``initial``. A tunnel that keeps
    failing at once is retried ever more slowly, never faster than ``maximum``.
    """

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    stable_after: float = 10.0
    failures: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")

    def after_exit(self, uptime: float) -> float:
        """The delay before the next attempt, given how long the last ssh ran."""
        if uptime >= self.stable_after:
            self.failures = 0
        delay = min(self.maximum, self.initial * self.factor**self.failures)
        if delay < self.maximum:  # stop counting once capped: no float overflow, ever
            self.failures += 1
        return delay


class SshProcess(Protocol):
    """The part of :class:`subprocess.Popen` the supervisor uses."""

    @property
    def pid(self) -> int: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...


Spawn = Callable[[list[str], Path], SshProcess]


class Supervisor:
    """Runs ``state.ssh_command`` until :meth:`request_stop`; see the module docstring."""

    def __init__(
        self,
        files: TunnelFiles,
        state: TunnelState,
        *,
        backoff: Backoff | None = None,
        spawn: Spawn | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        wait: Callable[[float], object] | None = None,
        listening: Callable[[int], bool] = port_listening,
        poll_interval: float = 0.2,
    ) -> None:
        self.files = files
        self.state = state
        self.backoff = backoff or Backoff()
        self._spawn = spawn or spawn_ssh
        self._clock = clock
        self._wall_clock = wall_clock
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._listening = listening
        self._poll_interval = poll_interval
        self._process: SshProcess | None = None

    def request_stop(self) -> None:
        """Stop: end the current ssh and the loop. Safe to call from a signal handler."""
        self._stop.set()
        process = self._process
        if process is not None:
            process.terminate()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Start ssh, watch it, restart it after a backoff; until asked to stop."""
        first = True
        while not self.stopping:
            if not first:
                self.state.restarts += 1
            first = False
            self._trim_log()
            log_offset = self._log_size()
            started = self._clock()
            process = self._spawn(self.state.ssh_command, self.files.log)
            self._process = process
            if self.stopping:  # the stop arrived while ssh was being spawned
                process.terminate()
            self._save(phase="connecting", ssh_pid=process.pid, retry_in=None)
            logger.info("ssh started (pid %d): %s", process.pid, self.state.target)
            code = self._watch(process)
            self._process = None
            if self.stopping:
                break
            delay = self.backoff.after_exit(self._clock() - started)
            error = self._describe_exit(code, log_offset)
            self._save(phase="waiting", ssh_pid=None, last_error=error, retry_in=delay)
            logger.warning("%s; next attempt in %g s", error, delay)
            self._wait(delay)
        self._save(phase="stopped", ssh_pid=None, retry_in=None)
        logger.info("stopped")

    def _watch(self, process: SshProcess) -> int:
        """Wait for ssh to exit, marking the tunnel up once its local port listens."""
        while self.state.phase != "up":
            try:
                return process.wait(timeout=self._poll_interval)
            except subprocess.TimeoutExpired:
                if self._listening(self.state.local_port):
                    self._save(phase="up")
                    logger.info("tunnel up on 127.0.0.1:%d", self.state.local_port)
        return process.wait()

    def _save(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.state, name, value)
        self.state.updated_at = self._wall_clock()
        self.files.write_state(self.state)

    def _log_size(self) -> int:
        try:
            return self.files.log.stat().st_size
        except FileNotFoundError:
            return 0

    def _trim_log(self) -> None:
        if self._log_size() > LOG_LIMIT:
            with self.files.log.open("r+b") as log:
                log.truncate(0)

    def _describe_exit(self, code: int, log_offset: int) -> str:
        """ssh's exit as one line: the signal that killed it, or its last error message."""
        if code < 0:
            return f"ssh was killed by {signal.Signals(-code).name}"
        try:
            with self.files.log.open("rb") as log:
                log.seek(log_offset)
                written = log.read(64 * 1024).decode(errors="replace")
        except FileNotFoundError:
            written = ""
        lines = [
            line.strip()
            for line in written.splitlines()
            # accept-new's notice and the supervisor's own lines are not ssh's error.
            if line.strip() and not line.startswith(("Warning: Permanently added", "supervisor "))
        ]
        if lines:
            return f"{lines[-1][:300]} (ssh exit status {code})"
        return f"ssh exited with status {code}"


def spawn_ssh(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ssh with its stderr appended to ``log``; on Linux it dies with its supervisor."""
    preexec = _die_with_parent() if sys.platform.startswith("linux") else None
    with log.open("ab") as stderr:
        return subprocess.Popen(  # noqa: S603 - the argv was built by ssh_command()
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=preexec,  # safe: the supervisor has no other threads
        )


def _die_with_parent() -> Callable[[], None] | None:
    # If the supervisor is SIGKILLed, its ssh must not live on holding the port.
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return None

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return set_parent_death_signal


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__)
    parser.add_argument("--runtime-dir", required=True, type=Path)
    parser.add_argument("--local-port", required=True, type=int)
    parser.add_argument("--target", required=True, help="what the tunnel connects, for people")
    parser.add_argument("--backoff-initial", type=float, default=1.0)
    parser.add_argument("--backoff-max", type=float, default=60.0)
    parser.add_argument("ssh_command", nargs="+", help="the ssh command, after --")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="supervisor %(asctime)s %(message)s"
    )
    state = TunnelState(
        supervisor_pid=os.getpid(),
        local_port=args.local_port,
        target=args.target,
        ssh_command=list(args.ssh_command),
        started_at=time.time(),
    )
    supervisor = Supervisor(
        TunnelFiles(args.runtime_dir),
        state,
        backoff=Backoff(initial=args.backoff_initial, maximum=args.backoff_max),
    )
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda *_: supervisor.request_stop())
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
