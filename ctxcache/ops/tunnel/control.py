"""Start, stop and check the developer tunnel: what ``ctxcache tunnel`` and doctor call.

:func:`start_tunnel` launches the supervisor (:mod:`.supervisor`) detached and
waits, bounded, until the local port listens or ssh has failed;
:func:`stop_tunnel` stops only the supervisor its pid file names, after
checking the process is ours; :func:`tunnel_status` answers the three
questions of ``tunnel status``: is the process alive, does the port listen,
does Redis answer PING through it (with the configured password, which is
never printed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

import ctxcache
from ctxcache.errors import ConfigurationError, TunnelError, TunnelNotRunningError
from ctxcache.ops.tunnel.runtime import (
    SUPERVISOR_MODULE,
    TunnelFiles,
    TunnelState,
    is_our_ssh,
    is_our_supervisor,
    port_listening,
    runtime_dir,
)
from ctxcache.settings import CacheSettings

__all__ = [
    "STATUS_NOT_LISTENING",
    "STATUS_NO_PROCESS",
    "STATUS_NO_REDIS",
    "STATUS_OK",
    "TunnelConfig",
    "TunnelStatus",
    "ssh_command",
    "start_tunnel",
    "stop_tunnel",
    "tunnel_status",
]

# `ctxcache tunnel status` exit codes (0-3 keep their meaning across the ctxcache command).
STATUS_OK: Final = 0
STATUS_NO_PROCESS: Final = 4  # no supervisor, or its ssh is not running (reconnecting)
STATUS_NOT_LISTENING: Final = 5  # the local port does not accept connections
STATUS_NO_REDIS: Final = 6  # Redis does not answer PING through the port (or refuses the login)

_ALIVE_COUNT_MAX: Final = 3  # keep-alives missed before ssh gives up and is restarted


@dataclass(frozen=True)
class TunnelConfig:
    """What the tunnel connects, from the ``CTXCACHE_TUNNEL_*`` settings."""

    host: str
    user: str | None
    port: int
    identity: str | None
    redis_host: str
    redis_port: int
    local_port: int
    strict_host_key_checking: str
    known_hosts_file: str | None
    alive_interval: int

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> TunnelConfig:
        """Raises :class:`ConfigurationError` when no bastion host is configured."""
        if not settings.tunnel_host:
            raise ConfigurationError(
                "CTXCACHE_TUNNEL_HOST is not set: name the SSH host (bastion) to tunnel through",
                variable="CTXCACHE_TUNNEL_HOST",
            )
        return cls(
            host=settings.tunnel_host,
            user=settings.tunnel_user,
            port=settings.tunnel_port,
            identity=_expand(settings.tunnel_identity),
            redis_host=settings.tunnel_redis_host,
            redis_port=settings.tunnel_redis_port,
            local_port=settings.tunnel_local_port,
            strict_host_key_checking=settings.tunnel_strict_host_key_checking,
            known_hosts_file=_expand(settings.tunnel_known_hosts_file),
            alive_interval=settings.tunnel_alive_interval,
        )

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def target(self) -> str:
        """``127.0.0.1:6380 -> user@bastion:22 -> 127.0.0.1:6379``, for people."""
        return (
            f"127.0.0.1:{self.local_port} -> {self.destination}:{self.port} -> "
            f"{self.redis_host}:{self.redis_port}"
        )


def _expand(path: str | None) -> str | None:
    return str(Path(path).expanduser()) if path else None


def ssh_command(config: TunnelConfig, ssh: str = "ssh") -> list[str]:
    """The ssh argv: a local forward only, never a prompt, and keep-alives that end a dead link."""
    redis_host = f"[{config.redis_host}]" if ":" in config.redis_host else config.redis_host
    command = [
        ssh,
        "-N",  # no remote command: forwarding only
        "-T",
        "-L",
        f"127.0.0.1:{config.local_port}:{redis_host}:{config.redis_port}",
        "-p",
        str(config.port),
        "-o",
        "BatchMode=yes",  # fail instead of asking for a password or passphrase
        "-o",
        "ExitOnForwardFailure=yes",  # a port that cannot be bound is an error, not a silent tunnel
        "-o",
        f"ServerAliveInterval={config.alive_interval}",
        "-o",
        f"ServerAliveCountMax={_ALIVE_COUNT_MAX}",
        "-o",
        "ConnectTimeout=10",
        "-o",
        f"StrictHostKeyChecking={config.strict_host_key_checking}",
        "-o",
        "ControlPath=none",  # our own connection, never a shared master the supervisor can't watch
    ]
    if config.known_hosts_file:
        command += ["-o", f'UserKnownHostsFile="{config.known_hosts_file}"']
    if config.identity:
        command += ["-i", config.identity, "-o", "IdentitiesOnly=yes"]
    return [*command, "--", config.destination]


# -- start / stop -------------------------------------------------------------------------


def start_tunnel(
    settings: CacheSettings,
    *,
    wait: float = 15.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[TunnelState, bool]:
    """Start the supervised tunnel; ``(state, False)`` once it is up, ``(state, True)`` if it was.

    Raises :class:`ConfigurationError` for missing settings and
    :class:`TunnelError` when the tunnel does not come up within ``wait``
    seconds or ssh fails (its own message included); nothing is left running then.
    """
    config = TunnelConfig.from_settings(settings)
    ssh = shutil.which("ssh")
    if ssh is None:
        raise TunnelError("no ssh command on PATH: install the OpenSSH client")
    files = TunnelFiles(runtime_dir(settings.tunnel_runtime_dir))
    with files.locked():
        running = _running_state(files)
        if running is not None:
            return running, True
        if port_listening(config.local_port):
            raise TunnelError(
                f"127.0.0.1:{config.local_port} is already in use by another program: "
                "stop it or set CTXCACHE_TUNNEL_LOCAL_PORT"
            )
        files.state.unlink(missing_ok=True)
        supervisor = _launch_supervisor(files, config, ssh_command(config, ssh))
        files.write_pid(supervisor.pid)
        try:
            return _await_up(files, supervisor, wait, clock, sleep), False
        except BaseException:
            _end_supervisor(files, supervisor.pid, None)
            files.remove()
            raise


def _launch_supervisor(
    files: TunnelFiles, config: TunnelConfig, command: list[str]
) -> subprocess.Popen[bytes]:
    # The supervisor runs this very checkout of ctxcache, whatever the caller's cwd.
    package_root = str(Path(ctxcache.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    argv = [
        sys.executable,
        "-m",
        SUPERVISOR_MODULE,
        "--runtime-dir",
        str(files.directory),
        "--local-port",
        str(config.local_port),
        "--target",
        config.target,
        "--",
        *command,
    ]
    with files.log.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            env=env,
            start_new_session=True,  # outlives the shell that started it; no terminal signals
        )


def _await_up(
    files: TunnelFiles,
    supervisor: subprocess.Popen[bytes],
    wait: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> TunnelState:
    deadline = clock() + wait
    while True:
        state = files.read_state()
        mine = state if state is not None and state.supervisor_pid == supervisor.pid else None
        if mine is not None and mine.phase == "up":
            return mine
        if mine is not None and mine.phase == "waiting":  # the first ssh already failed
            raise TunnelError(f"the tunnel did not come up: {mine.last_error}")
        if supervisor.poll() is not None:
            raise TunnelError(
                f"the tunnel supervisor exited with status {supervisor.returncode}; see {files.log}"
            )
        if clock() >= deadline:
            raise TunnelError(f"the tunnel did not come up within {wait:g} s; see {files.log}")
        sleep(0.05)


def stop_tunnel(settings: CacheSettings, *, timeout: float = 10.0) -> int:
    """Stop the tunnel ``start`` started and remove its files; returns the supervisor's pid.

    Raises :class:`TunnelNotRunningError` when no tunnel of ours is running
    (stale files are removed); a process that is not our supervisor is never signalled.
    """
    files = TunnelFiles(runtime_dir(settings.tunnel_runtime_dir))
    with files.locked():
        pid = files.read_pid()
        if pid is None:
            raise TunnelNotRunningError(f"no tunnel is running (no pid file in {files.directory})")
        state = files.read_state()
        if not is_our_supervisor(pid, files.directory):
            files.remove()
            raise TunnelNotRunningError(
                f"no tunnel is running: process {pid} in the pid file is gone or not a "
                "ctxcache tunnel; removed the stale pid file"
            )
        _end_supervisor(files, pid, state, timeout=timeout)
        files.remove()
        return pid


def _end_supervisor(
    files: TunnelFiles, pid: int, state: TunnelState | None, *, timeout: float = 10.0
) -> None:
    """SIGTERM the supervisor (it ends its ssh), SIGKILL it if it lingers; then any leftover ssh."""
    _signal_and_wait(pid, lambda: is_our_supervisor(pid, files.directory), timeout)
    last = files.read_state() or state
    if last is not None and last.ssh_pid is not None:
        ssh_pid, command = last.ssh_pid, last.ssh_command
        _signal_and_wait(ssh_pid, lambda: is_our_ssh(ssh_pid, command), timeout)


def _signal_and_wait(pid: int, ours: Callable[[], bool], timeout: float) -> None:
    for number, patience in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not ours():
            return
        try:
            os.kill(pid, number)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + patience
        while ours() and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.02)
    _reap(pid)


def _reap(pid: int) -> None:
    # A supervisor started by this very process is its child: collect it, not leave a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _running_state(files: TunnelFiles) -> TunnelState | None:
    """The running tunnel's state; stale files (no live supervisor of ours) are removed."""
    pid = files.read_pid()
    if pid is not None and is_our_supervisor(pid, files.directory):
        return files.read_state() or TunnelState(
            supervisor_pid=pid, local_port=0, target="?", ssh_command=[], phase="starting"
        )
    files.remove()
    return None


