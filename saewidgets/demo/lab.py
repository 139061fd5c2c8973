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


def copy_tutorials(destination: str | os.PathLike) -> list[Path]:
    """Copy the tutorial notebooks into ``destination`` (created); notebooks already there are kept, not
    overwritten. Returns the notebooks now in ``destination``."""
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
        if not target.exists():
            shutil.copyfile(notebook, target)
    return sorted(destination.glob("*.ipynb"))


def jupyterlab_missing() -> str | None:
    """The one line to print when JupyterLab is not installed (None when it is)."""
    if importlib.util.find_spec("jupyterlab") is None:
        return f"saewidgets demo --lab needs JupyterLab, which is not installed here: {INSTALL_HINT}"
    return None


def lab_environment(settings: DemoSettings, quick: bool) -> dict[str, str]:
    """The server's environment (its kernels inherit it): the demo's settings, so ``demo_artifacts()`` in the notebook
    loads this very SAE from the cache, and ``SAEWIDGETS_QUICK`` so the tutorials size their own runs to match."""
    return dict(os.environ, **{SETTINGS_ENV: json.dumps(asdict(settings)), "SAEWIDGETS_QUICK": "1" if quick else "0"})


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
