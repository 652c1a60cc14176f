"""The tunnel's logic without ssh: backoff, the supervisor loop on fakes, argv, settings, files.

The supervisor loop runs on a fake clock, a fake wait and fake ssh processes:
nothing here sleeps or starts ssh (tests/test_tunnel.py does, for real).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import FakeClock, free_port
from typer.testing import CliRunner

from ctxcache import CacheSettings, ConfigurationError
from ctxcache.errors import TunnelError
from ctxcache.ops.cli import app
from ctxcache.ops.tunnel import (
    STATUS_NO_PROCESS,
    STATUS_NO_REDIS,
    STATUS_NOT_LISTENING,
    STATUS_OK,
    TunnelConfig,
    TunnelStatus,
    ssh_command,
    tunnel_status,
)
from ctxcache.ops.tunnel.runtime import (
    SUPERVISOR_MODULE,
    TunnelFiles,
    TunnelState,
    is_our_ssh,
    is_our_supervisor,
    process_command,
    runtime_dir,
)
from ctxcache.ops.tunnel.supervisor import Backoff, Supervisor
from ctxcache.settings import DEVELOPMENT_PORT

# -- backoff ------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(initial=1, maximum=10, stable_after=30)
    assert [backoff.after_exit(uptime=0.1) for _ in range(7)] == [1, 2, 4, 8, 10, 10, 10]


def test_backoff_never_overflows_however_long_it_fails() -> None:
    backoff = Backoff(initial=0.5, maximum=60)
    for _ in range(10_000):
        delay = backoff.after_exit(uptime=0)
    assert delay == 60


def test_a_connection_that_lasted_starts_the_backoff_again() -> None:
    backoff = Backoff(initial=1, maximum=60, stable_after=10)
    assert [backoff.after_exit(0) for _ in range(4)] == [1, 2, 4, 8]
    assert backoff.after_exit(uptime=10) == 1
    assert backoff.after_exit(uptime=9.9) == 2


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": 5, "maximum": 1}, {"factor": 0.5}])
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(**kwargs)


# -- the supervisor loop on fakes ---------------------------------------------------------


class FakeSsh:
    """Runs for ``polls`` polls of the supervisor (listening from ``listen_after``), then exits."""

    def __init__(
        self, pid: int, clock: FakeClock, code: int, polls: int, listen_after: int
    ) -> None:
        self.pid = pid
        self.clock = clock
        self.code = code
        self.polls = polls
        self.listen_after = listen_after
        self.polled = 0
        self.terminated = False

    @property
    def listening(self) -> bool:
        return self.polled >= self.listen_after

    def wait(self, timeout: float | None = None) -> int:
        if self.terminated:
            return -15
        if timeout is None:  # the tunnel is up: it runs out its remaining polls
            self.clock.advance(max(0, self.polls - self.polled))
            self.polled = self.polls
            return self.code
        if self.polled >= self.polls:
            return self.code
        self.polled += 1
        self.clock.advance(timeout)
        raise subprocess.TimeoutExpired("ssh", timeout)

    def terminate(self) -> None:
        self.terminated = True


class RecordingFiles(TunnelFiles):
    """Keeps every state written, so a test sees the phases the supervisor went through."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        object.__setattr__(self, "written", [])

    def write_state(self, state: TunnelState) -> None:
        self.written.append(TunnelState.from_dict(state.as_dict()))  # type: ignore[attr-defined]
        super().write_state(state)