# -- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TunnelStatus:
    """The answer of ``ctxcache tunnel status`` (and of doctor in development).

    ``code`` is the first failed check: 4 no process, 5 port not listening,
    6 no Redis; 0 when all three pass.
    """

    local_port: int
    runtime_dir: str
    supervisor_pid: int | None
    supervisor_alive: bool
    ssh_pid: int | None
    ssh_alive: bool
    phase: str | None
    restarts: int
    last_error: str | None
    listening: bool
    redis_ok: bool
    redis_detail: str

    @property
    def code(self) -> int:
        if not (self.supervisor_alive and self.ssh_alive):
            return STATUS_NO_PROCESS
        if not self.listening:
            return STATUS_NOT_LISTENING
        if not self.redis_ok:
            return STATUS_NO_REDIS
        return STATUS_OK

    @property
    def ok(self) -> bool:
        return self.code == STATUS_OK

    @property
    def summary(self) -> str:
        """One line for people: what works, and the first thing that does not."""
        port = f"127.0.0.1:{self.local_port}"
        if not self.supervisor_alive:
            process = "no tunnel process is running (ctxcache tunnel start)"
        elif not self.ssh_alive:
            process = f"ssh is down, the supervisor is reconnecting (restarts: {self.restarts})"
            if self.last_error:
                process += f"; last error: {self.last_error}"
        else:
            process = f"ssh pid {self.ssh_pid} running"
            if self.restarts:
                process += f" (restarts: {self.restarts}, last error: {self.last_error})"
        listening = f"{port} listening" if self.listening else f"nothing listens on {port}"
        return f"{process}; {listening}; Redis: {self.redis_detail}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "code": self.code, "ok": self.ok, "summary": self.summary}


