"""Widget payload bytes and chromium render time for a 10,000-token heatmap and a 16,384-point feature map.

Payload: the view's self-contained static HTML (JS, CSS and data inlined) against the raw data it carries (float32
activations / coordinates plus UTF-8 token text). Render: headless chromium (playwright, `/usr/bin/chromium`, the
launch arguments of ``notes/WIDGETS.md``) loads the page from disk until the view's DOM is present and one frame
has been painted, against a page holding the same content with no script: pre-rendered coloured token spans, or
a canvas drawn by a ten-line loop over the same coordinates.
"""

from __future__ import annotations

import base64
import html
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .timing import Row, interleaved, median

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
N_TOKENS, N_POINTS = 10_000, 16_384
HEATMAP_READY = f"() => document.querySelectorAll('.saew-heatmap .saew-tok').length >= {N_TOKENS}"
MAP_READY = "() => !!document.querySelector('.saew-map .saew-map-overlay')"
PLAIN_READY = "() => window.__done === true"


def heatmap_data(seed: int = 0) -> tuple[list[str], np.ndarray]:
    """10,000 real Gemma tokens of the demo corpus (as strings) and sparse, skewed activations."""
    from saewidgets import demo_corpus

    from .fixtures import gemma

    model, tokens = gemma(), []
    for text in demo_corpus():
        tokens += model.tokens_to_str(model.encode(text, add_bos=False))
        if len(tokens) >= N_TOKENS:
            break
    g = np.random.default_rng(seed)
    acts = (g.random(N_TOKENS) < 0.05) * g.exponential(3.0, N_TOKENS)
    return tokens[:N_TOKENS], acts.astype(np.float32)


def map_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.standard_normal((N_POINTS, 2)).astype(np.float32), g.integers(0, 30, N_POINTS).astype(np.int32)


def plain_heatmap(tokens: list[str], acts: np.ndarray) -> str:
    """The reference: the same tokens as server-rendered spans, coloured inline, no script."""
    top = float(acts.max()) or 1.0
    spans = "".join(
        f'<span style="background:rgba(255,120,0,{a / top:.2f})">{html.escape(t)}</span>' for t, a in zip(tokens, acts)
    )
    return f"<!doctype html><meta charset=utf-8><pre>{spans}</pre><script>window.__done = true</script>"


def plain_map(coords: np.ndarray) -> str:
    """The reference: the same float32 coordinates (base64) drawn on a canvas by a minimal loop."""
    b64 = base64.b64encode(coords.tobytes()).decode()
    return (
        "<!doctype html><meta charset=utf-8><canvas id=c width=600 height=420></canvas><script>"
        f"const s=atob('{b64}'),u=new Uint8Array(s.length);for(let i=0;i<s.length;i++)u[i]=s.charCodeAt(i);"
        "const p=new Float32Array(u.buffer),x=document.getElementById('c').getContext('2d');"
        "for(let i=0;i<p.length;i+=2)x.fillRect(300+p[i]*60,210+p[i+1]*60,2,2);window.__done=true</script>"
    )


def load_timer(page: Any, path: Path, ready: str) -> Callable[[], None]:
    """A contender: open ``path`` and wait (polling every frame) until ``ready`` holds, then for one more frame."""
    url = path.as_uri()

    def run() -> None:
        page.goto("about:blank")
        page.goto(url, wait_until="commit")
        page.wait_for_function(ready, polling="raf", timeout=60_000)
        page.evaluate("() => new Promise((r) => requestAnimationFrame(() => r()))")

    return run


def run(quick: bool = False) -> list[Row]:
    from playwright.sync_api import sync_playwright

    from saewidgets.widgets import FeatureMap, TokenHeatmap

    repeats = 3 if quick else 7
    tokens, acts = heatmap_data()
    coords, clusters = map_data()
    pages = {
        "heatmap": (
            TokenHeatmap(tokens=tokens, acts=acts, feature=0).to_html(),
            plain_heatmap(tokens, acts),
            HEATMAP_READY,
            acts.nbytes + len("".join(tokens).encode()),
            "float32 values + UTF-8 tokens",
        ),
        "map": (
            FeatureMap(coords, clusters=clusters).to_html(),
            plain_map(coords),
            MAP_READY,
            coords.nbytes + clusters.nbytes,
            "float32 coordinates + int32 clusters",
        ),
    }
    labels = {"heatmap": f"{N_TOKENS:,}-token heatmap", "map": f"{N_POINTS:,}-point feature map"}
    rows = []
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        try:
            for name, (ours, plain, ready, raw_bytes, raw_what) in pages.items():
                ours_path, plain_path = Path(folder, f"{name}.html"), Path(folder, f"{name}-plain.html")
                ours_path.write_text(ours, encoding="utf-8")
                plain_path.write_text(plain, encoding="utf-8")
                times = interleaved(
                    {"plain": load_timer(page, plain_path, PLAIN_READY), "ours": load_timer(page, ours_path, ready)},
                    repeats,
                )
                rows.append(
                    Row(
                        "widgets",
                        f"{labels[name]}: static HTML payload",
                        "bytes",
                        len(ours.encode()),
                        raw_bytes,
                        f"raw data ({raw_what})",
                        "lower",
                        None,
                        "JS, CSS and base64 data inlined; offline, self-contained",
                    )
                )
                rows.append(
                    Row(
                        "widgets",
                        f"{labels[name]}: chromium render",
                        "ms",
                        median(times["ours"]) * 1e3,
                        median(times["plain"]) * 1e3,
                        "script-free page with the same content",
                        "lower",
                        None,
                        f"headless chromium (swiftshader), load to DOM present + 1 frame, median of {repeats}",
                        times,
                    )
                )
        finally:
            browser.close()
    return rows