class Harness:
    """A supervisor whose ssh runs are scripted: (exit code, polls, listen after, stderr line)."""

    def __init__(self, tmp_path: Path, runs: list[tuple[int, int, int, str]]) -> None:
        self.clock = FakeClock()
        self.files = RecordingFiles(tmp_path)
        self.runs = list(runs)
        self.spawned: list[FakeSsh] = []
        self.delays: list[float] = []
        state = TunnelState(
            supervisor_pid=1, local_port=6380, target="t", ssh_command=["ssh", "-N", "bastion"]
        )
        self.supervisor = Supervisor(
            self.files,
            state,
            backoff=Backoff(initial=1, maximum=8, stable_after=10),
            spawn=self.spawn,
            clock=self.clock,
            wall_clock=self.clock,
            wait=self.wait,
            listening=lambda port: bool(self.spawned) and self.spawned[-1].listening,
            poll_interval=0.5,
        )

    def spawn(self, command: list[str], log: Path) -> FakeSsh:
        code, polls, listen_after, stderr = self.runs.pop(0)
        with log.open("a") as handle:
            handle.write(stderr)
        process = FakeSsh(100 + len(self.spawned), self.clock, code, polls, listen_after)
        self.spawned.append(process)
        return process

    def wait(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.advance(delay)
        if not self.runs:  # the script is over: the operator stops the tunnel
            self.supervisor.request_stop()

    @property
    def phases(self) -> list[str]:
        return [state.phase for state in self.files.written]  # type: ignore[attr-defined]


def test_ssh_that_keeps_failing_is_retried_with_growing_delays(tmp_path: Path) -> None:
    denied = "Warning: Permanently added 'bastion'\nuser@bastion: Permission denied (publickey).\n"
    harness = Harness(tmp_path, [(255, 1, 99, denied)] * 5)
    harness.supervisor.run()

    assert harness.delays == [1, 2, 4, 8, 8]
    state = harness.supervisor.state
    assert state.restarts == 4
    assert state.last_error == "user@bastion: Permission denied (publickey). (ssh exit status 255)"
    assert state.phase == "stopped"
    assert "up" not in harness.phases
    assert harness.files.read_state() == state


def test_a_dropped_tunnel_comes_back_after_the_initial_delay(tmp_path: Path) -> None:
    runs = [
        (255, 0, 99, "ssh: connect to host bastion port 22: Connection refused\n"),
        (255, 0, 99, "ssh: connect to host bastion port 22: Connection refused\n"),
        (-9, 40, 2, ""),  # up for 20 s, then SIGKILLed
        (0, 40, 2, ""),
    ]
    harness = Harness(tmp_path, runs)
    harness.supervisor.run()

    # 1, 2 while failing; 1 again after the tunnel had been up past stable_after.
    assert harness.delays == [1, 2, 1, 1]
    assert harness.phases.count("up") == 2
    assert harness.phases[:4] == ["connecting", "waiting", "connecting", "waiting"]
    waiting = [state for state in harness.files.written if state.phase == "waiting"]  # type: ignore[attr-defined]
    assert waiting[2].last_error == "ssh was killed by SIGKILL"
    assert waiting[2].retry_in == 1
    assert waiting[2].ssh_pid is None
    assert harness.supervisor.state.restarts == 3


def test_a_stop_ends_the_running_ssh_without_a_restart(tmp_path: Path) -> None:
    harness = Harness(tmp_path, [(0, 10, 1, "")])

    def listening(port: int) -> bool:
        harness.supervisor.request_stop()  # the operator stops as soon as it is up
        return True

    harness.supervisor._listening = listening
    harness.supervisor.run()

    assert harness.spawned[0].terminated
    assert harness.delays == []
    assert harness.supervisor.state.restarts == 0
    assert harness.phases[-1] == "stopped"


# -- ssh argv, settings -------------------------------------------------------------------


def config(**overrides: object) -> TunnelConfig:
    values: dict[str, object] = {
        "host": "bastion.example",
        "user": "deploy",
        "port": 2222,
        "identity": None,
        "redis_host": "10.0.0.5",
        "redis_port": 6379,
        "local_port": 6380,
        "strict_host_key_checking": "accept-new",
        "known_hosts_file": None,
        "alive_interval": 15,
    }
    values.update(overrides)
    return TunnelConfig(**values)  # type: ignore[arg-type]


def test_ssh_command_forwards_the_local_port_and_never_prompts() -> None:
    command = ssh_command(config(), ssh="/usr/bin/ssh")
    assert command[:5] == ["/usr/bin/ssh", "-N", "-T", "-L", "127.0.0.1:6380:10.0.0.5:6379"]
    options = [command[i + 1] for i, word in enumerate(command) if word == "-o"]
    for option in (
        "BatchMode=yes",
        "ExitOnForwardFailure=yes",
        "ServerAliveInterval=15",
        "ServerAliveCountMax=3",
        "StrictHostKeyChecking=accept-new",
    ):
        assert option in options
    assert command[command.index("-p") + 1] == "2222"
    assert command[-2:] == ["--", "deploy@bastion.example"]
    assert "-i" not in command


def test_ssh_command_with_identity_known_hosts_and_an_ipv6_redis() -> None:
    command = ssh_command(
        config(
            user=None,
            identity="/keys/id_ed25519",
            known_hosts_file="/tmp/my hosts",
            redis_host="::1",
            strict_host_key_checking="yes",
        )
    )
    assert "127.0.0.1:6380:[::1]:6379" in command
    assert command[command.index("-i") + 1] == "/keys/id_ed25519"
    assert "IdentitiesOnly=yes" in command
    assert 'UserKnownHostsFile="/tmp/my hosts"' in command
    assert "StrictHostKeyChecking=yes" in command
    assert command[-1] == "bastion.example"


def test_tunnel_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CTXCACHE_TUNNEL_")]:
        monkeypatch.delenv(name)
    settings = CacheSettings.load()
    assert settings.tunnel_local_port == DEVELOPMENT_PORT == 6380
    assert (settings.tunnel_port, settings.tunnel_redis_port) == (22, 6379)
    assert settings.tunnel_redis_host == "127.0.0.1"
    assert settings.tunnel_strict_host_key_checking == "accept-new"
    assert settings.tunnel_host is None

    monkeypatch.setenv("CTXCACHE_TUNNEL_HOST", "bastion.example")
    monkeypatch.setenv("CTXCACHE_TUNNEL_USER", "deploy")
    monkeypatch.setenv("CTXCACHE_TUNNEL_PORT", "2222")
    monkeypatch.setenv("CTXCACHE_TUNNEL_IDENTITY", "~/.ssh/id_ed25519")
    monkeypatch.setenv("CTXCACHE_TUNNEL_LOCAL_PORT", "16380")
    tunnel = TunnelConfig.from_settings(CacheSettings.load())
    assert tunnel.destination == "deploy@bastion.example"
    assert tunnel.port == 2222
    assert tunnel.local_port == 16380
    assert tunnel.identity == str(Path.home() / ".ssh/id_ed25519")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CTXCACHE_TUNNEL_PORT", "0"),
        ("CTXCACHE_TUNNEL_LOCAL_PORT", "65536"),
        ("CTXCACHE_TUNNEL_REDIS_PORT", "-1"),
        ("CTXCACHE_TUNNEL_HOST", "-oProxyCommand=touch /tmp/x"),
        ("CTXCACHE_TUNNEL_USER", "a b"),
        ("CTXCACHE_TUNNEL_REDIS_HOST", ""),
        ("CTXCACHE_TUNNEL_STRICT_HOST_KEY_CHECKING", "no"),
    ],
)
def test_bad_tunnel_settings_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        CacheSettings.load()
    assert raised.value.variable == variable