def tunnel_status(settings: CacheSettings, *, timeout: float = 2.0) -> TunnelStatus:
    """Check the tunnel: the supervisor and its ssh, the local port, PING through it.

    The port and PING are checked even when no tunnel of ours runs (another
    tool's tunnel may serve the port); ``code`` still reports the process.
    Creates nothing; raises :class:`TunnelError` only for an unsafe runtime directory.
    """
    files = TunnelFiles(runtime_dir(settings.tunnel_runtime_dir, create=False))
    pid = files.read_pid()
    state = files.read_state()
    supervisor_alive = pid is not None and is_our_supervisor(pid, files.directory)
    if not supervisor_alive or (state is not None and state.supervisor_pid != pid):
        state = None  # left over from a tunnel that is gone
    ssh_pid = state.ssh_pid if state is not None else None
    ssh_alive = ssh_pid is not None and state is not None and is_our_ssh(ssh_pid, state.ssh_command)
    local_port = state.local_port if state is not None else settings.tunnel_local_port
    listening = port_listening(local_port, timeout=timeout)
    redis_ok, detail = _ping(settings, local_port, timeout) if listening else (False, "not checked")
    return TunnelStatus(
        local_port=local_port,
        runtime_dir=str(files.directory),
        supervisor_pid=pid if supervisor_alive else None,
        supervisor_alive=supervisor_alive,
        ssh_pid=ssh_pid if ssh_alive else None,
        ssh_alive=ssh_alive,
        phase=state.phase if state is not None else None,
        restarts=state.restarts if state is not None else 0,
        last_error=state.last_error if state is not None else None,
        listening=listening,
        redis_ok=redis_ok,
        redis_detail=detail,
    )


def _ping(settings: CacheSettings, port: int, timeout: float) -> tuple[bool, str]:
    """PING Redis on the tunnel's port, logged in as the cache would be."""
    url = urlsplit(settings.effective_redis_url)
    password: str | None = unquote(url.password) if url.password is not None else None
    if password is None and settings.redis_password is not None:
        password = settings.redis_password.get_secret_value()
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        username=unquote(url.username) if url.username else settings.redis_username,
        password=password or None,  # REDIS_PASSWORD= (empty) means none
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # a refused login is an answer: no retries with backoff
    )
    try:
        client.ping()
    except redis_errors.AuthenticationError as exc:
        return False, f"refused the login ({exc}): set REDIS_PASSWORD or the URL's password"
    except redis_errors.ResponseError as exc:
        return False, f"answered PING with an error: {exc}"
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        return False, (
            f"no answer through the tunnel ({exc}): is Redis running at the address "
            "the bastion forwards to (CTXCACHE_TUNNEL_REDIS_HOST/PORT)?"
        )
    except redis_errors.RedisError as exc:
        return False, f"does not answer as Redis: {exc}"
    finally:
        client.close()
    auth = " (authenticated)" if password else ""
    return True, f"answers PING{auth}"
