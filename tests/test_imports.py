"""The import graph of farm, gateway and chain: one way down, and no circles.

The modules are read with ``ast`` (nothing is imported). Every import counts, at module level
or inside a function, except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("farm", "gateway", "chain")

#: farm modules that load gateway code, inside the farm command that runs it.
FARM_COMMANDS_OF_THE_GATEWAY = frozenset({"farm.cli.gateway", "farm.cli.chain"})


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"
        else:
            yield from _imports(node, module, is_package)


def graph() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for imported in _imports(tree, name, path.name == "__init__.py"):
            # "from farm.media import engine" names a module; "from farm.x import y" a name.
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


def _circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _package_inits(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without edges into a package's ``__init__`` from inside that package: a
    package that re-exports its modules is not a circle with them."""
    return {n: {t for t in targets if not n.startswith(t + ".")} for n, targets in edges.items()}


def test_no_import_circles() -> None:
    circles = _circles(_package_inits(graph()))
    assert not circles, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in circles)


def test_imports_run_one_way_gateway_farm_chain() -> None:
    for name, targets in graph().items():
        top = name.split(".")[0]
        for target in targets:
            down = target.split(".")[0]
            if top == "chain":
                assert down == "chain", f"{name} imports {target}"
            if top == "farm" and down == "gateway":
                # Only the farm commands that run the gateway's parts, when they are run.
                assert name in FARM_COMMANDS_OF_THE_GATEWAY, f"{name} imports {target}"


def test_the_walker_sees_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        frozenset({"a", "b", "c"})
    ]


def test_a_submitter_loads_no_tasks_and_no_chain_libraries() -> None:
    """Submitting goes through the producer app (farm.celery_app.create_app): a client built
    and its Celery app configured load neither the tasks nor web3 and eth-account."""
    script = (
        "import sys\n"
        "from farm.client import FarmClient\n"
        "from farm.ai.client import AIClient\n"
        "from farm.settings import ClusterSettings\n"
        "s = ClusterSettings(broker_url='redis://127.0.0.1:1/0', database_url='sqlite://',"
        " blob_url='file:///nonexistent')\n"
        "FarmClient(s).app.conf.task_queues\n"
        "AIClient(s).route\n"
        "heavy = ('farm.tasks', 'farm.ai.tasks', 'farm.worker_app', 'web3', 'eth_account')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
