"""Compile chain/contracts/src/*.sol with the pinned npm ``solc`` and write the artifacts.

The compiler is the npm package ``solc`` (solc-js, WebAssembly) at the version pinned in
``chain/contracts/package.json``; it runs offline under Node.js. ``python -m chain.compile``
rewrites ``chain/contracts/artifacts/*.json``; ``python -m chain.compile --check`` only
compares a fresh compilation with them (exit status 1 on a difference).

Setup: ``npm ci --prefix chain/contracts`` (or :func:`ensure_node_modules`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

__all__ = [
    "ARTIFACTS_DIR",
    "CONTRACTS",
    "CONTRACTS_DIR",
    "SETTINGS",
    "CompileError",
    "check_artifacts",
    "compile_contracts",
    "ensure_node_modules",
    "node_available",
    "pinned_version",
    "write_artifacts",
]

CONTRACTS_DIR: Final = Path(__file__).resolve().parent / "contracts"
SOURCES_DIR: Final = CONTRACTS_DIR / "src"
ARTIFACTS_DIR: Final = CONTRACTS_DIR / "artifacts"
NODE_MODULES: Final = CONTRACTS_DIR / "node_modules"

#: The deployable contracts, in deployment order.
CONTRACTS: Final = (
    "Controller",
    "LivepeerToken",
    "Minter",
    "RoundsManager",
    "BondingManager",
    "TicketBroker",
    "ServiceRegistry",
)

#: solc settings (standard JSON): optimizer on, an EVM version Arbitrum and anvil share, no
#: metadata hash in the bytecode so that comments do not change it.
SETTINGS: Final[dict[str, Any]] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]},
    },
}

_NODE_COMPILE: Final = """
const solc = require('solc');
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const output = JSON.parse(solc.compile(input));
  process.stdout.write(JSON.stringify({ version: solc.version(), output }));
});
"""


class CompileError(RuntimeError):
    """solc reported errors, or Node.js / the pinned solc is missing."""


def pinned_version(package: str = "solc") -> str:
    """The exact version of an npm package pinned in chain/contracts/package.json."""
    manifest = json.loads((CONTRACTS_DIR / "package.json").read_text())
    version: str = manifest["devDependencies"][package]
    return version


def node_available() -> bool:
    """Whether ``node`` and ``npm`` are on PATH."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


def ensure_node_modules(timeout: float = 300.0) -> None:
    """Install the pinned npm packages (solc, anvil) under chain/contracts if absent."""
    solc_pkg = NODE_MODULES / "solc" / "package.json"
    anvil_pkg = NODE_MODULES / "@foundry-rs" / "anvil" / "package.json"
    if solc_pkg.exists() and anvil_pkg.exists():
        return
    if not node_available():
        raise CompileError("Node.js and npm are needed (node/npm not on PATH)")
    command = ["npm", "ci", "--prefix", str(CONTRACTS_DIR), "--no-audit", "--no-fund"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise CompileError(f"npm ci failed: {result.stderr.strip()[-2000:]}")


def _standard_input() -> dict[str, Any]:
    sources = {
        f"src/{path.name}": {"content": path.read_text()}
        for path in sorted(SOURCES_DIR.glob("*.sol"))
    }
    return {"language": "Solidity", "sources": sources, "settings": SETTINGS}


def compile_contracts(timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    """Compile every source; return one artifact dict per contract in :data:`CONTRACTS`."""
    if shutil.which("node") is None:
        raise CompileError("Node.js is not on PATH")
    if not (NODE_MODULES / "solc").is_dir():
        raise CompileError(f"npm solc is not installed: run npm ci --prefix {CONTRACTS_DIR}")
    result = subprocess.run(
        ["node", "-e", _NODE_COMPILE],
        input=json.dumps(_standard_input()),
        capture_output=True,
        text=True,
        cwd=CONTRACTS_DIR,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise CompileError(f"node/solc failed: {result.stderr.strip()[-2000:]}")
    payload = json.loads(result.stdout)
    version: str = payload["version"]
    if not version.startswith(pinned_version() + "+"):
        raise CompileError(f"solc {version} is not the pinned {pinned_version()}")
    output = payload["output"]
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompileError("\n".join(e.get("formattedMessage", e["message"]) for e in errors))
    artifacts: dict[str, dict[str, Any]] = {}
    for source_name, contracts in output["contracts"].items():
        for name, data in contracts.items():
            if name not in CONTRACTS:
                continue
            artifacts[name] = {
                "contractName": name,
                "sourceName": source_name,
                "compiler": {"name": "solc", "version": version, "settings": SETTINGS},
                "abi": data["abi"],
                "bytecode": "0x" + data["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + data["evm"]["deployedBytecode"]["object"],
            }
    missing = set(CONTRACTS) - set(artifacts)
    if missing:
        raise CompileError(f"contracts missing from solc output: {sorted(missing)}")
    return artifacts


def _render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def write_artifacts(artifacts: dict[str, dict[str, Any]], directory: Path = ARTIFACTS_DIR) -> None:
    """Write one ``<Name>.json`` per contract."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, artifact in artifacts.items():
        (directory / f"{name}.json").write_text(_render(artifact))


def check_artifacts(
    artifacts: dict[str, dict[str, Any]], directory: Path = ARTIFACTS_DIR
) -> list[str]:
    """The differences (ABI, bytecode, compiler) between ``artifacts`` and the committed
    files; empty when they match."""
    problems = []
    for name, fresh in artifacts.items():
        path = directory / f"{name}.json"
        if not path.exists():
            problems.append(f"{name}: {path} is missing")
            continue
        committed = json.loads(path.read_text())
        for key in ("abi", "bytecode", "deployedBytecode", "compiler"):
            if committed.get(key) != fresh[key]:
                problems.append(f"{name}: {key} differs from {path.name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m chain.compile [--check]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare only, write nothing")
    args = parser.parse_args(argv)
    artifacts = compile_contracts()
    if args.check:
        problems = check_artifacts(artifacts)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    write_artifacts(artifacts)
    print(f"wrote {len(artifacts)} artifacts to {ARTIFACTS_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
