"""README command 1 from a wheel, then ``saewidgets demo --quick --lab``: JupyterLab opens the quickstart and the
Explorer renders from the demo's own SAE.

The wheel is built from a copy of the source tree and installed into a fresh venv (torch first, as the README
says; pip's cache or local wheels make this quick), so nothing of the checkout is importable there. The demo reuses
the quick demo cache (``SAEWIDGETS_CACHE``), the server is headless with a token on a free port (set through
Jupyter's own configuration file), and it is stopped by its pid: ``--lab`` execs JupyterLab in the demo's process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

# tests/browser/conftest.py and a sibling test module, importable by name under pytest's default prepend mode
from conftest import REPO_ROOT, _free_port, _write_settings, wait_until_serving
from test_jupyterlab_widgets import kernel_idle_js

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.gemma]
INSTALL_TIMEOUT_S = 900
DEMO_TIMEOUT_S = 600
NOTEBOOK_TIMEOUT_MS = 600_000


def _run(command: list[str], **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, **kwargs)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv with torch and the built wheel installed with the [demo] extra (README command 1)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "build", "*.egg-info", "__pycache__", ".pytest_cache", "screenshots", ".ci-cache"
        ),
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(source)], env=env)
    (wheel,) = (root / "dist").glob("saewidgets-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, "torch==2.13.0"], env=env)
    _run([*pip, f"{wheel}[demo]"], env=env)
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import saewidgets; print(saewidgets.__file__)"], env=env, cwd=root
    ).strip()
    assert where.startswith(str(venv)), f"the venv imports saewidgets from {where}, not from the wheel"
    return venv


def test_demo_lab_from_a_wheel_opens_the_quickstart_live_on_the_demo_sae(demo, wheel_venv, tmp_path, page, screenshot):
    port, token = _free_port(), uuid.uuid4().hex
    config, settings = tmp_path / "jupyter-config", tmp_path / "lab-settings"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "ServerApp": {"port": port, "ip": "127.0.0.1", "open_browser": False},
                "IdentityProvider": {"token": token},
                "LabApp": {"expose_app_in_browser": True},
            }
        )
    )
    _write_settings(settings)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SAEWIDGETS_QUICK")}
    env.update(
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        PATH=f"{wheel_venv / 'bin'}{os.pathsep}{env['PATH']}",
    )
    log = open(tmp_path / "demo-lab.log", "w")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(wheel_venv / "bin" / "saewidgets"), "demo", "--quick", "--lab", "--no-steer", "--out", str(out)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_until_serving(base, token, proc, DEMO_TIMEOUT_S), (
            f"JupyterLab did not start: {(tmp_path / 'demo-lab.log').read_text()[-3000:]}"
        )
        assert (out / "explorer.html").exists(), "the demo's page comes first"
        assert (out / "tutorials" / "01_quickstart.ipynb").exists(), "from a wheel the tutorials are copied out"

        page.goto(f"{base}/lab/tree/01_quickstart.ipynb?token={token}")
        page.wait_for_function("() => !!window.jupyterapp", timeout=NOTEBOOK_TIMEOUT_MS)
        page.wait_for_function(kernel_idle_js(), timeout=NOTEBOOK_TIMEOUT_MS)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " const cells = w.content.widgets.filter(c => c.model.type === 'code');"
            " return cells.every(c => c.model.executionCount !== null) && w.sessionContext.session.kernel.status"
            " === 'idle'; }",
            timeout=NOTEBOOK_TIMEOUT_MS,
        )
        page.wait_for_selector(".saew-dashboard .saew-card-id", timeout=60_000)
        page.wait_for_selector(".saew-map", state="attached", timeout=60_000)
        page.locator(".saew-dashboard").first.scroll_into_view_if_needed()
        screenshot(page, "demo-lab-from-wheel")
        outputs = page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.widgets.filter(c => c.model.type === 'code')"
            ".map(c => JSON.stringify(c.model.sharedModel.outputs))"
        )
        assert not [o for o in outputs if '"output_type":"error"' in o.replace(" ", "")], outputs
        sae = demo.sae.cfg
        assert any(f"n_features={sae.n_features}" in o for o in outputs), "the notebook loaded another SAE"
        assert any(f"sae {demo.stats.fingerprint}" in o for o in outputs), "the notebook read other statistics"
        card = page.inner_text(".saew-dashboard .saew-card-id")
        assert card.startswith("Feature #") and int(card.split("#")[1]) < sae.n_features
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # the pid of `saewidgets demo`, now JupyterLab
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    assert proc.returncode is not None
