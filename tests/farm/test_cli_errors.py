"""A command whose service is down says so in one line and exits 1, never with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.farm.harness import free_port


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        (["transcoders"], {"FARM_BROKER_URL": "redis://127.0.0.1:{port}/0"}, "ConnectionError"),
        (
            ["transcoders", "--json"],
            {
                "FARM_BROKER_URL": "amqp://guest:guest@127.0.0.1:{port}//",
                "FARM_REGISTRY_URL": "redis://127.0.0.1:{port}/0",
            },
            "ConnectionError",
        ),
        (
            ["job", "no-such-job"],
            {"FARM_DATABASE_URL": "postgresql://farm@127.0.0.1:{port}/farm"},
            "OperationalError",
        ),
    ],
)
def test_an_unreachable_service_is_one_line(
    args: list[str], env: dict[str, str], error: str
) -> None:
    port = free_port()  # nothing listens there
    variables = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    variables.update({k: v.format(port=port) for k, v in env.items()})
    done = subprocess.run(
        [sys.executable, "-m", "farm.cli", *args],
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert f"error: {error}" in done.stderr and "Traceback" not in done.stderr, done.stderr


def _farm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    variables.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "farm.cli", *args],
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        (["transcoders", "fingerprint"], {"FARM_TLS_HOSTS": "node"}, "lists are JSON"),
        (["worker", "--cpu"], {"FARM_HEARTBEAT_S": "-1"}, "heartbeat_s: Input should be"),
    ],
)
def test_a_bad_setting_is_one_line(
    args: list[str], env: dict[str, str], error: str, tmp_path: Path
) -> None:
    done = _farm(*args, env={"FARM_TLS_DIR": str(tmp_path), **env})
    assert done.returncode == 1, done
    assert done.stderr.startswith("error: invalid settings:"), done.stderr
    assert error in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"FARM_ETH_CONTROLLER": "0x1234"}, "FARM_ETH_CONTROLLER: '0x1234' is not an address"),
        (
            {"FARM_ETH_CONTROLLER": "0x5FbDB2315678afecb367f032d93F642f64180aA3"},
            "wrong EIP-55 checksum",
        ),
        ({"FARM_ETH_PRIVATE_KEY": "0x1234"}, "FARM_ETH_PRIVATE_KEY is 2 bytes"),
        ({"FARM_ETH_PRIVATE_KEY": "0x" + "00" * 32}, "not a valid secp256k1 private key"),
    ],
)
def test_malformed_chain_settings_are_one_line(env: dict[str, str], error: str) -> None:
    settings = {
        "FARM_ETH_RPC_URL": f"http://127.0.0.1:{free_port()}",
        "FARM_ETH_CONTROLLER": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        **env,
    }
    done = _farm("chain", "status", env=settings)
    assert done.returncode == 1 and error in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_an_http_server_that_is_no_ethereum_node_is_one_line() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)  # POST is 501
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = _farm(
            "chain",
            "status",
            env={
                "FARM_ETH_RPC_URL": f"http://127.0.0.1:{server.server_port}",
                "FARM_ETH_CONTROLLER": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            },
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1 and "not an Ethereum JSON-RPC endpoint" in done.stderr, done
    assert "Traceback" not in done.stderr


def test_an_output_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    segment = tmp_path / "in.ts"
    segment.write_bytes(b"not read: the output directory fails first")
    out = tmp_path / "in.ts" / "renditions"  # below a file
    done = _farm("transcode", str(segment), "-o", str(out))
    assert done.returncode == 1 and f"error: {out}: Not a directory" in done.stderr, done
    assert "Traceback" not in done.stderr


def test_an_empty_profile_list_is_refused_not_defaulted(tmp_path: Path) -> None:
    segment = tmp_path / "in.ts"
    segment.write_bytes(b"x")
    done = _farm("transcode", str(segment), "-p", "", "-o", str(tmp_path / "out"))
    assert done.returncode == 1 and "at least one profile is required" in done.stderr, done


def test_submit_refuses_a_duration_that_is_not_one(tmp_path: Path) -> None:
    segment = tmp_path / "seg.ts"
    segment.write_bytes(b"x")
    for value in ("nan", "inf", "0", "-2"):
        done = _farm("submit", str(segment), "--duration", value)
        assert done.returncode == 2 and "is not a duration" in done.stderr, (value, done.stderr)


def test_a_refusal_is_the_same_one_line_as_any_error() -> None:
    done = _farm("transcoders", "evict", "golivepeer@")
    assert done.returncode == 1 and done.stderr == "error: golivepeer@HOST needs a host\n"


@pytest.mark.parametrize(
    "args",
    [
        ["node", "--port", "{port}"],
        ["gateway", "--port", "{port}"],
        ["exporter", "--port", "{port}"],
        ["up", "--port", "{port}", "--home", "{home}"],
        ["up", "--gateway-port", "{port}", "--port", "{free}", "--home", "{home}"],
    ],
)
def test_a_taken_port_is_one_line_naming_it(args: list[str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [a.format(port=port, free=free_port(), home=tmp_path / "up") for a in args]
        done = _farm(*argv, env={"FARM_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/gw.db"})
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0], done.stderr
    assert "serving" not in done.stdout + done.stderr
    assert not (tmp_path / "up" / "redis.sock").exists()  # farm up started nothing