def test_starting_without_a_host_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CTXCACHE_TUNNEL_HOST", "  ")
    with pytest.raises(ConfigurationError, match="CTXCACHE_TUNNEL_HOST"):
        TunnelConfig.from_settings(CacheSettings.load())
    result = CliRunner().invoke(
        app, ["tunnel", "start"], env={"CTXCACHE_TUNNEL_RUNTIME_DIR": str(tmp_path)}
    )
    assert result.exit_code == 2
    assert "CTXCACHE_TUNNEL_HOST is not set" in result.output


def test_help_documents_the_status_exit_codes() -> None:
    result = CliRunner().invoke(app, ["tunnel", "status", "--help"])
    assert result.exit_code == 0
    for text in ("Exit 0", "4 no tunnel process", "5 the local", "6 Redis does not answer"):
        assert text in " ".join(result.output.split())


# -- status codes -------------------------------------------------------------------------


def status(**overrides: object) -> TunnelStatus:
    values: dict[str, object] = {
        "local_port": 6380,
        "runtime_dir": "/run/user/1000/ctxcache",
        "supervisor_pid": 10,
        "supervisor_alive": True,
        "ssh_pid": 11,
        "ssh_alive": True,
        "phase": "up",
        "restarts": 0,
        "last_error": None,
        "listening": True,
        "redis_ok": True,
        "redis_detail": "answers PING (authenticated)",
    }
    values.update(overrides)
    return TunnelStatus(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        ({}, STATUS_OK, "ssh pid 11 running"),
        ({"supervisor_alive": False, "ssh_alive": False}, STATUS_NO_PROCESS, "no tunnel process"),
        (
            {"ssh_alive": False, "listening": False, "restarts": 2, "last_error": "refused"},
            STATUS_NO_PROCESS,
            "reconnecting (restarts: 2); last error: refused",
        ),
        ({"listening": False}, STATUS_NOT_LISTENING, "nothing listens on 127.0.0.1:6380"),
        ({"redis_ok": False, "redis_detail": "refused the login"}, STATUS_NO_REDIS, "refused"),
    ],
)
def test_status_code_is_the_first_failed_check(
    overrides: dict[str, object], code: int, words: str
) -> None:
    result = status(**overrides)
    assert result.code == code
    assert result.ok is (code == STATUS_OK)
    assert words in result.summary
    assert result.as_dict()["code"] == code


