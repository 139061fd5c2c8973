"""The Explorer, one anywidget, live in JupyterLab 4 (on the real demo artifacts) and Notebook 7, driven by chromium.

In JupyterLab at 1280x720 the notebook builds the Explorer on the quick demo's Gemma SAE; the test clicks the map,
follows a neighbour link, searches, attributes, moves the steering slider with the keyboard, steers and opens the
heatmap (see ``explorer_driver``), and checks the layout: header, histogram and logits inside the first screen, no
horizontal overflow. Then it saves the notebook and opens it again without running it (a fresh kernel holds no
widgets): the cell shows the static Explorer, not "model not found". Notebook 7 runs the same drive on synthetic
data, plus the standalone 10k-token heatmap. A second server, whose user settings pick the JupyterLab Dark theme,
shows the demo Explorer dark, and every text a reader reads keeps a WCAG contrast of at least 4.5.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from explorer_driver import (
    ROUND_TRIP_MS,
    assert_readable,
    drive,
    expect_selected,
    no_horizontal_overflow,
    numbers_whole_and_aligned,
    open_tab,
)

from conftest import lab_server

pytestmark = pytest.mark.browser

TESTS_DIR = Path(__file__).resolve().parents[1]  # holds synthetic_results.py, which the notebook's kernel imports
SYNTHETIC_CELLS = [
    f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
    """import time
import synthetic_results as syn
from saewidgets.widgets import TokenHeatmap

def fake_steer(prompt, feature, multiple):
    time.sleep(0.3)
    return syn.FakeSteeringResult([prompt], [prompt + ' (default)'],
                                  [f'{prompt} STEERED feature={feature} multiple={multiple:g}'], {feature: multiple})
""",
    "ex = syn.explorer(n_features=2000, steer_fn=fake_steer, selected=7)\nex.steering.prompt = 'The bridge'\nex",
    "heat = TokenHeatmap(syn.token_activations(syn.tokens(10_000, hostile=True), [1, 2, 3]), title='10k tokens')\nheat",
]
DEMO_CELLS = [
    """from saewidgets.demo import QUICK, demo_artifacts, highlight_features
from saewidgets.widgets import Explorer

art = demo_artifacts(QUICK, progress=False)
explorer = Explorer(art.model, art.sae, art.stats, art.geometry, art.logit_effects,
                    highlights=highlight_features(art), prompt="The Eiffel Tower is in the city of")
explorer.steering.prompt = "I went for a walk and saw"
explorer""",
]
RUN_TIMEOUT_MS = 300_000


def kernel_idle_js() -> str:
    return (
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return !!k && k.status === 'idle'; }"
    )


ALL_CELLS_RAN_JS = (
    "() => { const w = window.jupyterapp.shell.currentWidget;"
    " const cells = w.content.widgets.filter(c => c.model.type === 'code');"
    " return cells.length > 0 && cells.every(c => c.model.executionCount !== null); }"
)
# JupyterLab's own scroll boxes around an output that scroll sideways (a too-wide output gives the cell a scrollbar).
SIDEWAYS_JS = (
    "() => [...document.querySelectorAll('.jp-OutputArea-output, .jp-OutputArea, .jp-Cell-outputWrapper,"
    " .jp-Notebook, .jp-WindowedPanel-outer')]"
    ".filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX) && e.scrollWidth > e.clientWidth + 1)"
    ".map(e => `${e.className} ${e.scrollWidth} > ${e.clientWidth}`)"
)
# An element's colour, and JupyterLab's link colour computed beside it.
LINK_COLOUR_JS = (
    "el => { const p = document.createElement('span'); p.style.color = 'var(--jp-content-link-color)';"
    " el.after(p); const c = [getComputedStyle(el).color, getComputedStyle(p).color]; p.remove(); return c; }"
)
ACTIVE_CELL_JS = "() => window.jupyterapp.shell.currentWidget.content.activeCellIndex"


def open_notebook(page, url: str) -> None:
    """Open ``url`` in a fresh JupyterLab workspace (``reset``) and wait for its kernel. The server is shared by
    the session's tests: without the reset, the previous test's notebook comes back as the current tab, and
    "run all cells" ran there instead (the test after the family map's live one timed out that way)."""
    page.goto(url + ("&" if "?" in url else "?") + "reset")
    page.wait_for_function("() => !!window.jupyterapp", timeout=RUN_TIMEOUT_MS)
    page.wait_for_function(kernel_idle_js(), timeout=RUN_TIMEOUT_MS)


def reopen_without_kernel(page, url: str) -> None:
    """Save the current notebook, close it, shut every kernel down (and with them the widget models), open it
    again without running it."""
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)
    page.evaluate("() => window.jupyterapp.commands.execute('application:close-all')")
    page.evaluate("() => window.jupyterapp.serviceManager.sessions.shutdownAll()")
    open_notebook(page, url)


def open_and_run(page, url: str) -> None:
    open_notebook(page, url)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(ALL_CELLS_RAN_JS, timeout=RUN_TIMEOUT_MS)


