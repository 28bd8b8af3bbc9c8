"""One name, one meaning across farm, gateway and chain.

The modules are read with ``ast`` (nothing is imported); generated protobuf modules
(``*_pb2*``) are left out, since their names are go-livepeer's.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("farm", "gateway", "chain")

#: The one module named for dispatching work: the gateway's, which sends a segment to the
#: pool's orchestrators. The farm publishes (farm.publish); the AI routes send (gateway.ai).
DISPATCH_MODULE = "gateway/dispatch.py"
#: The modules that define Celery tasks, the only ones whose name says "tasks".
CELERY_TASK_MODULES = frozenset({"farm/tasks.py", "farm/ai/tasks.py", "farm/chain_tasks.py"})


def _sources() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "_pb2" not in path.name
    )


def _name(path: Path, root: Path = ROOT) -> str:
    return path.relative_to(root).as_posix()


def _defines_celery_task(tree: ast.AST) -> bool:
    """Whether a module defines a Celery task: a function under ``@<app>.task(...)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Attribute) and target.attr in ("task", "shared_task"):
                    return True
    return False


def _classes_twice(paths: list[Path], root: Path = ROOT) -> dict[str, list[str]]:
    where: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(_name(path, root))
    return {name: found for name, found in where.items() if len(found) > 1}


def test_a_class_name_is_defined_once() -> None:
    twice = _classes_twice(_sources())
    assert not twice, "class names defined in more than one module: " + "; ".join(
        f"{name} in {', '.join(paths)}" for name, paths in sorted(twice.items())
    )


def test_one_dispatch_module() -> None:
    dispatch = [_name(p) for p in _sources() if "dispatch" in p.stem]
    assert dispatch == [DISPATCH_MODULE], dispatch


def test_only_celery_task_modules_are_named_tasks() -> None:
    for path in _sources():
        if "tasks" not in path.stem.split("_"):
            continue
        assert _name(path) in CELERY_TASK_MODULES, f"{_name(path)}: not a Celery task module"
        assert _defines_celery_task(ast.parse(path.read_text(), str(path))), _name(path)


def test_one_ledger() -> None:
    """The gateway's credit ledger is the one ``ledger``; no other module or class says it."""
    assert [_name(p) for p in _sources() if p.stem == "ledger"] == ["gateway/ledger.py"]


def test_the_walkers_see_what_they_look_for(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("class Ledger: ...\n")
    (tmp_path / "b.py").write_text("class Ledger: ...\nclass Other: ...\n")
    twice = _classes_twice([tmp_path / "a.py", tmp_path / "b.py"], tmp_path)
    assert twice == {"Ledger": ["a.py", "b.py"]}
    assert _defines_celery_task(ast.parse("@app.task(name='x')\ndef run() -> None: ...\n"))
    assert not _defines_celery_task(ast.parse("def task() -> None: ...\n"))
