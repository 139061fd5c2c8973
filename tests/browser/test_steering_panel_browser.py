"""The steering panel comparing SAE-feature steering with vector (DiffMean) steering, live in JupyterLab.

The panel is views only (generation is the kernel's ``steer_fn`` / ``vector_fn``), so the kernel here answers with
fixed results that name what they were asked for: the test checks that one click on Generate sends the feature,
its clamp and the vector's strength as set in the browser, and that the three columns (default, feature, vector)
show what came back, each steered heading with the measured hit rate its run carries.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from test_jupyterlab_widgets import open_and_run, our_errors

pytestmark = pytest.mark.browser

CELLS = [
    """from dataclasses import dataclass
from saewidgets.widgets import SteeringPanel

@dataclass
class Result:
    prompts: list
    default: list
    steered: list
    hit_rate: float

def steer_fn(prompt, feature, multiple):
    return Result([prompt], [prompt + ' DEFAULT'], [f'{prompt} FEATURE {feature} at {multiple:g}'], 0.25)

def vector_fn(prompt, alpha):
    return Result([prompt], [prompt + ' DEFAULT'], [f'{prompt} VECTOR at {alpha:g}'], 0.5)

panel = SteeringPanel(steer_fn, vector_fn=vector_fn, vector_name='DiffMean <b>vector</b>', feature=7,
                      multiple=2.0, alpha=0.5, prompt='I went for a walk and saw')
panel""",
]


def test_steering_panel_shows_feature_and_vector_steering_side_by_side(
    page, jupyter_server, screenshot, notebook_writer
):
    base, token, root = jupyter_server
    notebook_writer(root, "steering_vector.ipynb", CELLS)
    open_and_run(page, f"{base}/lab/tree/steering_vector.ipynb?token={token}")
    panel = page.locator(".saew-steering")
    expect(panel).to_have_count(1, timeout=60_000)
    vector = panel.locator(".saew-steer-vector")
    expect(vector).to_be_visible()
    expect(vector.locator(".saew-subhead")).to_have_text("DiffMean <b>vector</b> (added at 0.5× median norm)")
    expect(vector.locator(".saew-empty")).to_be_visible()
    # The vector's slider: moved with the keyboard, it shows the strength that Generate then sends.
    alpha = panel.locator(".saew-steer-alpha")
    alpha.focus()
    for _ in range(5):
        alpha.press("ArrowRight")
    expect(panel.locator(".saew-steer-alpha-value")).to_have_text("0.75× median norm")
    panel.locator(".saew-steer-generate").click()
    expect(vector.locator(".saew-steer-text")).to_have_text("I went for a walk and saw VECTOR at 0.75", timeout=60_000)
    expect(panel.locator(".saew-steer-steered .saew-steer-text")).to_have_text(
        "I went for a walk and saw FEATURE 7 at 2"
    )
    expect(panel.locator(".saew-steer-default .saew-steer-text")).to_have_text("I went for a walk and saw DEFAULT")
    expect(panel.locator(".saew-steer-steered .saew-subhead")).to_contain_text("hit rate 25%")
    expect(vector.locator(".saew-subhead")).to_have_text(
        "DiffMean <b>vector</b> (added at 0.75× median norm) · hit rate 50%"
    )
    # Three columns side by side, not stacked.
    boxes = [panel.locator(f".saew-steer-{c}").bounding_box() for c in ("default", "steered", "vector")]
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"] and abs(boxes[0]["y"] - boxes[2]["y"]) < 2, boxes
    screenshot(page, "jupyterlab-steering-feature-vs-vector", locator=panel)
    assert our_errors(page) == []
