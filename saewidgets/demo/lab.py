"""``saewidgets demo --lab`` and ``saewidgets tutorials DIR``: the tutorials wherever saewidgets is installed, and
JupyterLab opened on the quickstart with the demo's own SAE.

The notebooks live in ``tutorials/`` of a source checkout; a wheel carries them as package data
(``saewidgets/tutorials/``, copied in at build time by ``setup.py``). From a checkout ``--lab`` opens them in place;
from an installed wheel it first copies them next to the demo's output (never into site-packages, never over a
copy the user already edited).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from .._atomic_write import atomic_write_bytes
from ..models._memory import LARGE_BLOCK_ENV
from .settings import SETTINGS_ENV, DemoSettings

QUICKSTART = "01_quickstart.ipynb"
#: What to install when JupyterLab is missing (the ``demo`` extra brings it; a bare install does not).
INSTALL_HINT = "pip install 'saewidgets[lab]'"


def packaged_tutorials() -> Path | None:
    """The folder holding the tutorial notebooks: the wheel's package data, else a source checkout's
    ``tutorials/`` (None when neither is there)."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "tutorials", package.parent / "tutorials"):
        if (folder / QUICKSTART).exists():
            return folder
    return None


def _is_checkout(folder: Path) -> bool:
    return folder.parent == Path(__file__).resolve().parents[2]


#: The lines that fence an exercise's solution in a tutorial's code cell (the shipped notebooks run with it filled in).
SOLUTION_START, SOLUTION_END = "# --- solution", "# --- end"


def blank_solutions(notebook: dict) -> int:
    """Replace each fenced solution in ``notebook``'s code cells with a ``raise NotImplementedError`` at the same
    indentation, in place: the student's copy of an exercise. Returns how many solutions were blanked.

    Raises ValueError for a fence opened and not closed, so a broken notebook never ships half-blanked.
    """
    blanked = 0
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        lines, out, inside = source.split("\n"), [], False
        for line in lines:
            if line.strip() == SOLUTION_START:
                indent = line[: len(line) - len(line.lstrip())]
                out.append(f'{indent}raise NotImplementedError("your solution here: see the exercise above")')
                inside, blanked = True, blanked + 1
            elif line.strip() == SOLUTION_END and inside:
                inside = False
            elif not inside:
                out.append(line)
        if inside:
            raise ValueError(f"a tutorial cell opens {SOLUTION_START!r} without a closing {SOLUTION_END!r}")
        cell["source"] = "\n".join(out)
    return blanked


def copy_tutorials(destination: str | os.PathLike, *, exercises: bool = False) -> list[Path]:
    """Copy the tutorial notebooks into ``destination`` (created); notebooks already there are kept, not
    overwritten. With ``exercises``, each exercise's solution is blanked (`blank_solutions`) so the student writes
    it and the cell's check runs against the library. Returns the notebooks now in ``destination``."""
    source = packaged_tutorials()
    if source is None:
        raise FileNotFoundError(
            "this installation of saewidgets carries no tutorials (neither the package data of a "
            "wheel nor a source checkout's tutorials/); reinstall it from a wheel or the repository"
        )
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for notebook in sorted(source.glob("*.ipynb")):
        target = destination / notebook.name
        if target.exists():
            continue
        if exercises:
            content = json.loads(notebook.read_text(encoding="utf-8"))
            blank_solutions(content)
            atomic_write_bytes(target, (json.dumps(content, indent=1, ensure_ascii=False) + "\n").encode())
        else:
            shutil.copyfile(notebook, target)
    return sorted(destination.glob("*.ipynb"))


def jupyterlab_missing() -> str | None:
    """The one line to print when JupyterLab is not installed (None when it is)."""
    if importlib.util.find_spec("jupyterlab") is None:
        return f"saewidgets demo --lab needs JupyterLab, which is not installed here: {INSTALL_HINT}"
    return None


def lab_environment(settings: DemoSettings, quick: bool) -> dict[str, str]:
    """The server's environment (its kernels inherit it): the demo's settings, so ``demo_artifacts()`` in the notebook
    loads this very SAE from the cache, ``SAEWIDGETS_QUICK`` so the tutorials size their own runs to match, and the
    demo's allocator setting (`LARGE_BLOCK_ENV`, unless the user set their own): a tutorial kernel peaked 17-122 MB
    lower with it (benchmarks/README.md)."""
    demo = {SETTINGS_ENV: json.dumps(asdict(settings)), "SAEWIDGETS_QUICK": "1" if quick else "0"}
    return {**LARGE_BLOCK_ENV, **os.environ, **demo}


def open_lab(settings: DemoSettings, out_dir: str | os.PathLike, *, quick: bool) -> int:
    """Replace this process with JupyterLab on the quickstart tutorial (POSIX; elsewhere run it and wait).

    Server options (port, token, no browser) come from the usual Jupyter configuration, e.g. a
    ``jupyter_server_config.json`` in ``$JUPYTER_CONFIG_DIR``.
    """
    missing = jupyterlab_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    folder = packaged_tutorials()
    if folder is None or not _is_checkout(folder):
        folder = Path(out_dir).resolve() / "tutorials"
        copy_tutorials(folder)
    command = [sys.executable, "-m", "jupyter", "lab", str(folder / QUICKSTART)]  # serves the notebook's folder
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    print("starting:", " ".join(command), flush=True)
    env = lab_environment(settings, quick)
    sys.stderr.flush()
    if os.name == "posix":  # the server takes over this process: its pid, its signals, none of the demo's memory
        os.execve(sys.executable, command, env)
    return subprocess.call(command, env=env)
