"""The live widgets in JupyterLab 4 (and a Notebook 7 smoke test), driven by chromium.

A notebook builds every view from small synthetic data (no model; a fake steer callback defined in the notebook),
runs all cells, and the test checks each view's DOM, clicks a map point (the dashboard changes through a Python
round trip), follows a neighbour link, runs a text search and an attribution for a typed target through Python,
clicks an attribution bar, moves the steering slider and presses Generate (the steered text shows the new
multiple, so Python saw the slider).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

TESTS_DIR = Path(__file__).resolve().parents[1]  # holds synthetic_results.py, which the notebook's kernel imports
CELLS = [
    f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
    """import time
import synthetic_results as syn
from saewidgets.widgets import TokenHeatmap, FeatureDashboard, FeatureMap, AttributionView, SteeringPanel

def fake_steer(prompt, feature, multiple):
    time.sleep(0.3)
    return syn.FakeSteeringResult([prompt], [prompt + ' (default)'],
                                  [f'{prompt} STEERED feature={feature} multiple={multiple:g}'], {feature: multiple})
""",
    "ex = syn.explorer(n_features=2000, steer_fn=fake_steer, selected=7)\nex.steering.prompt = 'The bridge'\nex",
    "heat = TokenHeatmap(syn.token_activations(syn.tokens(10_000, hostile=True), [1, 2, 3]), title='10k tokens')\n"
    "heat",
    "print('cells done')",
]
RUN_TIMEOUT_MS = 60_000


def kernel_idle_js() -> str:
    return ("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
            " return !!k && k.status === 'idle'; }")


ALL_CELLS_RAN_JS = (
    "() => { const w = window.jupyterapp.shell.currentWidget;"
    " const cells = w.content.widgets.filter(c => c.model.type === 'code');"
    " return cells.length > 0 && cells.every(c => c.model.executionCount !== null); }"
)


def open_and_run(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => !!window.jupyterapp", timeout=RUN_TIMEOUT_MS)
    page.wait_for_function(kernel_idle_js(), timeout=RUN_TIMEOUT_MS)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(ALL_CELLS_RAN_JS, timeout=RUN_TIMEOUT_MS)


def test_widgets_work_in_jupyterlab(page, jupyter_server, screenshot, notebook_writer):
    base, token, root = jupyter_server
    notebook_writer(root, "widgets_lab.ipynb", CELLS)
    t0 = time.time()
    open_and_run(page, f"{base}/lab/tree/widgets_lab.ipynb?token={token}")
    for cls in ("saew-map", "saew-dashboard", "saew-attribution", "saew-steering", "saew-heatmap"):
        page.wait_for_selector(f".{cls}", state="attached", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector(".saew-dashboard .saew-card-id", timeout=RUN_TIMEOUT_MS)
    assert page.inner_text(".saew-dashboard .saew-card-id") == "Feature #7"
    page.wait_for_function("() => document.querySelectorAll('.saew-heatmap .saew-tok').length >= 10000",
                           timeout=RUN_TIMEOUT_MS)  # the standalone 10k-token heatmap
    assert page.evaluate("window.__pwned") is None

    # Click a map point: JS sets `selected`, Python's Explorer fetches the card, the dashboard redraws.
    mapview = page.locator(".saew-map").first
    mapview.scroll_into_view_if_needed()
    target = 1234
    x, y = page.evaluate(f"document.querySelector('.saew-map').saewScreenOf({target})")
    box = page.locator(".saew-map-overlay").first.bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_function(
        "() => { const e = document.querySelector('.saew-dashboard .saew-card-id');"
        " return e && e.textContent !== 'Feature #7'; }", timeout=20_000)
    picked = page.inner_text(".saew-dashboard .saew-card-id")
    assert re.fullmatch(r"Feature #\d+", picked)
    assert f"selected {picked.split()[-1]}" in page.inner_text(".saew-map-info")
    screenshot(page, "jupyterlab-explorer", locator=page.locator(".saew-explorer").first)

    def card_becomes(text: str) -> None:
        page.wait_for_function(
            "(t) => { const e = document.querySelector('.saew-dashboard .saew-card-id');"
            " return e && e.textContent === t; }", arg=text, timeout=20_000)

    # A neighbour link on the dashboard: JS sets `feature`, Python selects it everywhere.
    link = page.locator(".saew-dashboard .saew-neighbour").first
    neighbour = link.inner_text()
    link.click()
    card_becomes(f"Feature {neighbour}")
    assert f"selected {neighbour}" in page.inner_text(".saew-map-info")

    # Text search goes to the notebook's search callback and selects its first hit.
    search = page.locator(".saew-map-search").first
    search.fill("3")
    search.press("Enter")
    card_becomes("Feature #3")

    # Attribution: a new target through Python, then a bar click opens that feature.
    target = page.locator(".saew-attr-target").first
    target.fill(" fog")
    page.locator(".saew-attr-go").first.click()
    page.wait_for_function(
        "() => { const h = document.querySelector('.saew-attribution .saew-subhead');"
        " return h && h.textContent.includes('fog'); }", timeout=20_000)
    bar = page.locator(".saew-attr-row").nth(1)
    bar_feature = bar.locator(".saew-attr-feature").inner_text()
    bar.click()
    card_becomes(f"Feature {bar_feature}")
    picked = f"Feature {bar_feature}"

    # Steering tab: move the slider by clicking its track, then Generate.
    page.get_by_role("tab", name="Steering").click()
    slider = page.locator(".saew-steer-slider").first
    slider.wait_for(state="visible")
    sbox = slider.bounding_box()
    page.mouse.click(sbox["x"] + sbox["width"] * 0.1, sbox["y"] + sbox["height"] / 2)
    shown = page.inner_text(".saew-steer-multiple")
    assert shown.startswith("-"), shown  # ~ -8x max
    multiple = shown.split("×")[0]
    page.locator(".saew-steer-generate").click()
    page.wait_for_function(
        "() => { const e = document.querySelector('.saew-steer-steered .saew-steer-text');"
        " return e && e.textContent.includes('STEERED'); }", timeout=20_000)
    steered = page.inner_text(".saew-steer-steered .saew-steer-text")
    assert f"multiple={multiple}" in steered, (steered, multiple)
    assert f"feature={picked.split('#')[-1]}" in steered
    assert page.inner_text(".saew-steer-default .saew-steer-text") == "The bridge (default)"
    screenshot(page, "jupyterlab-steering", locator=page.locator(".saew-explorer").first)

    # Heatmap tab: opening it asks Python for the selected feature's activations on the text.
    page.get_by_role("tab", name="Heatmap").click()
    page.wait_for_function(
        "() => { const h = document.querySelector('.saew-explorer .saew-heatmap');"
        " return h && h.querySelectorAll('.saew-tok').length > 0; }", timeout=20_000)
    assert f"feature #{picked.split('#')[-1]}" in page.locator(".saew-explorer .saew-heatmap .saew-muted").inner_text()
    assert page.errors == [], page.errors
    screenshot(page, "jupyterlab-page", full_page=True)
    assert time.time() - t0 < 120


def test_widgets_render_in_notebook7(notebook7, page, jupyter_server, screenshot, notebook_writer):
    base, token, root = jupyter_server
    notebook_writer(root, "widgets_nb7.ipynb", CELLS[:2])
    open_and_run(page, f"{base}/notebooks/widgets_nb7.ipynb?token={token}")
    page.wait_for_selector(".saew-dashboard .saew-card-id", timeout=RUN_TIMEOUT_MS)
    for cls in ("saew-map", "saew-dashboard", "saew-attribution"):
        assert page.locator(f".{cls}").count() >= 1, cls
    assert page.inner_text(".saew-dashboard .saew-card-id") == "Feature #7"
    screenshot(page, "notebook7-explorer", full_page=True)
