"""Drive one live Explorer the way a reader does, in any host (JupyterLab, Notebook 7, marimo).

Everything goes through playwright locators, which reach into marimo's shadow DOM as well as JupyterLab's plain
DOM. Each step waits for the Python round trip and checks that every view agrees on the selected feature.
"""

from __future__ import annotations

import re

from playwright.sync_api import Locator, expect

ROUND_TRIP_MS = 30_000
FEATURE_RE = re.compile(r"Feature #(\d+)")

# Every element inside the Explorer that reaches past the Explorer's right edge, or scrolls sideways.
OVERFLOW_JS = """(root) => {
  const r = root.getBoundingClientRect(), out = [];
  // Content cut off by an ancestor that clips inside the Explorer (an ellipsised cell) does not stick out.
  const clipped = (e) => {
    for (let a = e.parentElement; a && a !== root; a = a.parentElement) {
      if (['hidden', 'clip'].includes(getComputedStyle(a).overflowX) && a.getBoundingClientRect().right <= r.right + 1)
        return true;
    }
    return false;
  };
  for (const e of root.querySelectorAll('*')) {
    if (e.closest('.saew-tooltip') || e.offsetParent === null) continue;
    const b = e.getBoundingClientRect();
    if (b.width && b.right > r.right + 1 && !clipped(e)) out.push(`${e.tagName}.${e.className} right ${b.right} > ${r.right}`);
    const s = getComputedStyle(e);
    if (['auto', 'scroll'].includes(s.overflowX) && e.scrollWidth > e.clientWidth + 1)
      out.push(`${e.tagName}.${e.className} scrolls sideways (${e.scrollWidth} > ${e.clientWidth})`);
  }
  return out;
}"""


def shown_feature(ex: Locator) -> int:
    """The feature the dashboard heading names."""
    return int(FEATURE_RE.fullmatch(ex.locator(".saew-card-id").inner_text()).group(1))


def expect_selected(ex: Locator, feature: int) -> None:
    """Wait until the dashboard shows ``feature``, and every other view names it too.

    Each view's trait reaches the page in its own message, in the order Python sets them (map, dashboard, steering,
    attribution), so the steering input may name the feature a moment after the dashboard does: at load 10 it did
    once in 15 selections, which an immediate check failed."""
    expect(ex.locator(".saew-card-id")).to_have_text(f"Feature #{feature}", timeout=ROUND_TRIP_MS)
    expect(ex.locator(".saew-map-info")).to_contain_text(f"selected #{feature}", timeout=ROUND_TRIP_MS)
    expect(ex.locator(".saew-steer-feature")).to_have_value(str(feature), timeout=ROUND_TRIP_MS)


def click_map_point(page, ex: Locator, feature: int) -> int:
    """Click where ``feature`` is drawn; returns the feature the map selected (the nearest point).

    The map is scrolled to the middle of the viewport first: a point near its bottom edge can lie below the fold
    (Notebook 7 at 1280x720 put one at y = 855), where a mouse click reaches nothing."""
    mp = ex.locator(".saew-map")
    overlay = ex.locator(".saew-map-overlay")
    overlay.evaluate("el => el.scrollIntoView({block: 'center', inline: 'center'})")
    x, y = mp.evaluate("(el, i) => el.saewScreenOf(i)", feature)
    box = overlay.bounding_box()
    px, py, view = box["x"] + x, box["y"] + y, page.viewport_size
    assert 0 <= px < view["width"] and 0 <= py < view["height"], (
        f"feature {feature} at ({px:.0f}, {py:.0f}) is off {view}"
    )
    before = shown_feature(ex)
    page.mouse.click(px, py)
    expect(ex.locator(".saew-card-id")).not_to_have_text(f"Feature #{before}", timeout=ROUND_TRIP_MS)
    picked = shown_feature(ex)
    expect_selected(ex, picked)
    return picked


def no_horizontal_overflow(ex: Locator) -> None:
    bad = ex.evaluate(OVERFLOW_JS)
    assert bad == [], bad[:10]


def open_tab(ex: Locator, name: str) -> None:
    ex.get_by_role("tab", name=name).click()
    expect(ex.get_by_role("tab", name=name)).to_have_attribute("aria-selected", "true")


