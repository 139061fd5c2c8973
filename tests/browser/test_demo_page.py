"""The main job end to end: ``saewidgets demo --quick`` writes an Explorer page that opens offline in chromium and
names a Golden Gate Bridge feature among its highlighted features. Its screenshot is the README's picture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.gemma]


def test_demo_writes_an_offline_page_with_a_golden_gate_feature(demo, tmp_path, page, screenshot):
    exe = Path(sys.executable).with_name("saewidgets")
    run = subprocess.run(
        [str(exe), "demo", "--quick", "--n-prompts", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    page_path = tmp_path / "explorer.html"
    assert f"Explorer written to {page_path.resolve()}" in run.stdout
    assert "Golden Gate Bridge" in run.stdout

    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.set_viewport_size({"width": 1500, "height": 1000})
    page.goto(page_path.as_uri())
    page.wait_for_selector(".saew-dashboard .saew-card-id")
    assert all(url.startswith(("file:", "data:")) for url in requests), requests

    bridge = page.locator(".saew-map-bookmark", has_text="Golden Gate Bridge")
    assert bridge.count() == 1
    bridge.click()
    feature = bridge.inner_text().split("#")[-1]
    page.wait_for_function(
        "(t) => document.querySelector('.saew-card-id').textContent === t", arg=f"Feature #{feature}"
    )
    contexts = page.locator(".saew-dashboard").inner_text()
    assert contexts.count("Golden") >= 5, "the feature's top contexts are about the bridge"
    screenshot(page, "demo-explorer")
