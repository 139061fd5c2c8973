"""Stop in the Explorer's attribution and heatmap tabs, live in JupyterLab: clicked while the kernel's callback runs,
it sets that job's stop event, the tab says "stopped", keeps what it showed before (nothing of the stopped run), and
the next request works.

The Explorer is the synthetic one (views only): its attribution and heatmap callbacks run until their job's stop
event is set when asked for something "slow", as the steering panel's does in the marimo test. That the analysis
calls themselves stop between batches is tested on a real model in ``tests/test_cancel.py``.
"""

from __future__ import annotations

import pytest
from explorer_driver import ROUND_TRIP_MS, expect_selected, open_tab
from playwright.sync_api import expect
from test_jupyterlab_widgets import TESTS_DIR, open_and_run, our_errors

pytestmark = pytest.mark.browser

CELLS = [
    f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
    """import synthetic_results as syn
from saewidgets.cancel import Cancelled
from saewidgets.widgets._jobs import current_stop_event

prompt_tokens, text_tokens = syn.tokens(12, seed=5), syn.tokens(200, seed=6)

def until_stopped(what):
    # A call that runs until its job's Stop sets the stop event, then stops as the analysis calls do.
    if not current_stop_event().wait(60):
        raise RuntimeError(f"the slow {what} was never stopped")
    raise Cancelled(f"Stopped: the {what} did not finish")

def attribute_fn(prompt, target):
    if target and "slow" in target:
        until_stopped("attribution")
    return syn.attribution(prompt_tokens, target, 300)

def activations_fn(text, features):
    if "slow" in text:
        until_stopped("heatmap")
    return syn.token_activations(syn.tokens(len(text.split()), seed=6), features)

ex = syn.explorer(n_features=300, attribute_fn=attribute_fn, activations_fn=activations_fn, selected=7)
ex""",
]


def test_stop_in_the_attribution_and_heatmap_tabs(page, jupyter_server, screenshot, notebook_writer):
    base, token, root = jupyter_server
    notebook_writer(root, "explorer_stop.ipynb", CELLS)
    open_and_run(page, f"{base}/lab/tree/explorer_stop.ipynb?token={token}")
    ex = page.locator(".saew-explorer")
    expect_selected(ex, 7)

    # Attribution: a slow target, stopped; the rows shown stay those of the last finished attribution.
    open_tab(ex, "Attribution")
    attr = ex.locator(".saew-attribution")
    go, stop, status = attr.locator(".saew-attr-go"), attr.locator(".saew-attr-stop"), attr.locator(".saew-status")
    heading = attr.locator(".saew-subhead").first
    before = heading.inner_text()
    expect(stop).to_be_disabled()
    attr.locator(".saew-attr-target").fill(" slow")
    go.click()
    expect(status).to_have_text("attributing…", timeout=ROUND_TRIP_MS)
    expect(stop).to_be_enabled()
    expect(go).to_be_disabled()
    stop.click()
    expect(status).to_have_text("stopped", timeout=ROUND_TRIP_MS)
    expect(stop).to_be_disabled()
    expect(go).to_be_enabled()
    assert heading.inner_text() == before and "slow" not in before
    attr.locator(".saew-attr-target").fill(" fog")
    go.click()
    expect(heading).to_contain_text("fog", timeout=ROUND_TRIP_MS)
    expect(status).not_to_have_text("stopped")
    screenshot(page, "jupyterlab-explorer-attribution-after-stop", locator=ex)

    # Heatmap: the tab colours its text; a slow text is stopped and the tokens shown stay the previous text's.
    open_tab(ex, "Heatmap")
    tokens = ex.locator(".saew-heatmap-view .saew-tok")
    text, show = ex.locator(".saew-heatmap-text"), ex.locator(".saew-heatmap-show")
    hm_stop, hm_status = ex.locator(".saew-heatmap-stop"), ex.locator(".saew-heatmap-status")
    expect(show).to_be_enabled(timeout=ROUND_TRIP_MS)
    text.fill("one two three four")
    show.click()
    expect(tokens).to_have_count(4, timeout=ROUND_TRIP_MS)
    expect(hm_stop).to_be_disabled()
    text.fill("a slow text of seven words here")
    show.click()
    expect(hm_status).to_have_text("reading activations…", timeout=ROUND_TRIP_MS)
    expect(hm_stop).to_be_enabled()
    hm_stop.click()
    expect(hm_status).to_have_text("stopped", timeout=ROUND_TRIP_MS)
    expect(hm_stop).to_be_disabled()
    expect(tokens).to_have_count(4)  # nothing of the stopped run is shown
    text.fill("five words to colour now")
    show.click()
    expect(tokens).to_have_count(5, timeout=ROUND_TRIP_MS)
    expect(hm_status).not_to_have_text("stopped")
    screenshot(page, "jupyterlab-explorer-heatmap-after-stop", locator=ex)
    assert our_errors(page) == []
