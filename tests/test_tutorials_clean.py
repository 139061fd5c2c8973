"""The tutorials as committed: the expected notebooks, valid nbformat 4, a title, and no outputs.

Outputs (and execution counts) are stripped before committing so diffs stay readable and no stale numbers, images
or widget state ship with the repository; CI executes every notebook fresh with nbmake instead.
"""

from __future__ import annotations

from pathlib import Path

import re

import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
EXPECTED = [
    "01_quickstart.ipynb",
    "02_training.ipynb",
    "03_reading_features.ipynb",
    "04_geometry.ipynb",
    "05_attribution.ipynb",
    "06_steering.ipynb",
    "07_beyond_one_machine.ipynb",
    "08_explanations.ipynb",
    "09_scaling.ipynb",
]
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
#: The notebooks held to the teaching standard of #22 (objectives, tagged exercises, a rendered copy): all of them.
TAUGHT = NOTEBOOKS


def test_the_expected_tutorials_exist():
    missing = [name for name in EXPECTED if not (TUTORIALS / name).exists()]
    assert not missing, f"missing tutorials: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_valid_nbformat_4(path):
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4, f"{path.name} is nbformat {nb.nbformat}, expected 4"
    nbformat.validate(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_current_nbformat_with_cell_ids(path):
    """nbformat 4.5+ with an id on every cell, so JupyterLab opens it unmodified (it adds ids to older files)."""
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), f"{path.name} is nbformat {nb.nbformat}.{nb.nbformat_minor}"
    missing = [i for i, cell in enumerate(nb.cells) if not cell.get("id")]
    assert not missing, f"{path.name}: cells {missing} have no id"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stripped_of_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} have outputs or execution counts; strip them "
        "(e.g. `jupyter nbconvert --clear-output --inplace` or nbstripout) before committing"
    )
    assert "widgets" not in nb.metadata, f"{path.name} carries saved widget state in its metadata; strip it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_starts_with_a_title(path):
    nb = nbformat.read(path, as_version=4)
    first = next((c for c in nb.cells if c.source.strip()), None)
    assert first is not None and first.cell_type == "markdown", f"{path.name} must open with a markdown cell"
    assert first.source.lstrip().startswith("# "), f"{path.name}'s first cell must start with a '# ' title"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_has_exercises(path):
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Exercises" in text, f"{path.name} should end with a '## Exercises' section"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_installs_saewidgets_only_when_it_is_missing(path, monkeypatch):
    """The first code cell makes the notebook work on Colab: pip-installs saewidgets where it cannot be imported,
    and does nothing where it can (here, and under nbmake)."""
    import importlib.util
    import subprocess

    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "check_call", lambda command, **kw: calls.append(command))
    exec(compile(first.source, path.name, "exec"), {})
    assert calls == [], f"{path.name}'s install cell ran pip although saewidgets is installed"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "saewidgets" else real(name, *a))
    exec(compile(first.source, path.name, "exec"), {})
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "install"], calls
    assert any(arg.startswith("saewidgets[demo] @ git+https://github.com/") for arg in calls[0]), calls


@pytest.mark.parametrize("path", TAUGHT, ids=[p.name for p in TAUGHT])
def test_notebook_opens_with_objectives_prerequisites_and_run_time(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.source.strip()).source
    for heading in ("**You will learn**", "**Prerequisites**", "**Run time**", "quick mode", "Full mode"):
        assert heading in first, f"{path.name}'s opening cell should state {heading!r}"


@pytest.mark.parametrize("path", TAUGHT, ids=[p.name for p in TAUGHT])
def test_exercises_have_difficulty_and_time(path):
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    exercises = text[text.index("## Exercises") :]
    items = [line for line in exercises.splitlines() if line[:1].isdigit() and line[1:3] == ". "]
    untagged = [line for line in items if not re.match(r"\d\. \*\((easy|medium|hard), \d+ min", line)]
    assert items and not untagged, f"{path.name}: exercises without a (difficulty, time) tag: {untagged}"


#: The inline exercises (ARENA style): what the student implements, in which notebook.
INLINE_EXERCISES = {
    "02_training.ipynb": "def variance_explained(",
    "05_attribution.ipynb": "def act_x_grad(",
    "06_steering.ipynb": "def clamp_delta(",
    "09_scaling.ipynb": "def compute_optimal_runs(",
}


@pytest.mark.parametrize("name", sorted(INLINE_EXERCISES))
def test_inline_exercise_is_filled_in_checked_and_has_a_hidden_solution(name):
    """The stub holds the solution between markers (so nbmake runs it), an assert checks it against the library,
    and the markdown before it states the task with a difficulty tag and a hidden <details> solution."""
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if INLINE_EXERCISES[name] in c.source and c.cell_type == "code")
    code = nb.cells[index].source
    assert "# --- solution" in code and "# --- end" in code, f"{name}: the solution is not marked"
    assert "assert " in code.split("# --- end")[1], f"{name}: nothing checks the student's function"
    task = nb.cells[index - 1]
    assert task.cell_type == "markdown" and "### Exercise" in task.source, f"{name}: no exercise text before it"
    assert "<details>" in task.source and re.search(r"\((easy|medium|hard), \d+ min\)", task.source), name


@pytest.mark.parametrize("path", TAUGHT, ids=[p.name for p in TAUGHT])
def test_a_rendered_copy_with_outputs_is_published_and_linked(path):
    """docs/tutorials/ holds each notebook rendered with the outputs of a quick run (scripts/render_tutorials.py),
    linked from the README and from the notebook's own header."""
    page = TUTORIALS.parent / "docs" / "tutorials" / path.with_suffix(".html").name
    assert page.exists(), f"no rendered copy of {path.name}: run python scripts/render_tutorials.py {path.name[:2]}"
    readme = (TUTORIALS.parent / "README.md").read_text()
    assert f"docs/tutorials/{page.name}" in readme, f"the README does not link {page.name}"
    nb = nbformat.read(path, as_version=4)
    assert f"docs/tutorials/{page.name}" in nb.cells[0].source, f"{path.name}'s header does not link {page.name}"
    text = page.read_text(encoding="utf-8")
    assert "jp-OutputArea-output" in text, f"{page.name} has no outputs"
    # nbconvert's template CSS is one shared file, not ~260 KB repeated in every page.
    head = text[: text.index("</head>")]
    assert '<link rel="stylesheet" href="nbconvert.css">' in head and "<style" not in head, page.name
    assert (page.parent / "nbconvert.css").stat().st_size > 100_000
    # Links the notebook writes relative to tutorials/ must still lead somewhere from docs/tutorials/.
    relative = [h for h in re.findall(r'<a href="([^"#]+)', text) if not re.match(r"[a-z][a-z0-9+.-]*:|/", h)]
    broken = [h for h in relative if not (page.parent / h).exists()]
    assert relative and not broken, f"{page.name}: links that lead nowhere from docs/tutorials/: {broken}"
