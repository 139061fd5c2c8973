"""RunView live in JupyterLab: Stop, clicked in chromium while feature statistics run on a tiny model, ends the run
(the view says stopped, shows no result and where the count stood), and Run again computes them to the end.

The kernel runs the real `feature_stats` on a random tiny GPT-2 and SAE: ~19,000 tokens in batches of 2 (~9,500
batches; 6,918 tokens in batches of 4 took 2.2 s here, too short to be sure a click lands mid-way on a faster
machine). The test clicks Stop only once the view shows statistics tokens done, and checks the count it then shows
is below the total.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from test_jupyterlab_widgets import open_and_run, our_errors

pytestmark = pytest.mark.browser

COUNT_RE = re.compile(r"feature stats: ([\d,]+) / ([\d,]+) tok")
CELLS = [
    """import torch
from saewidgets import analysis, harvest
from saewidgets.models import tiny_model
from saewidgets.sae import SAE, SAEConfig
from saewidgets.widgets import RunView

model = tiny_model("gpt2", seed=3)
sae = SAE(SAEConfig(d_in=model.d_model, n_features=32, architecture="topk", k=4, layer=1, model_name=model.name),
          torch.Generator().manual_seed(0))
texts = [f"Document {i}: the bridge over the bay is red and the fog rolls in at dawn." for i in range(600)]
acts = harvest(model, texts, layer=1, progress=False)
run = RunView(analysis.feature_stats, args=(model, sae, acts), kwargs=dict(top_k=3, batch_size=2),
              title="Statistics of <tiny> GPT-2")
run""",
]
RUN_MS = 300_000


def shown_count(view) -> tuple[int, int]:
    """(done, total) as the view's progress text shows them."""
    match = COUNT_RE.search(view.locator(".saew-run-progress").inner_text())
    assert match, view.locator(".saew-run-progress").inner_text()
    return int(match.group(1).replace(",", "")), int(match.group(2).replace(",", ""))


def test_stop_ends_a_statistics_run_and_run_again_finishes_it(page, jupyter_server, screenshot, notebook_writer):
    base, token, root = jupyter_server
    notebook_writer(root, "run_view.ipynb", CELLS)
    open_and_run(page, f"{base}/lab/tree/run_view.ipynb?token={token}")
    view = page.locator(".saew-run")
    expect(view).to_have_count(1, timeout=60_000)
    expect(view.locator(".saew-run-title")).to_have_text("Statistics of <tiny> GPT-2")
    start, stop = view.locator(".saew-run-start"), view.locator(".saew-run-stop")
    expect(start).to_have_text("Run")
    expect(stop).to_be_disabled()

    start.click()
    expect(view).to_have_attribute("data-state", "running", timeout=30_000)
    expect(start).to_be_disabled()
    expect(view.locator(".saew-run-progress")).to_contain_text(COUNT_RE, timeout=60_000)
    page.wait_for_function(  # some statistics batches done: the stop lands mid-way, not before the first batch
        "() => /feature stats: [1-9]/.test(document.querySelector('.saew-run-progress').textContent)",
        timeout=60_000,
    )
    stop.click()
    expect(view).to_have_attribute("data-state", "stopped", timeout=60_000)
    expect(view.locator(".saew-run-status")).to_contain_text("stopped after")
    expect(view.locator(".saew-run-status")).to_contain_text("no result")
    done, total = shown_count(view)
    assert 0 < done < total, (done, total)
    expect(stop).to_be_disabled()
    expect(start).to_have_text("Run again")
    screenshot(page, "jupyterlab-run-view-stopped", locator=view)

    start.click()  # the same call again, to the end
    expect(view).to_have_attribute("data-state", "done", timeout=RUN_MS)
    expect(view.locator(".saew-run-status")).to_contain_text(re.compile(r"done in [\d.]+ s: FeatureStats"))
    assert shown_count(view) == (total, total)
    expect(stop).to_be_disabled()
    screenshot(page, "jupyterlab-run-view-done", locator=view)
    assert our_errors(page) == []
