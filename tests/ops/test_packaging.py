"""The wheel a container or systemd install gets: everything the code reads at run time.

An editable install reads files from the checkout, so it hides whatever the wheel leaves out;
these tests build the real wheel from a copy of the sources and use it from outside the
checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chain.compile import CONTRACTS

ROOT = Path(__file__).resolve().parents[2]
#: What a build reads (pyproject.toml's packages and readme); the rest of the checkout is not
#: copied, so a stray build/ or .egg-info in it cannot leak into the wheel under test.
SOURCES = ("pyproject.toml", "README.md", "farm", "gateway", "chain")
PIP = (sys.executable, "-m", "pip", "-q", "--disable-pip-version-check")
_JUNK = shutil.ignore_patterns("node_modules", "__pycache__", "*.pyc", "*.egg-info", "build")

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=_JUNK)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("livepeer_farm-*.whl")
    return built


def test_the_wheel_holds_the_contract_artifacts(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for contract in CONTRACTS:
        assert f"chain/contracts/artifacts/{contract}.json" in names, contract
    # The type stub that ships beside the generated protobuf module.
    assert "farm/golivepeer/net_pb2.pyi" in names
    # Nothing from the development tree: sources to compile, npm's lock file, tests.
    assert not [n for n in names if n.startswith(("tests/", "chain/contracts/src/"))]


def test_an_installed_wheel_loads_the_contracts(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    done = subprocess.run(
        [*PIP, "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # Run from outside the checkout, with the installed copy first on the path: the
    # editable install's finder comes after it, so the checkout cannot answer instead.
    script = (
        "import chain, chain.abi\n"
        "print(chain.__file__)\n"
        "for name in chain.abi.CONTRACTS:\n"
        "    assert chain.abi.abi(name), name\n"
        "print(chain.abi.load_artifact('TicketBroker').compiler_version)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    where, version = ran.stdout.split()
    assert Path(where).is_relative_to(target)
    assert version


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``**`` spans folders, ``*`` and ``?`` do not."""
    out = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, re.escape(token)
        )
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path, or a folder above it, wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        regex = _regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


def test_the_docker_build_context_leaves_out_local_state() -> None:
    patterns = _dockerignore()
    for junk in (
        ".venv/bin/python",
        ".git/HEAD",
        "chain/contracts/node_modules/solc/index.js",
        "farm/__pycache__/cli.cpython-311.pyc",
        "livepeer_farm.egg-info/PKG-INFO",
        ".farm/config.json",
        ".mypy_cache/3.11/x.json",
    ):
        assert _ignored(junk, patterns), f"{junk} would be sent to the Docker daemon"
    # Every file a Dockerfile copies is still in the context.
    copied: list[str] = []
    for dockerfile in (ROOT / "ops" / "docker").glob("Dockerfile*"):
        for line in dockerfile.read_text().splitlines():
            if m := re.match(r"COPY\s+(.+)\s+\S+$", line):
                copied += m.group(1).split()
    assert copied
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", *copied], capture_output=True, text=True, check=True
    ).stdout.split()
    assert any(t.startswith("chain/contracts/artifacts/") for t in tracked)
    for path in tracked:
        assert not _ignored(path, patterns), f"{path} is copied into the image but ignored"
