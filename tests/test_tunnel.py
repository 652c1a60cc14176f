"""``ctxcache tunnel`` for real: an OpenSSH server and a password-protected Redis on loopback.

The module starts its own ``sshd -D -e`` (a non-daemon child, host and user
keys generated here, on a free 127.0.0.1 port) and a ``redis-server
--requirepass`` behind it on another port; the tunnel forwards a third free
port to that Redis through the sshd. Every command runs as a subprocess
(``python -m ctxcache.ops.cli tunnel ...``), as from a shell.

Each test's tunnel lives in its own runtime directory; the fixture kills
whatever processes it recorded, even when the test failed. Waits poll with a
bounded deadline. Without ``/usr/sbin/sshd`` the tests skip, and fail with
``CI=true`` (``.ci/run`` installs openssh-server).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from conftest import IN_CI, free_port
from worker_support import REPO, wait_until

from ctxcache.ops.tunnel.runtime import (
    SUPERVISOR_MODULE,
    TunnelFiles,
    TunnelState,
    is_our_ssh,
    is_our_supervisor,
    port_listening,
    process_command,
)

pytestmark = pytest.mark.integration

PASSWORD = "tunnel-Pa55-w0rd"
WRONG_PASSWORD = "not-the-Pa55"
SSHD = "/usr/sbin/sshd"


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} (CI=true: .ci/run installs it)")
    pytest.skip(what)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass(frozen=True)
class Bastion:
    port: int
    user: str
    key: Path
    directory: Path


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bastion]:
    """A private sshd on 127.0.0.1 that accepts one key generated here."""
    keygen = shutil.which("ssh-keygen")
    if not Path(SSHD).is_file() or keygen is None or shutil.which("ssh") is None:
        _missing(f"OpenSSH ({SSHD}, ssh, ssh-keygen) is not installed")
    directory = tmp_path_factory.mktemp("bastion")
    for name in ("host_key", "user_key"):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)], check=True
        )
    shutil.copy(directory / "user_key.pub", directory / "authorized_keys")
    try:  # sshd insists on its privilege-separation directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    except PermissionError:
        _missing("/run/sshd is missing and cannot be created by this user")
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\n"
        f"HostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "AllowTcpForwarding yes\nPermitTTY no\nX11Forwarding no\n"
    )
    log = (directory / "sshd.log").open("wb")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, start_new_session=True
    )
    log.close()
    try:
        wait_until(lambda: process.poll() is not None or port_listening(port), 10, "sshd to listen")
        assert process.poll() is None, (directory / "sshd.log").read_text()
        yield Bastion(port, getpass.getuser(), directory / "user_key", directory)
    finally:
        _end(process)


@pytest.fixture(scope="module")
def redis_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server with --requirepass on its own loopback port; returns the port."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server is not installed")
    directory = tmp_path_factory.mktemp("redis-behind")
    port = free_port()
    options = ["--save", "", "--appendonly", "no", "--dir", str(directory), "--logfile", ""]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD, *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=0.2)
    try:

        def answers() -> bool:
            with contextlib.suppress(redis.ConnectionError):
                return bool(client.ping())
            return False

        wait_until(answers, 10, "the Redis behind the bastion")
        yield port
    finally:
        client.close()
        _end(process)


@dataclass
class Tunnel:
    """One test's tunnel settings, and the processes it saw, for the clean-up."""

    env: dict[str, str]
    files: TunnelFiles
    local_port: int
    seen: list[tuple[int, list[str] | None]]

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``ctxcache tunnel ARGS`` in a subprocess; no output may ever contain a password."""
        full_env = {**self.env, **env}
        result = subprocess.run(
            [sys.executable, "-m", "ctxcache.ops.cli", "tunnel", *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=REPO,
            timeout=60,
        )
        for secret in (PASSWORD, WRONG_PASSWORD):
            assert secret not in result.stdout + result.stderr
        self.remember()
        return result

    def state(self) -> TunnelState:
        """The state file of a tunnel that is up (ssh running)."""
        state = self.files.read_state()
        assert state is not None, "no state file"
        assert state.ssh_pid is not None, state
        return state

    def status(self, **env: str) -> tuple[int, dict[str, object]]:
        result = self.run("status", "--json", **env)
        return result.returncode, json.loads(result.stdout)

    def remember(self) -> None:
        pid = self.files.read_pid()
        if pid is not None:
            self.seen.append((pid, None))
        state = self.files.read_state()
        if state is not None and state.ssh_pid is not None:
            self.seen.append((state.ssh_pid, state.ssh_command))

    def kill_leftovers(self) -> None:
        self.remember()
        # Supervisors first (their ssh dies with them), then any ssh still there.
        for pid, command in sorted(self.seen, key=lambda seen: seen[1] is not None):
            ours = is_our_supervisor(pid, self.files.directory) if command is None else None
            if ours or (command is not None and is_our_ssh(pid, command)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def tunnel(bastion: Bastion, redis_behind: int, tmp_path: Path) -> Iterator[Tunnel]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXCACHE_")}
    env.pop("REDIS_PASSWORD", None)
    local_port = free_port()
    runtime = tmp_path / "run"
    env.update(
        CTXCACHE_TUNNEL_HOST="127.0.0.1",
        CTXCACHE_TUNNEL_USER=bastion.user,
        CTXCACHE_TUNNEL_PORT=str(bastion.port),
        CTXCACHE_TUNNEL_IDENTITY=str(bastion.key),
        CTXCACHE_TUNNEL_KNOWN_HOSTS_FILE=str(tmp_path / "known_hosts"),
        CTXCACHE_TUNNEL_REDIS_PORT=str(redis_behind),
        CTXCACHE_TUNNEL_LOCAL_PORT=str(local_port),
        CTXCACHE_TUNNEL_RUNTIME_DIR=str(runtime),
        REDIS_PASSWORD=PASSWORD,
        PYTHONPATH=str(REPO),
    )
    made = Tunnel(env, TunnelFiles(runtime), local_port, [])
    try:
        yield made
    finally:
        made.kill_leftovers()
        log = runtime / "tunnel.log"
        if log.exists():
            assert PASSWORD not in log.read_text()


def gone(pid: int) -> bool:
    return process_command(pid) is None


def test_start_status_stop(tunnel: Tunnel) -> None:
    started = tunnel.run("start")
    assert started.returncode == 0, started.stderr
    assert f"tunnel up: 127.0.0.1:{tunnel.local_port} -> " in started.stdout
    state = tunnel.state()
    assert state.phase == "up"
    supervisor_pid, ssh_pid = state.supervisor_pid, state.ssh_pid
    assert tunnel.files.read_pid() == supervisor_pid

    code, status = tunnel.status()
    assert code == 0, status
    for check in ("supervisor_alive", "ssh_alive", "listening", "redis_ok"):
        assert status[check] is True, check
    assert status["ssh_pid"] == ssh_pid
    assert "answers PING (authenticated)" in str(status["summary"])
    people = tunnel.run("status")
    assert people.returncode == 0
    assert people.stdout.startswith("ok: ")

    # The forward is a working Redis connection.
    client = redis.Redis(port=tunnel.local_port, password=PASSWORD, socket_timeout=5)
    assert client.set("tunnel:probe", "through ssh")
    assert client.get("tunnel:probe") == b"through ssh"
    client.delete("tunnel:probe")
    client.close()

    again = tunnel.run("start")
    assert again.returncode == 0
    assert "already running" in again.stdout
    assert str(supervisor_pid) in again.stdout
    assert tunnel.files.read_pid() == supervisor_pid

    stopped = tunnel.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"supervisor pid {supervisor_pid}" in stopped.stdout
    wait_until(lambda: gone(supervisor_pid) and gone(ssh_pid), 5, "the tunnel's processes to end")
    assert not tunnel.files.pid.exists()
    assert not tunnel.files.state.exists()
    assert not port_listening(tunnel.local_port)

    again = tunnel.run("stop")
    assert again.returncode == 1
    assert "no tunnel is running" in again.stderr
    code, status = tunnel.status()
    assert code == 4
    assert status["supervisor_alive"] is False
    assert status["listening"] is False


def test_status_checks_the_password(tunnel: Tunnel) -> None:
    assert tunnel.run("start").returncode == 0

    code, status = tunnel.status(REDIS_PASSWORD=WRONG_PASSWORD)
    assert code == 6
    assert status["listening"] is True
    assert status["redis_ok"] is False
    assert "refused the login" in str(status["redis_detail"])

    code, status = tunnel.status(REDIS_PASSWORD="")
    assert code == 6
    assert "refused the login" in str(status["redis_detail"])

    # The password may come from the URL instead (and stays out of the output too).
    url = f"redis://:{PASSWORD}@localhost:{tunnel.local_port}/0"
    code, status = tunnel.status(REDIS_PASSWORD="", CTXCACHE_REDIS_URL=url)
    assert code == 0, status

    people = tunnel.run("status", REDIS_PASSWORD=WRONG_PASSWORD)
    assert people.returncode == 6
    assert people.stdout.startswith("FAIL: ")
    assert tunnel.run("stop").returncode == 0


def test_a_killed_ssh_is_re_established(tunnel: Tunnel) -> None:
    assert tunnel.run("start").returncode == 0
    killed = tunnel.state().ssh_pid

    os.kill(killed, signal.SIGKILL)
    began = time.monotonic()

    def back_up() -> bool:
        now = tunnel.files.read_state()
        return now is not None and now.phase == "up" and now.ssh_pid not in (None, killed)

    took = wait_until(back_up, 20, "the supervisor to re-establish the tunnel")
    code, status = tunnel.status()
    assert code == 0, status
    assert status["restarts"] == 1
    assert status["last_error"] == "ssh was killed by SIGKILL"
    assert status["ssh_pid"] != killed
    assert gone(killed)
    # The first retry after a drop waits the initial backoff (1 s), then ssh reconnects.
    assert time.monotonic() - began < 10, took
    assert tunnel.run("stop").returncode == 0


def test_a_killed_supervisor_takes_its_ssh_along(tunnel: Tunnel) -> None:
    assert tunnel.run("start").returncode == 0
    state = tunnel.state()
    os.kill(state.supervisor_pid, signal.SIGKILL)
    ssh_pid = state.ssh_pid
    wait_until(lambda: gone(ssh_pid), 10, "ssh to die with its supervisor")

    code, _ = tunnel.status()
    assert code == 4
    # The stale pid file does not block a new start.
    restarted = tunnel.run("start")
    assert restarted.returncode == 0, restarted.stderr
    assert "tunnel up" in restarted.stdout
    assert tunnel.run("stop").returncode == 0


def test_a_refused_key_fails_the_start_with_ssh_s_message(tunnel: Tunnel, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    result = tunnel.run("start", CTXCACHE_TUNNEL_IDENTITY=str(stranger))
    assert result.returncode == 1
    assert "the tunnel did not come up" in result.stderr
    assert "Permission denied (publickey)" in result.stderr
    assert not tunnel.files.pid.exists()
    assert not tunnel.files.state.exists()
    wait_until(lambda: not _supervisors_for(tunnel.files.directory), 5, "no supervisor left")

    as_json = tunnel.run("start", "--json", CTXCACHE_TUNNEL_IDENTITY=str(stranger))
    assert as_json.returncode == 1
    assert "Permission denied" in json.loads(as_json.stdout)["error"]


def test_start_refuses_a_local_port_in_use(tunnel: Tunnel) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", tunnel.local_port))
        squatter.listen()
        result = tunnel.run("start")
    assert result.returncode == 1
    assert "already in use by another program" in result.stderr
    assert not tunnel.files.pid.exists()


def test_stop_never_signals_a_process_that_is_not_ours(tunnel: Tunnel) -> None:
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        tunnel.files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tunnel.files.write_pid(bystander.pid)
        result = tunnel.run("stop")
        assert result.returncode == 1
        assert "not a ctxcache tunnel" in result.stderr
        assert bystander.poll() is None
        assert not tunnel.files.pid.exists()
    finally:
        bystander.communicate(b"", timeout=10)


# -- the supervisor started directly, to hold it in a given phase -------------------------


def _supervisors_for(directory: Path) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and is_our_supervisor(int(entry.name), directory)
    ]


@contextlib.contextmanager
def supervisor_for(
    tunnel: Tunnel, ssh_port: int, backoff: float = 1.0
) -> Iterator[subprocess.Popen[bytes]]:
    """The supervisor as ``start`` launches it, its ssh pointed at ``ssh_port``."""
    ssh = shutil.which("ssh")
    assert ssh is not None
    directory = tunnel.files.directory
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = [ssh, "-N", "-L", f"127.0.0.1:{tunnel.local_port}:127.0.0.1:1", "-p", str(ssh_port)]
    command += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "127.0.0.1"]
    options = ["--local-port", str(tunnel.local_port), "--target", "test"]
    options += ["--backoff-initial", str(backoff), "--backoff-max", str(backoff), "--", *command]
    process = subprocess.Popen(
        [sys.executable, "-m", SUPERVISOR_MODULE, "--runtime-dir", str(directory), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=tunnel.env,
        start_new_session=True,
    )
    tunnel.files.write_pid(process.pid)
    tunnel.seen.append((process.pid, None))
    try:
        yield process
    finally:
        _end(process)


def test_status_says_when_the_port_does_not_listen(tunnel: Tunnel) -> None:
    # A "bastion" that accepts TCP but never says a word: ssh waits for its banner.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with supervisor_for(tunnel, silent.getsockname()[1]) as supervisor:

            def connecting() -> bool:
                state = tunnel.files.read_state()
                return state is not None and state.ssh_pid is not None

            wait_until(connecting, 10, "the supervisor to start ssh")
            code, status = tunnel.status()
            assert code == 5, status
            assert status["ssh_alive"] is True
            assert status["listening"] is False
            assert status["phase"] == "connecting"

            result = tunnel.run("stop")
            assert result.returncode == 0, result.stderr
            assert supervisor.wait(timeout=10) == 0


def test_stop_interrupts_the_backoff(tunnel: Tunnel) -> None:
    with socket.socket() as closed:  # a port nothing listens on: ssh fails at once
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    with supervisor_for(tunnel, refused, backoff=60) as supervisor:

        def waiting() -> bool:
            state = tunnel.files.read_state()
            return state is not None and state.phase == "waiting"

        wait_until(waiting, 15, "ssh to fail and the supervisor to back off")
        code, status = tunnel.status()
        assert code == 4
        assert "Connection refused" in str(status["last_error"])
        assert "reconnecting" in str(status["summary"])

        began = time.monotonic()
        assert tunnel.run("stop").returncode == 0
        assert supervisor.wait(timeout=10) == 0
        assert time.monotonic() - began < 5  # not the 60 s backoff, and no SIGKILL needed
