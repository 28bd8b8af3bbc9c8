"""A command whose service is down says so in one line and exits 1, never with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
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
    variables = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    variables.update({"FARM_TLS_DIR": str(tmp_path), **env})
    done = subprocess.run(
        [sys.executable, "-m", "farm.cli", *args],
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stderr.startswith("error: invalid settings:"), done.stderr
    assert error in done.stderr and "Traceback" not in done.stderr, done.stderr