def drive(
    page,
    ex: Locator,
    *,
    map_target: int,
    search: str,
    search_hit: int | None,
    target: str,
    steered_check: str | None = None,
) -> dict:
    """Map click, neighbour link, text search (ranked list), attribution (bar click), slider by keyboard,
    steering and the heatmap tab; returns what each step selected."""
    expect(ex.locator(".saew-card-id")).to_have_text(FEATURE_RE, timeout=ROUND_TRIP_MS)
    expect(ex).to_have_class(re.compile("saew-explorer-live"), timeout=ROUND_TRIP_MS)
    seen: dict = {"first": shown_feature(ex)}
    seen["map"] = click_map_point(page, ex, map_target)

    # Scroll the dashboard down, then follow a neighbour link: the new feature starts at its top.
    dash = ex.locator(".saew-explorer-dashboard")
    link = ex.locator(".saew-neighbour").first
    neighbour = int(link.inner_text().lstrip("#"))
    link.click()
    expect_selected(ex, neighbour)
    dash.evaluate("el => { el.scrollTop = el.scrollHeight; }")
    ex.locator(".saew-neighbour").first.evaluate("el => el.click()")
    expect(ex.locator(".saew-card-id")).not_to_have_text(f"Feature #{neighbour}", timeout=ROUND_TRIP_MS)
    assert dash.evaluate("el => el.scrollTop") == 0
    seen["neighbour"] = shown_feature(ex)

    # Text search: a ranked, clickable list; the box clears when a selection is made elsewhere.
    box = ex.locator(".saew-map-search")
    box.fill(search)
    box.press("Enter")
    results = ex.locator(".saew-map-result-link")
    expect(results.first).to_be_visible(timeout=ROUND_TRIP_MS)
    if search_hit is not None:
        assert int(results.first.inner_text().lstrip("#")) == search_hit
    pick = results.nth(min(1, results.count() - 1))
    picked = int(pick.inner_text().lstrip("#"))
    pick.click()
    expect_selected(ex, picked)
    seen["search"] = picked

    # Attribution for a typed target through Python, then a bar click selects that feature.
    open_tab(ex, "Attribution")
    ex.locator(".saew-attr-target").fill(target)
    ex.locator(".saew-attr-go").click()
    expect(ex.locator(".saew-attribution .saew-subhead").first).to_contain_text(target.strip(), timeout=ROUND_TRIP_MS)
    expect(ex.locator(".saew-attr-head")).to_contain_text("logit", timeout=ROUND_TRIP_MS)
    bar = ex.locator(".saew-attr-row:not(.saew-attr-head)").nth(1)
    bar_feature = int(bar.locator(".saew-attr-feature").inner_text().lstrip("#"))
    bar.click()
    expect_selected(ex, bar_feature)
    seen["attribution"] = bar_feature

    # Steering: arrow keys move the slider (and it keeps focus), the heading names the feature in use.
    open_tab(ex, "Steering")
    heading = ex.locator(".saew-steer-steered .saew-subhead")
    expect(heading).to_contain_text(f"#{bar_feature}", timeout=ROUND_TRIP_MS)
    slider = ex.locator(".saew-steer-slider")
    slider.focus()
    before = float(slider.input_value())
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert float(slider.input_value()) == before + 1.0
    assert slider.evaluate("el => el.getRootNode().activeElement === el"), "the slider lost focus"
    expect(ex.locator(".saew-steer-multiple")).to_have_text(f"{before + 1:g}× max")
    ex.locator(".saew-steer-generate").click()
    steered = ex.locator(".saew-steer-steered .saew-steer-text").first
    expect(steered).not_to_be_empty(timeout=120_000)
    expect(heading).to_contain_text(f"#{bar_feature} clamped to {before + 1:g}× max", timeout=ROUND_TRIP_MS)
    if steered_check:
        expect(steered).to_contain_text(steered_check)
    seen["steered"] = steered.inner_text()

    # Heatmap: the sample text, coloured on the feature's own scale.
    open_tab(ex, "Heatmap")
    expect(ex.locator(".saew-heatmap-view .saew-tok").first).to_be_attached(timeout=ROUND_TRIP_MS)
    expect(ex.locator(".saew-heatmap .saew-muted").first).to_contain_text(
        f"feature #{bar_feature}", timeout=ROUND_TRIP_MS
    )
    no_horizontal_overflow(ex)
    return seen


