"""The Explorer in marimo (``mo.ui.anywidget``): one anywidget renders and links there as in Jupyter.

A marimo app is served headless (``marimo run``) on a free port and driven with chromium through the same steps as
in JupyterLab: map click, neighbour link, text search, attribution, keyboard on the slider, steering, heatmap.
Outside JupyterLab's theme variables the Explorer takes its palette from what it is drawn on: marimo following the
browser's light or dark colour scheme, and marimo's light page under a browser that prefers dark.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from explorer_driver import ROUND_TRIP_MS, assert_readable, drive, expect_selected, open_tab
from playwright.sync_api import expect

from conftest import REPO_ROOT, SERVER_START_TIMEOUT_S, _free_port, skip_or_fail

pytestmark = pytest.mark.browser

APP = """import marimo

app = marimo.App(width="full")


@app.cell
def _():
    import marimo as mo
    import synthetic_results as syn
    from saewidgets.cancel import Cancelled
    from saewidgets.widgets._jobs import current_stop_event

    def fake_steer(prompt, feature, multiple):
        if "slow" in prompt:  # a generation that runs until the panel's Stop button sets its job's stop event
            if not current_stop_event().wait(60):
                raise RuntimeError("the slow generation was never stopped")
            raise Cancelled("stopped")
        return syn.FakeSteeringResult([prompt], [prompt + " (default)"],
                                      [f"{prompt} STEERED feature={feature} multiple={multiple:g}"], {feature: multiple})

    ex = syn.explorer(n_features=1500, steer_fn=fake_steer, selected=7)
    ex.steering.prompt = "The bridge"
    mo.ui.anywidget(ex)
    return


if __name__ == "__main__":
    app.run()
"""

DEMO_APP = """import marimo

app = marimo.App(width="full")


@app.cell
def _():
    import marimo as mo
    from saewidgets.demo import QUICK, demo_artifacts, highlight_features
    from saewidgets.widgets import Explorer

    art = demo_artifacts(QUICK, progress=False)
    explorer = Explorer(art.model, art.sae, art.stats, art.geometry, art.logit_effects,
                        highlights=highlight_features(art), prompt="The Eiffel Tower is in the city of")
    explorer.steering.prompt = "I went for a walk and saw"
    mo.ui.anywidget(explorer)
    return


if __name__ == "__main__":
    app.run()
