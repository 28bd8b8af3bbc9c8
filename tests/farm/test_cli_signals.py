"""Long-running commands stop what they started when they are stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from chain.devchain import anvil_binary
from tests.farm.harness import wait_for


def test_farm_chain_dev_stops_anvil_on_sigterm(tmp_path: Path) -> None:
    try:
        anvil_binary()
    except Exception as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"anvil unavailable: {e}")
    out = tmp_path / "devchain.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    with open(tmp_path / "dev.log", "ab") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "farm.cli", "chain", "dev", "--out", str(out)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(out.exists, timeout=180, what="the development chain")
        children = psutil.Process(dev.pid).children(recursive=True)
        assert children, "anvil runs as a child of farm chain dev"
        dev.send_signal(signal.SIGTERM)  # to farm alone, as a service manager may
        assert dev.wait(timeout=30) == 0, (tmp_path / "dev.log").read_text()
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running: {alive}"
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
