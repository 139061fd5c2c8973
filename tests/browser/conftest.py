"""Real-browser fixtures: Debian chromium driven by playwright, and a JupyterLab server on a temp folder.

Recipe (see the project's widget notes): chromium from apt (no browser download), playwright's Python package,
JupyterLab started with a token and ``expose_app_in_browser`` so tests can drive ``window.jupyterapp``.
Tests are skipped, with the reason, when chromium or playwright is missing — unless
``SAEWIDGETS_REQUIRE_BROWSER=1`` (CI), where they fail instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SAEWIDGETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 60


def _missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not Path(CHROMIUM).exists():
        return (
            f"chromium not found at {CHROMIUM}: install it with "
            "`apt-get update && apt-get install -y chromium` (or set SAEWIDGETS_CHROMIUM)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: `pip install playwright` (the browser comes from apt, not playwright)"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; fail instead when ``SAEWIDGETS_REQUIRE_BROWSER=1`` (CI must not skip silently)."""
    if os.environ.get("SAEWIDGETS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SAEWIDGETS_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _browser_available(request):
    """Every browser test first checks that chromium and playwright are here."""
    if "browser" in request.keywords:
        reason = _missing()
        if reason is not None:
            skip_or_fail(reason)


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    """Where screenshots go: $SAEWIDGETS_SCREENSHOTS (default ./screenshots)."""
    path = Path(os.environ.get("SAEWIDGETS_SCREENSHOTS", "screenshots")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def screenshot(screenshots_dir):
    """``screenshot(page, name, locator=None, **kw)``: save ``<name>.png`` in the screenshots folder, print it."""

    def take(page, name: str, locator=None, **kwargs) -> Path:
        path = screenshots_dir / f"{name}.png"
        (locator or page).screenshot(path=str(path), **kwargs)
        print(f"screenshot: {path}")
        return path

    return take


@pytest.fixture(scope="session")
def browser():
    reason = _missing()
    if reason is not None:
        skip_or_fail(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(f"{e}\n{e.stack}"))
    try:
        yield pg
    finally:
        context.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(settings_dir: Path, extra: dict[str, dict] | None = None) -> None:
    """Silence the news toast and render every cell (no windowing), so DOM queries see all outputs; ``extra`` maps
    more plugin ids (``"@jupyterlab/apputils-extension/themes"``) to their user settings."""
    plugins = {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        **(extra or {}),
    }
    for plugin, values in plugins.items():
        pkg, name = plugin.rsplit("/", 1)
        folder = settings_dir / pkg
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.jupyterlab-settings").write_text(json.dumps(values))


def wait_until_serving(base: str, token: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Whether the Jupyter server at ``base`` answered before ``timeout_s`` (False as soon as ``proc`` exits)."""
    deadline = time.time() + timeout_s
    while proc.poll() is None and time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


@contextmanager
def lab_server(tmp_path_factory, settings: dict[str, dict] | None = None):
    """A JupyterLab (+ Notebook 7 if installed) server on a temp root, with its own user settings (``settings``
    adds to the defaults of :func:`_write_settings`); yields (base_url, token, root)."""
    root = tmp_path_factory.mktemp("nbroot")
    settings_dir = tmp_path_factory.mktemp("lab-settings")
    workspaces = tmp_path_factory.mktemp("lab-workspaces")
    _write_settings(settings_dir, settings)
    port, token = _free_port(), uuid.uuid4().hex
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(settings_dir),
        JUPYTERLAB_WORKSPACES_DIR=str(workspaces),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        JUPYTER_PLATFORM_DIRS="1",
    )
    log = open(root.parent / f"jupyter-{port}.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--JupyterNotebookApp.expose_app_in_browser=True",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,
    )
    base = f"http://127.0.0.1:{port}"
    if not wait_until_serving(base, token, proc, SERVER_START_TIMEOUT_S):
        proc.kill()
        log.close()
        raise RuntimeError(f"JupyterLab did not start; log: {log.name}")
    try:
        yield base, token, root
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory):
    """The session's shared JupyterLab server (light theme); yields (base_url, token, root)."""
    with lab_server(tmp_path_factory) as server:
        yield server


@pytest.fixture
def notebook_writer():
    """``notebook_writer(folder, name, cells)``: write a notebook of code cells (see :func:`write_notebook`)."""
    return write_notebook


@pytest.fixture
def notebook7():
    """Skip unless the Notebook 7 front-end is installed."""
    if not notebook7_available():
        skip_or_fail("Notebook 7 (package `notebook`) is not installed: pip install 'notebook>=7.2'")


def write_notebook(folder: Path, name: str, cells: list[str]) -> Path:
    """A notebook of code cells (python3 kernel) in ``folder``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    path = folder / name
    nbformat.write(nb, str(path))
    return path


def notebook7_available() -> bool:
    """Whether the Notebook 7 front-end (package ``notebook``) is installed next to JupyterLab."""
    try:
        import notebook  # noqa: F401
    except ImportError:
        return False
    return True