def our_errors(page) -> list[str]:
    """Page errors not raised inside the host's own bundle (Notebook 7 logs a settings-schema error of its own)."""
    return [e for e in page.errors if "notebook_core." not in e and "jlab_core." not in e]


def open_demo_explorer(page, server, notebook_writer, name: str, app: str = "lab/tree"):
    """At 1280x720, run a notebook that shows the demo Explorer on ``server`` in JupyterLab (``app="lab/tree"``)
    or Notebook 7 (``app="notebooks"``); returns the live Explorer."""
    base, token, root = server
    page.set_viewport_size({"width": 1280, "height": 720})
    notebook_writer(root, name, DEMO_CELLS)
    open_and_run(page, f"{base}/{app}/{name}?token={token}")
    ex = page.locator(".saew-explorer")
    expect(ex).to_have_count(1, timeout=ROUND_TRIP_MS)
    expect(ex).to_have_class(re.compile("saew-explorer-live"), timeout=ROUND_TRIP_MS)
    return ex


def in_first_screen(page, locator) -> bool:
    box = locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= page.viewport_size["height"]


@pytest.mark.gemma
def test_explorer_on_the_demo_in_jupyterlab(demo, page, jupyter_server, screenshot, notebook_writer):
    base, token, _ = jupyter_server
    ex = open_demo_explorer(page, jupyter_server, notebook_writer, "explorer_lab.ipynb")
    # The offline copy displayed with the widget stays hidden while the widget is live.
    expect(page.locator(".saew-offline-copy")).to_be_hidden()

    # Layout at 1280x720: with the Explorer scrolled to the top, its header, histogram, logit tables and the
    # first top contexts are all on screen; nothing overflows sideways.
    ex.evaluate("el => el.scrollIntoView({block: 'start'})")
    for part in (".saew-card-head", ".saew-hist-box", ".saew-promoted", ".saew-suppressed"):
        assert in_first_screen(page, ex.locator(part)), part
    assert in_first_screen(page, ex.locator(".saew-top .saew-context").first)
    no_horizontal_overflow(ex)
    assert page.evaluate(SIDEWAYS_JS) == []
    numbers_whole_and_aligned(ex)  # Gemma's logit changes, context values and stats
    screenshot(page, "jupyterlab-demo-explorer-1280x720")

    cell = page.evaluate(ACTIVE_CELL_JS)
    first = int(demo.stats.density.argmax())  # what the Explorer opens on
    distant = int(((demo.geometry.coords - demo.geometry.coords[first]) ** 2).sum(1).argmax())
    seen = drive(page, ex, map_target=distant, search="Golden Gate", search_hit=None, target=" Paris")
    assert page.evaluate(ACTIVE_CELL_JS) == cell, "arrow keys on the slider moved the notebook's active cell"
    assert seen["steered"].strip()
    screenshot(page, "jupyterlab-demo-explorer-heatmap", locator=ex)

    # Save, close, shut the kernel down, reopen without running: a fresh kernel holds no widget models. The cell
    # shows the static Explorer (the selection and neighbours it had when displayed), not "model not found".
    selected = seen["first"]  # the copy was made when the cell displayed the Explorer
    reopen_without_kernel(page, f"{base}/lab/tree/explorer_lab.ipynb?token={token}")
    copy = page.locator(".saew-offline-copy")
    expect(copy).to_be_visible(timeout=ROUND_TRIP_MS)
    expect(page.get_by_text("Error displaying widget")).to_be_hidden()
    frame = page.frame_locator(".saew-offline-copy iframe")
    expect(frame.locator(".saew-card-id")).to_have_text(f"Feature #{selected}", timeout=ROUND_TRIP_MS)
    expect(frame.locator(".saew-explorer-notice")).to_contain_text("Static page")
    screenshot(page, "jupyterlab-reopened-without-kernel")
    assert our_errors(page) == []


def test_explorer_drives_in_notebook7(notebook7, page, jupyter_server, screenshot, notebook_writer):
    base, token, root = jupyter_server
    notebook_writer(root, "explorer_nb7.ipynb", SYNTHETIC_CELLS)
    open_and_run(page, f"{base}/notebooks/explorer_nb7.ipynb?token={token}")
    ex = page.locator(".saew-explorer")
    expect_selected(ex, 7)
    seen = drive(page, ex, map_target=1234, search="3x", search_hit=3, target=" fog", steered_check="STEERED")
    assert f"feature={seen['attribution']}" in seen["steered"]
    page.wait_for_function(
        "() => document.querySelectorAll('.saew-heatmap .saew-tok').length >= 10000", timeout=ROUND_TRIP_MS
    )  # the standalone 10k-token heatmap
    assert page.evaluate("window.__pwned") is None
    assert our_errors(page) == []
    screenshot(page, "notebook7-explorer", locator=ex)


