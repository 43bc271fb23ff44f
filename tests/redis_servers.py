"""Real distributed Redis set-ups for the tests: a 3-master Redis Cluster,
and a master + replica watched by one Sentinel. Each server runs on a free
loopback port and is stopped by its pid. A missing binary fails the test
(CI installs redis-server, redis-tools and redis-sentinel), never skips it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install -y redis-server redis-tools"
                    " redis-sentinel)")
    return path


def free_port(cluster_bus: bool = False) -> int:
    """A free loopback port; with ``cluster_bus``, port + 10000 is free too
    (a cluster node's bus port).
    """
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not cluster_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def cli(port: int, *args: str) -> str:
    return subprocess.run(
        [binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (subprocess.SubprocessError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not after {timeout}s")


class Process:
    """One Redis process (server or sentinel) on ``port``, stopped by pid."""

    def __init__(self, command: list[str], port: int) -> None:
        self.command = command
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        wait_until(lambda: cli(self.port, "PING").strip() == "PONG", 10,
                   f"redis on port {self.port}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None


def server(port: int, folder: Path, *extra: str) -> Process:
    return Process(
        [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
         "--protected-mode", "no", "--save", "", "--appendonly", "no",
         "--dir", str(folder), *extra],
        port,
    )


class Cluster:
    """Three masters, no replicas, slots spread evenly by ``redis-cli
    --cluster create``.
    """

    def __init__(self, folder: Path) -> None:
        self.nodes: list[Process] = []
        for i in range(3):
            node_dir = folder / f"node{i}"
            node_dir.mkdir()
            port = free_port(cluster_bus=True)
            self.nodes.append(server(
                port, node_dir, "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "2000",
            ))

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [binary("redis-cli"), "--cluster", "create",
             *(f"127.0.0.1:{port}" for port in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, timeout=60, check=True,
        )
        for port in self.ports:
            wait_until(lambda port=port: "cluster_state:ok" in cli(port, "CLUSTER", "INFO"),
                       30, f"cluster state ok on {port}")

    def client(self, **options):
        from redis.cluster import RedisCluster

        options.setdefault("socket_timeout", 2)
        return RedisCluster(host="127.0.0.1", port=self.ports[0], **options)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# What stops a deposed master from taking writes: it refuses writes once it
# has no replica that answered within a second (README, "Several workers").
REPLICA_SAFETY = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "1")


class SentinelSet:
    """A master, its replica and one Sentinel (quorum 1) watching them as
    ``mymaster``.

    With one replica, ``min-replicas-to-write 1`` and ``wait_replicas=1``
    every acknowledged write is on the replica Sentinel promotes. The
    promoted replica then takes writes only once it has a replica of its
    own: the deposed master, after Sentinel reconfigures it (8 to 20 s).
    That pause is the price of losing nothing. With two replicas and
    ``wait_replicas=1`` the deposed master keeps the other replica for a
    while, takes writes that it confirms, and they are lost when that
    replica follows the new master (seen in this suite): wait for every
    replica.
    """

    name = "mymaster"

    def __init__(self, folder: Path, replicas: int = 1, safety: bool = True) -> None:
        self.folder = folder
        self.replicas = replicas
        master_port = free_port()
        (folder / "master").mkdir()
        settings = REPLICA_SAFETY if safety else ()
        self.servers = [server(master_port, folder / "master", *settings)]
        for i in range(replicas):
            (folder / f"replica{i}").mkdir()
            self.servers.append(server(free_port(), folder / f"replica{i}", *settings,
                                       "--replicaof", "127.0.0.1", str(master_port)))
        self.sentinel_port = free_port()
        config = folder / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f"dir {folder}\n"
            f"sentinel monitor {self.name} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {self.name} 1000\n"
            f"sentinel failover-timeout {self.name} 10000\n"
        )
        self.sentinel = Process([binary("redis-sentinel"), str(config)], self.sentinel_port)

    def start(self) -> None:
        for process in self.servers:
            process.start()
        wait_until(
            lambda: cli(self.servers[0].port, "INFO", "replication").count("state=online")
            == self.replicas,
            30, "replica in sync",
        )
        # With min-replicas-to-write, "online" is not yet enough: the master
        # takes writes once the replica's first acknowledgement counts it.
        wait_until(lambda: cli(self.servers[0].port, "SET", "probe", "1").strip() == "OK",
                   30, "the master taking writes")
        self.sentinel.start()
        wait_until(lambda: "num-slaves" in cli(self.sentinel_port, "SENTINEL", "MASTER",
                                               self.name) and self.replicas_known(),
                   30, "sentinel sees the replica")

    def replicas_known(self) -> bool:
        found = cli(self.sentinel_port, "SENTINEL", "REPLICAS", self.name)
        return found.count("\nflags\n") >= self.replicas

    def master_port(self) -> int:
        out = cli(self.sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        return int(out.split()[1])

    def failover(self) -> None:
        cli(self.sentinel_port, "SENTINEL", "FAILOVER", self.name)

    def master(self, **options):
        from redis.sentinel import Sentinel

        options.setdefault("socket_timeout", 2)
        sentinel = Sentinel([("127.0.0.1", self.sentinel_port)], socket_timeout=2)
        return sentinel.master_for(self.name, **options)

    def stop(self) -> None:
        self.sentinel.stop()
        for process in self.servers:
            process.stop()


@pytest.fixture(scope="session")
def redis_cluster():
    """A real 3-master Redis Cluster, started once for the test session."""
    with tempfile.TemporaryDirectory() as folder:
        cluster = Cluster(Path(folder))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="module", params=["min-replicas settings", "no server settings"])
def redis_sentinel(request):
    """A real master + replica + Sentinel, for one test module (failovers
    move the master): with the server settings the README names, and
    without them, where ``wait_replicas`` alone must keep every
    acknowledged write.
    """
    with tempfile.TemporaryDirectory() as folder:
        sentinels = SentinelSet(Path(folder), safety=request.param == "min-replicas settings")
        try:
            sentinels.start()
            yield sentinels
        finally:
            sentinels.stop()