# WCAG contrast of text against what is painted behind it: translucent backgrounds (token activations, mixed status
# colours) are composited over the layers below them, down to the first opaque one (white if none). For each selector
# the lowest ratio over its rendered elements (up to 4,000) is returned, so one unreadable token is enough to fail.
CONTRAST_JS = """([root, selectors]) => {
  // "rgb(r, g, b)" / "rgba(r, g, b, a)" in 0-255, or "color(srgb r g b / a)" (color-mix results) in 0-1.
  const rgba = (c) => {
    const v = (c.match(/[\\d.]+/g) || []).map(Number);
    const x = c.startsWith("color(srgb") ? v.map((y, k) => (k < 3 ? y * 255 : y)) : v;
    return x.length < 3 ? [0, 0, 0, 0] : [x[0], x[1], x[2], x.length > 3 ? x[3] : 1];
  };
  const over = (top, under) => [0, 1, 2].map((k) => top[k] * top[3] + under[k] * (1 - top[3]));
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const parent = (e) => e.parentElement || (e.getRootNode && e.getRootNode().host) || null;
  const background = (e) => {
    const layers = [];
    for (; e; e = parent(e)) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let acc = [255, 255, 255];
    for (const c of layers.reverse()) acc = over(c, acc);
    return acc;
  };
  const out = {};
  for (const sel of selectors) {
    const found = [...root.querySelectorAll(sel)].filter((e) => e.getClientRects().length && e.textContent.trim());
    if (!found.length) { out[sel] = null; continue; }
    let worst = Infinity;
    for (const e of found.slice(0, 4000)) {
      const bg = background(e), a = lum(over(rgba(getComputedStyle(e).color), bg)), b = lum(bg);
      worst = Math.min(worst, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05));
    }
    out[sel] = worst;
  }
  return out;
}"""
# Text a reader must be able to read in every theme: dashboard, logit tables, context and heatmap tokens, links,
# map labels (the selected point's label is drawn in the canvas wrap's colour), tabs, attribution, steering text.
READABLE = [
    ".saew-card-id",
    ".saew-stat b",
    ".saew-subhead",
    ".saew-logit-token code",
    ".saew-logit-value",
    ".saew-context-tokens .saew-tok",
    ".saew-context-value",
    ".saew-neighbour",
    ".saew-map-info",
    ".saew-map-bookmark",
    ".saew-tab-active",
    ".saew-attr-feature",
    ".saew-heatmap-view .saew-tok",
    ".saew-steer-text",
]
MAP_LABEL = ".saew-map-canvas-wrap"  # no text of its own: its colour is the ink of labels drawn on the map


def contrast(root, selectors=READABLE) -> dict:
    """Lowest contrast ratio of each selector's rendered text inside ``root`` (a locator), None when absent."""
    return root.evaluate("(el, sels) => (" + CONTRAST_JS + ")([el, sels])", selectors)


def map_label_contrast(root) -> float:
    """Contrast of the map's drawn labels (the canvas wrap's ``color``) against the background behind the map."""
    js = CONTRAST_JS.replace("e.textContent.trim()", "true")
    return root.evaluate("(el, sels) => (" + js + ")([el, sels])", [MAP_LABEL])[MAP_LABEL]


def assert_readable(root, minimum: float = 4.5, *, expect: tuple[str, ...] = ()) -> dict:
    """Every selector of READABLE present in ``root`` reaches ``minimum``; at least 7 of them are present, and
    every one named in ``expect`` is."""
    ratios = contrast(root)
    if root.locator(MAP_LABEL).count():
        ratios["map label"] = map_label_contrast(root)
    low = {k: round(v, 2) for k, v in ratios.items() if v is not None and v < minimum}
    assert not low, f"contrast below {minimum}: {low}"
    assert sum(v is not None for v in ratios.values()) >= 7, ratios
    missing = [k for k in expect if ratios.get(k) is None]
    assert not missing, f"not rendered: {missing}"
    return ratios


# Numbers a reader compares: each shown whole (not cut or ellipsised), and in each logit table the values' text ends
# at one right edge (digits line up by magnitude).
NUMBERS_JS = """(root) => {
  const out = [];
  const cells = root.querySelectorAll('.saew-logit-value, .saew-context-value, .saew-attr-value, .saew-stat b');
  for (const e of cells) {
    if (!e.getClientRects().length) continue;
    if (e.scrollWidth > e.clientWidth + 1) out.push(`${e.className} "${e.textContent}" cut (${e.scrollWidth} > ${e.clientWidth})`);
  }
  for (const table of root.querySelectorAll('.saew-logit-table')) {
    const textRight = (e) => { const r = document.createRange(); r.selectNodeContents(e); return Math.round(r.getBoundingClientRect().right); };
    const rights = [...table.querySelectorAll('.saew-logit-value')].map(textRight);
    if (new Set(rights).size > 1) out.push(`logit values not aligned: right edges ${[...new Set(rights)]}`);
  }
  return out;
}"""


def numbers_whole_and_aligned(root) -> None:
    bad = root.evaluate(NUMBERS_JS)
    assert bad == [], bad[:10]