@pytest.mark.gemma
def test_demo_explorer_drives_in_notebook7(demo, notebook7, page, jupyter_server, screenshot, notebook_writer):
    # The same real artifacts as in JupyterLab (Gemma, the quick demo SAE), in Notebook 7's page.
    ex = open_demo_explorer(page, jupyter_server, notebook_writer, "explorer_nb7_demo.ipynb", app="notebooks")
    first = int(demo.stats.density.argmax())
    distant = int(((demo.geometry.coords - demo.geometry.coords[first]) ** 2).sum(1).argmax())
    seen = drive(page, ex, map_target=distant, search="Golden Gate", search_hit=None, target=" Paris")
    assert seen["steered"].strip()
    no_horizontal_overflow(ex)
    assert page.evaluate("window.__pwned") is None
    assert our_errors(page) == []
    screenshot(page, "notebook7-demo-explorer", locator=ex)


@pytest.fixture(scope="module")
def dark_jupyter_server(tmp_path_factory):
    """A JupyterLab server of its own whose user settings select the JupyterLab Dark theme (the shared server
    stays light)."""
    dark = {"@jupyterlab/apputils-extension/themes": {"theme": "JupyterLab Dark"}}
    with lab_server(tmp_path_factory, dark) as server:
        yield server


@pytest.mark.gemma
def test_demo_explorer_in_jupyterlab_dark_is_readable(demo, page, dark_jupyter_server, screenshot, notebook_writer):
    ex = open_demo_explorer(page, dark_jupyter_server, notebook_writer, "explorer_dark.ipynb")
    theme = page.evaluate("() => [document.body.dataset.jpThemeName, document.body.dataset.jpThemeLight]")
    assert theme == ["JupyterLab Dark", "false"], theme
    expect(ex.locator(".saew-context-tokens .saew-tok").first).to_be_visible(timeout=ROUND_TRIP_MS)
    ink = ex.locator(".saew-card-id").evaluate("el => getComputedStyle(el).color")
    assert min(map(float, re.findall(r"[\d.]+", ink)[:3])) > 160, f"the heading is not light ink: {ink}"
    ex.evaluate("el => el.scrollIntoView({block: 'start'})")
    ratios = {
        "dashboard": assert_readable(
            ex,
            expect=(
                ".saew-card-id",
                ".saew-logit-value",
                ".saew-logit-token code",
                ".saew-context-tokens .saew-tok",
                ".saew-map-info",
                ".saew-map-bookmark",
                "map label",
            ),
        )
    }
    screenshot(page, "jupyterlab-dark-explorer")
    # Nothing around the Explorer scrolls sideways at 1280x720 either: its output area, the cell, the notebook.
    assert page.evaluate(SIDEWAYS_JS) == []
    # Links (neighbours, bookmarks) wear JupyterLab's link colour, not its reset of <a> to the text colour.
    for link in (".saew-neighbour", ".saew-map-bookmark"):
        shown, theme_link = ex.locator(link).first.evaluate(LINK_COLOUR_JS)
        assert shown == theme_link, (link, shown, theme_link)

    open_tab(ex, "Heatmap")  # the sample text, coloured on the feature's own scale
    expect(ex.locator(".saew-heatmap-view .saew-tok").first).to_be_visible(timeout=ROUND_TRIP_MS)
    ratios["heatmap"] = assert_readable(ex, expect=(".saew-heatmap-view .saew-tok",))
    ex.locator(".saew-tab-bar").evaluate("el => el.scrollIntoView({block: 'start'})")
    screenshot(page, "jupyterlab-dark-heatmap")

    open_tab(ex, "Steering")
    ex.locator(".saew-steer-generate").click()
    expect(ex.locator(".saew-steer-steered .saew-steer-text").first).not_to_be_empty(timeout=120_000)
    ratios["steering"] = assert_readable(ex, expect=(".saew-steer-text",))
    ex.locator(".saew-tab-bar").evaluate("el => el.scrollIntoView({block: 'start'})")
    screenshot(page, "jupyterlab-dark-steering")

    # Switching JupyterLab to its Light theme while the Explorer shows: the views follow, readable.
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    # Wait for the views in their light scheme and the card drawn again: `every` of no roots is true, and under
    # load the probe once ran while the re-rendered Explorer had nothing on screen yet.
    page.wait_for_function(
        """() => {
          const roots = [...document.querySelectorAll('.saew-root')];
          const drawn = (s) => [...document.querySelectorAll(s)].some(e => e.getClientRects().length);
          return roots.length > 0 && roots.every(r => r.dataset.saewScheme === 'light')
            && drawn('.saew-card-id') && drawn('.saew-context-tokens .saew-tok');
        }""",
        timeout=ROUND_TRIP_MS,
    )
    ratios["switched to light"] = assert_readable(ex, expect=(".saew-card-id", ".saew-context-tokens .saew-tok"))
    print({tab: {k: round(v, 1) for k, v in r.items() if v} for tab, r in ratios.items()})
    assert our_errors(page) == []