"""


@contextlib.contextmanager
def serve_marimo(folder, app: str):
    """Serve ``app`` (a marimo app's source) headless from ``folder``; yields its URL."""
    # Look marimo up without importing it here: the app runs in its own process, and importing marimo into the
    # test process after the rest of the suite has run failed once in CI inside marimo's own config dataclasses.
    if importlib.util.find_spec("marimo") is None:
        skip_or_fail("marimo is not installed: pip install marimo")
    (folder / "app.py").write_text(app)
    port = _free_port()
    # The app's kernel imports saewidgets from this checkout and the synthetic results from tests/.
    paths = [str(REPO_ROOT), str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    log = open(folder / "marimo.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "marimo",
            "run",
            "app.py",
            "--headless",
            "--no-token",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + SERVER_START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.close()
            raise RuntimeError(f"marimo did not start; log: {log.name}")
        time.sleep(0.3)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def marimo_app(tmp_path_factory):
    with serve_marimo(tmp_path_factory.mktemp("marimo"), APP) as url:
        yield url


def test_explorer_drives_in_marimo(marimo_app, page, screenshot):
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(marimo_app)
    ex = page.locator(".saew-explorer")
    expect(ex).to_have_count(1, timeout=60_000)
    expect_selected(ex, 7)
    seen = drive(page, ex, map_target=1234, search="3x", search_hit=3, target=" fog", steered_check="STEERED")
    assert f"feature={seen['attribution']}" in seen["steered"]
    assert page.errors == [], page.errors
    screenshot(page, "marimo-explorer", locator=ex)


def test_stop_ends_a_running_generation_in_marimo_and_the_panel_generates_after(marimo_app, page, screenshot):
    """Stop, pressed in the browser while a generation runs, ends it through the job's stop event: the panel says
    it stopped, shows no result for it, and the next Generate works."""
    page.goto(marimo_app)
    ex = page.locator(".saew-explorer")
    expect(ex).to_have_count(1, timeout=60_000)
    expect(ex).to_have_class(re.compile("saew-explorer-live"), timeout=ROUND_TRIP_MS)
    open_tab(ex, "Steering")
    prompt, go, stop = (ex.locator(f".saew-steer-{part}") for part in ("prompt", "generate", "stop"))
    status, steered = ex.locator(".saew-steer-status"), ex.locator(".saew-steer-steered .saew-steer-text")
    expect(stop).to_be_disabled()
    prompt.fill("The slow bridge")
    go.click()
    expect(status).to_have_text("generating…", timeout=ROUND_TRIP_MS)
    expect(stop).to_be_enabled()
    expect(go).to_be_disabled()
    screenshot(page, "marimo-steering-generating", locator=ex)
    stop.click()
    expect(status).to_have_text("stopped", timeout=ROUND_TRIP_MS)
    expect(go).to_be_enabled()
    expect(stop).to_be_disabled()
    expect(steered).to_have_count(0)  # nothing of the stopped run is shown as a result
    prompt.fill("The bridge")
    go.click()
    expect(steered.first).to_contain_text("The bridge STEERED feature=7", timeout=ROUND_TRIP_MS)
    expect(status).not_to_have_text("stopped")
    assert page.errors == [], page.errors


@pytest.mark.parametrize("scheme, marimo_theme", [("light", "system"), ("dark", "system"), ("dark", "light")])
def test_explorer_in_marimo_takes_the_page_colours_and_stays_readable(
    marimo_app, page, screenshot, scheme, marimo_theme
):
    """The browser's colour scheme with marimo following it (?theme=system), and a browser preferring dark under
    marimo's light theme (the widget must then be light: dark text on marimo's white page)."""
    page.emulate_media(color_scheme=scheme)
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(f"{marimo_app}?theme={marimo_theme}")
    ex = page.locator(".saew-explorer")
    expect(ex).to_have_count(1, timeout=60_000)
    expect_selected(ex, 7)
    dark = scheme == "dark" and marimo_theme == "system"
    expect(ex).to_have_attribute("data-saew-scheme", "dark" if dark else "light")
    assert_readable(ex, expect=(".saew-card-id", ".saew-logit-value", ".saew-context-tokens .saew-tok", "map label"))
    open_tab(ex, "Heatmap")
    expect(ex.locator(".saew-heatmap-view .saew-tok").first).to_be_visible(timeout=30_000)
    assert_readable(ex, expect=(".saew-heatmap-view .saew-tok",))
    open_tab(ex, "Steering")
    ex.locator(".saew-steer-generate").click()
    expect(ex.locator(".saew-steer-steered .saew-steer-text").first).to_contain_text("STEERED", timeout=30_000)
    assert_readable(ex, expect=(".saew-steer-text",))
    assert page.errors == [], page.errors
    screenshot(page, f"marimo-explorer-{scheme}-{marimo_theme}", locator=ex)


@pytest.mark.gemma
def test_demo_explorer_drives_in_marimo(demo, tmp_path, page, screenshot):
    # The real quick demo (Gemma and its SAE, from the cache the `demo` fixture filled) in marimo's own kernel.
    first = int(demo.stats.density.argmax())
    distant = int(((demo.geometry.coords - demo.geometry.coords[first]) ** 2).sum(1).argmax())
    with serve_marimo(tmp_path, DEMO_APP) as url:
        page.set_viewport_size({"width": 1280, "height": 720})
        page.goto(url)
        ex = page.locator(".saew-explorer")
        expect(ex).to_have_count(1, timeout=300_000)  # the app loads Gemma and the demo artifacts first
        expect_selected(ex, first)
        seen = drive(page, ex, map_target=distant, search="Golden Gate", search_hit=None, target=" Paris")
        assert seen["steered"].strip()
        assert page.errors == [], page.errors
        screenshot(page, "marimo-demo-explorer", locator=ex)
