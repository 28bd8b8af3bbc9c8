"""Imports go one way, gateway -> farm -> chain, and the gateway sees only farm's public face.

The modules are read with ``ast``, not imported, so the rule is checked without side effects.
The public face is listed in ``farm``'s docstring.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The farm modules the gateway may import.
PUBLIC = frozenset(
    {
        "farm",
        "farm.ai.client",
        "farm.blobstore",
        "farm.client",
        "farm.errors",
        "farm.media.assemble",
        "farm.media.output",
        "farm.media.pixels",
        "farm.media.profiles",
        "farm.media.segmenter",
        "farm.media.source",
        "farm.protocol",
        "farm.runtime",
    }
)

#: What ``from farm import ...`` may name.
ROOT_NAMES = frozenset({"__version__"})


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(tree: ast.AST, module_level: bool = False) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every absolute import in ``tree``; with ``module_level``,
    only those that run when the module is imported (not inside a function)."""
    for node in ast.iter_child_nodes(tree):
        if module_level and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "farm":
                for alias in node.names:
                    name = alias.name
                    yield node.lineno, "farm" if name in ROOT_NAMES else f"farm.{name}"
            else:
                yield node.lineno, node.module
        yield from _imports(node, module_level)


def _package(module: str) -> str:
    return module.partition(".")[0]


def test_gateway_uses_only_farms_public_face() -> None:
    offending = []
    for path in _modules("gateway"):
        rel = path.relative_to(ROOT).as_posix()
        allowed = PUBLIC
        for line, module in _imports(ast.parse(path.read_text(), rel)):
            if _package(module) == "farm" and module not in allowed:
                offending.append(f"{rel}:{line} imports {module}")
    assert offending == []


def test_farm_and_chain_do_not_import_upstream() -> None:
    offending = []
    for package, forbidden, module_level in (
        # The farm command's functions may import gateway (the one composition root).
        ("farm", {"gateway"}, True),
        ("chain", {"gateway", "farm"}, False),
    ):
        for path in _modules(package):
            if "node_modules" in path.parts:
                continue
            rel = path.relative_to(ROOT).as_posix()
            for line, module in _imports(ast.parse(path.read_text(), rel), module_level):
                if _package(module) in forbidden:
                    offending.append(f"{rel}:{line} imports {module}")
    assert offending == []


def test_the_check_sees_imports() -> None:
    tree = ast.parse(
        "import gateway.app\n"
        "from farm import __version__, jobs\n"
        "def f():\n"
        "    from farm.jobs import make_engine\n"
    )
    assert list(_imports(tree)) == [
        (1, "gateway.app"),
        (2, "farm"),
        (2, "farm.jobs"),
        (4, "farm.jobs"),
    ]
    assert list(_imports(tree, module_level=True)) == [
        (1, "gateway.app"),
        (2, "farm"),
        (2, "farm.jobs"),
    ]
