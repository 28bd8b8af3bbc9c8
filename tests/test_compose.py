"""docker-compose.gpu.yml: valid without an engine, and every command exists in the CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from farm.cli import cli

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.gpu.yml"


def test_compose_file_validates() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose (Debian's, validates without an engine) is not installed")
    env = dict(os.environ, FARM_SECRET="s", POSTGRES_PASSWORD="p", FARM_FLOWER_BASIC_AUTH="a:b")
    ok = subprocess.run(
        [tool, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    env.pop("FARM_SECRET")
    missing = subprocess.run(
        [tool, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "FARM_SECRET" in missing.stderr


def test_every_compose_command_is_a_farm_command() -> None:
    text = COMPOSE.read_text()
    # Services on the farm image (the x-farm anchor) run farm subcommands.
    blocks = re.split(r"\n  (?=[a-z-]+:\n)", text.split("\nservices:\n", 1)[1])
    commands = [
        m for b in blocks if "<<: *farm" in b for m in re.findall(r'command:\s*\["([a-z-]+)"', b)
    ]
    checks = re.findall(r'\["CMD", "farm", "([a-z-]+)"', text)
    assert commands and checks
    for name in {*commands, *checks}:
        assert name in cli.commands, f"compose runs `farm {name}`, which the CLI lacks"
