"""The protocol core is sans-IO: no module of it imports I/O, clocks or randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wgpy.protocol

BANNED = {"socket", "asyncio", "threading", "select", "time", "random", "os", "subprocess",
          "selectors", "multiprocessing", "secrets", "datetime"}
CORE = Path(wgpy.protocol.__file__).parent
MODULES = sorted(CORE.glob("*.py"))


def _imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            names.append("__import__")
        elif isinstance(node, ast.Attribute) and node.attr == "import_module":
            names.append("importlib.import_module")
    return names


def test_core_modules_found() -> None:
    # Guard against the glob silently finding nothing.
    assert {"device.py", "noise.py", "peer.py", "timers.py"} <= {p.name for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_io_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [n for n in _imported(tree) if n.split(".")[0] in BANNED or "import" in n]
    assert not bad, f"{path.name} imports {bad}"


def test_the_check_catches_a_banned_import() -> None:
    src = "import os.path\nfrom time import monotonic\nfrom wgpy import x\n"
    names = _imported(ast.parse(src))
    assert [n for n in names if n.split(".")[0] in BANNED] == ["os.path", "time"]