# -- runtime directory and process identity -----------------------------------------------


def test_runtime_dir_prefers_the_setting_then_xdg_then_a_private_temp_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chosen = runtime_dir(str(tmp_path / "chosen"))
    assert chosen == tmp_path / "chosen"
    assert stat.S_IMODE(chosen.stat().st_mode) == 0o700

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert runtime_dir() == tmp_path / "xdg" / "ctxcache"

    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert runtime_dir() == tmp_path / "tmp" / f"ctxcache-{os.getuid()}"


def test_runtime_dir_writable_by_others_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(TunnelError, match="writable by other users"):
        runtime_dir(str(shared))


def test_processes_are_recognized_by_their_command_line(tmp_path: Path) -> None:
    # A stand-in with the supervisor's command line shape (it only waits on its stdin).
    command = [
        sys.executable,
        "-c",
        "import sys; sys.stdin.read()",
        SUPERVISOR_MODULE,
        "--runtime-dir",
        str(tmp_path),
    ]
    process = subprocess.Popen(command, stdin=subprocess.PIPE)
    try:
        # Under a loaded machine /proc can briefly show the pre-exec command line:
        # wait (bounded) until the stand-in's own is visible.
        deadline = time.monotonic() + 10
        while str(tmp_path) not in (process_command(process.pid) or ""):
            assert time.monotonic() < deadline, process_command(process.pid)
            time.sleep(0.01)
        assert is_our_supervisor(process.pid, tmp_path)
        assert not is_our_supervisor(process.pid, tmp_path / "other")
        assert is_our_ssh(process.pid, command)
        assert not is_our_ssh(process.pid, command[:-1])
        assert not is_our_supervisor(os.getpid(), tmp_path)
    finally:
        process.communicate(b"", timeout=10)
    assert process_command(process.pid) is None
    assert not is_our_supervisor(process.pid, tmp_path)


def test_status_creates_nothing_where_no_tunnel_ever_ran(tmp_path: Path) -> None:
    missing = tmp_path / "never"
    settings = CacheSettings.load(tunnel_runtime_dir=str(missing), tunnel_local_port=free_port())
    result = tunnel_status(settings, timeout=0.5)
    assert result.code == STATUS_NO_PROCESS
    assert not result.supervisor_alive
    assert not result.listening
    assert result.redis_detail == "not checked"
    assert not missing.exists()
