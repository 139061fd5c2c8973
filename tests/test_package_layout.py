"""The package's map stays true: ARCHITECTURE.md names every module, and the lazy public API is visible to type
checkers (the ``TYPE_CHECKING`` imports in ``saewidgets/__init__.py`` name exactly the lazily exported names)."""

from __future__ import annotations

import ast
from pathlib import Path

import saewidgets

ROOT = Path(saewidgets.__file__).resolve().parent


def test_type_checkers_see_every_lazily_exported_name():
    tree = ast.parse((ROOT / "__init__.py").read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {}
    for node in guarded.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            seen[alias.name] = "saewidgets." + node.module
    assert seen == saewidgets._EXPORTS


def _rows() -> dict[str, str]:
    """ARCHITECTURE.md's module table: first cell (a path) -> the row."""
    text = (ROOT.parent / "ARCHITECTURE.md").read_text()
    return {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| `")}


def test_architecture_names_every_module_of_the_package():
    rows = _rows()
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT.parent).as_posix()
        folder_row = rows.get(path.parent.relative_to(ROOT.parent).as_posix() + "/", "")
        if relative not in rows and not (path.name == "__init__.py" or f"`{path.name}`" in folder_row):
            missing.append(relative)
    assert not missing, f"ARCHITECTURE.md does not describe {missing}: add them to its module table"


def test_architecture_names_only_what_exists():
    from saewidgets.cli import build_parser

    for path in _rows():
        assert (ROOT.parent / path).exists(), f"ARCHITECTURE.md describes {path}, which does not exist"
    commands = build_parser()._subparsers._group_actions[0].choices
    cli_row = _rows()["saewidgets/cli.py"]
    named = cli_row.split("`saewidgets ")[1].split("`")[0].split(" | ")
    assert sorted(named) == sorted(commands), f"ARCHITECTURE.md lists commands {named}; the CLI has {sorted(commands)}"
