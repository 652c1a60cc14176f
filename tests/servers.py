"""Real highly available Redis deployments on loopback ports, for tests and benchmarks.

:class:`LocalCluster` is a Redis Cluster of 3 primaries and 3 replicas
(``redis-server --cluster-enabled yes``, created with ``redis-cli --cluster
create ... --cluster-replicas 1``); :class:`LocalSentinel` is 1 master, 1
replica and 3 sentinels (``redis-server --sentinel``). Each server runs in a
process group of its own in a private directory, without persistence, and
:meth:`stop` kills them all. Node timeouts are short (1 s) so that a failover
takes seconds, not the production default of 15-30 s.

No pytest here: the fixtures in ``conftest.py`` and the ``scaleout``
benchmark start these alike.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["LocalCluster", "LocalSentinel", "ServerProcess", "missing_binaries"]

NODE_TIMEOUT_MS = 1000
START_TIMEOUT = 30.0
MASTER_NAME = "ctxcache-test"


def missing_binaries() -> list[str]:
    """The binaries these deployments need that are not installed."""
    return [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]


def _wait(what: str, check: object, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout:g} s (last error: {last})")


def _link_up(server: ServerProcess, password: str | None = None) -> bool:
    """A replica whose link to its master is up (its initial sync done)."""
    info = server.client(password=password).info("replication")
    return info.get("role") == "master" or info.get("master_link_status") == "up"


class ServerProcess:
    """One redis-server (or sentinel) on ``127.0.0.1:<port>``; SIGKILL and restart at will."""

    def __init__(self, port: int, directory: Path, args: list[str]) -> None:
        self.port = port
        self.directory = directory
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        # A port someone else listens on would make every later call (a FLUSHALL
        # included) reach their server: refuse it before starting ours.
        with socket.socket() as probe:
            # As redis-server binds: connections of a killed predecessor in TIME_WAIT
            # do not count, a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError:
                raise RuntimeError(
                    f"loopback port {self.port} is in use: the test servers need"
                    " CTXCACHE_TEST_HA_PORT moved to a free range of 15 ports (a test run"
                    " killed before its teardown leaves its servers: `ss -ltnp` names them)"
                ) from None
        binary = shutil.which("redis-server") or "redis-server"
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [binary, *self.args],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: killed whole, never by name
        )
        log.close()

    def client(self, **options: object) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1, **options)  # type: ignore[arg-type]

    def ping(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write to the replicas."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalCluster:
    """3 primaries and 3 replicas on ``ports[0]..ports[0]+5``."""

    def __init__(self, first_port: int, directory: Path, *, password: str | None = None) -> None:
        self.password = password
        self.nodes = []
        for port in range(first_port, first_port + 6):
            args = [
                "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--save", "", "--appendonly", "no", "--dir", str(directory / str(port)),
            ]  # fmt: skip
            if password:
                args += ["--requirepass", password, "--masterauth", password]
            self.nodes.append(ServerProcess(port, directory / str(port), args))

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return (
            f"redis+cluster://{auth}127.0.0.1:{self.nodes[0].port},127.0.0.1:{self.nodes[1].port}"
        )

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            _wait(f"cluster node {node.port}", self._pinger(node))
        argv = ["redis-cli"] + (["-a", self.password, "--no-auth-warning"] if self.password else [])
        argv += ["--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes)]
        argv += ["--cluster-replicas", "1", "--cluster-yes"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        self.wait_healthy()

    def _pinger(self, node: ServerProcess) -> object:
        return lambda: bool(node.client(password=self.password).ping())

    def admin(self, node: ServerProcess) -> redis.Redis:
        return node.client(password=self.password)

    def wait_healthy(self, timeout: float = START_TIMEOUT, *, replicas: bool = True) -> None:
        """Every running node says ``cluster_state:ok``; 3 primaries (with a replica each)."""

        def healthy() -> bool:
            for node in self.nodes:
                if node.running and self.admin(node).cluster("info")["cluster_state"] != "ok":
                    return False
            if len(self.primaries()) != 3:
                return False
            return not replicas or all(self._replicas_of_primaries())

        _wait("the cluster", healthy, timeout)

    def _replicas_of_primaries(self) -> list[bool]:
        out = []
        for node in self.primaries():
            role = self.admin(node).execute_command("ROLE")
            out.append(len(role[2]) >= 1)
        for node in self.nodes:  # every replica has finished its sync: it acknowledges writes
            if node.running and node not in self.primaries():
                out.append(_link_up(node, self.password))
        return out

    def primaries(self) -> list[ServerProcess]:
        found = []
        for node in self.nodes:
            if node.running and self.admin(node).execute_command("ROLE")[0] == b"master":
                found.append(node)
        return found

    def node_at(self, port: int) -> ServerProcess:
        return next(node for node in self.nodes if node.port == port)

    def flush(self) -> None:
        for node in self.primaries():
            self.admin(node).flushall()

    def restart(self, node: ServerProcess) -> None:
        """Start a killed node again: it rejoins (as a replica of its replacement)."""
        node.start()
        _wait(f"cluster node {node.port}", self._pinger(node))

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


class LocalSentinel:
    """A master, its replica and 3 sentinels (quorum 2) on 5 ports from ``first_port``."""

    def __init__(self, first_port: int, directory: Path) -> None:
        self.master_name = MASTER_NAME
        base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        master_port, replica_port = first_port, first_port + 1
        self.servers = [
            ServerProcess(master_port, directory / "master", ["--port", str(master_port), *base]),
            ServerProcess(
                replica_port,
                directory / "replica",
                ["--port", str(replica_port), *base, "--replicaof", "127.0.0.1", str(master_port)],
            ),
        ]
        self.sentinels = []
        for port in range(first_port + 2, first_port + 5):
            where = directory / f"sentinel-{port}"
            where.mkdir(parents=True, exist_ok=True)
            (where / "sentinel.conf").write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            )
            self.sentinels.append(ServerProcess(port, where, ["sentinel.conf", "--sentinel"]))

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}/{db}"

    def broker_url(self, db: int = 1) -> str:
        return ";".join(f"sentinel://127.0.0.1:{s.port}/{db}" for s in self.sentinels)

    def start(self) -> None:
        for server in [*self.servers, *self.sentinels]:
            server.start()
        for server in [*self.servers, *self.sentinels]:
            _wait(f"redis {server.port}", server.ping)
        self.wait_healthy()

    def master(self) -> ServerProcess:
        """The server the sentinels name as master now."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            _host, port = sentinel.client().sentinel_get_master_addr_by_name(self.master_name)
            for server in self.servers:
                if server.port == int(port):
                    return server
        raise RuntimeError("no sentinel names a master")

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """A running master with a connected replica, that every running sentinel agrees on."""

        def healthy() -> bool:
            master = self.master()
            if not master.running:
                return False
            role = master.client().execute_command("ROLE")
            if role[0] != b"master" or len(role[2]) < 1:
                return False
            if not all(_link_up(s) for s in self.servers if s is not master and s.running):
                return False
            for sentinel in self.sentinels:
                info = sentinel.client().sentinel_master(self.master_name)
                if int(info["num-other-sentinels"]) < 2 or int(info["port"]) != master.port:
                    return False
            return True

        _wait("the sentinel deployment", healthy, timeout)

    def flush(self) -> None:
        self.master().client().flushall()

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.kill()
