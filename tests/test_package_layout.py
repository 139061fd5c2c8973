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
