"""The static Explorer page in a real browser: renders from file://, stays offline, resists hostile tokens,
and links map clicks to dashboards client-side."""

from __future__ import annotations

import json
import re

import pytest

import synthetic_results as syn
from saewidgets.analysis.results import SteeringExample
from saewidgets.widgets import export_html

pytestmark = pytest.mark.browser


def expanded(card: dict) -> dict:
    """A packed card as static_host.js hands it to the views: integer activations times ``acts_unit``."""
    unit = card.get("acts_unit")
    if unit:
        for item in [*card.get("top", []), *(e for b in card.get("quantiles", []) for e in b.get("examples", []))]:
            item["acts"] = [q * unit for q in item["acts"]]
    return card


def card_is(page, text: str, timeout: int = 5000) -> None:
    """Wait until the dashboard shows ``text`` as its heading (clicks select after the double-click window, and
    packed cards decompress asynchronously)."""
    page.wait_for_function(
        "(t) => { const e = document.querySelector('.saew-card-id'); return e && e.textContent === t; }",
        arg=text,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def static_page_path(tmp_path_factory):
    ex = syn.explorer(n_features=400, hostile=True, background=False)
    ex.steering.prompt = "The bridge"
    ex.steering.generate()
    ex.tab = "heatmap"  # fill the heatmap tab, as a user would have
    ex.show_steering(
        SteeringExample(
            feature=42,
            multiple=4.0,
            prompts=["I saw"],
            default=["I saw a cat"],
            steered=["I saw the bridge"],
            family=(42, 7),  # the demo's steering example can clamp a family
        )
    )
    highlights = {'<img src=x onerror="window.__pwned=1"> Golden Gate': 42}
    return export_html(tmp_path_factory.mktemp("static") / "explorer.html", ex, highlights=highlights), ex


def test_static_explorer_renders_offline_and_map_click_changes_dashboard(page, static_page_path, screenshot):
    path, ex = static_page_path
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_selector(".saew-map .saew-map-overlay")
    page.wait_for_selector(".saew-dashboard .saew-card-id")
    for cls in ("saew-map", "saew-dashboard", "saew-attribution", "saew-steering", "saew-heatmap"):
        assert page.locator(f".{cls}").count() == 1, cls
    assert page.locator(".saew-fallback").count() == 0  # every view replaced its script-free fallback
    before = page.inner_text(".saew-card-id")
    assert before == f"Feature #{ex.selected}"

    target = next(i for i in range(400) if i != ex.selected and i not in ex.map.highlight)
    x, y = page.evaluate(f"document.querySelector('.saew-map').saewScreenOf({target})")
    box = page.locator(".saew-map-overlay").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)
    card_is(page, f"Feature #{target}")
    assert f"selected #{target}" in page.inner_text(".saew-map-info")
    # The embedded card decoded in the browser is the card Python embedded, field for field.
    shown = page.evaluate(f"SAEW.models.explorer.__saewCards.get({target})")
    assert shown == expanded(ex.static_card(target))

    # A neighbour link navigates client-side too.
    link = page.locator(".saew-neighbour").first
    nb = link.inner_text()
    link.click()
    card_is(page, f"Feature {nb}")

    # A named feature (its label is hostile text) is one click away.
    mark = page.locator(".saew-map-bookmark")
    assert "onerror" in mark.inner_text()
    mark.click()
    card_is(page, "Feature #42")
    page.locator(".saew-tab-button", has_text="Steering").click()
    assert page.inner_text(".saew-steer-steered .saew-steer-text") == "I saw the bridge"
    assert "#42+#7 clamped to 4" in page.inner_text(".saew-steer-steered .saew-subhead")

    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert page.errors == []
    screenshot(page, "static-explorer", full_page=True)


def test_hostile_tokens_do_not_execute_in_the_static_page(page, static_page_path):
    path, _ = static_page_path
    page.goto(path.as_uri())
    page.wait_for_selector(".saew-dashboard .saew-tok")
    # Visit several dashboards (all full of hostile tokens) and the heatmap tab.
    for k in range(3):
        page.locator(".saew-neighbour").nth(k).click()
        page.wait_for_timeout(50)
    page.locator(".saew-tab-button", has_text="Heatmap").click()
    page.locator(".saew-heatmap .saew-tok").first.hover()
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".saew-root img").count() == 0
    assert page.locator("body script").count() == 3  # only our own
    shown = page.locator(".saew-dashboard .saew-tokens").all_inner_texts()
    assert any("onerror" in s for s in shown)  # the hostile strings are shown as text


def test_static_map_search_by_id_selects_and_text_search_explains(page, static_page_path):
    path, _ = static_page_path
    page.goto(path.as_uri())
    search = page.locator(".saew-map-search")
    search.fill("#12")
    search.press("Enter")
    card_is(page, "Feature #12")
    search.fill("bridge")
    search.press("Enter")
    assert "kernel" in page.inner_text(".saew-map-message")


def test_ten_thousand_token_heatmap_renders_fast_and_hover_shows_token_value_position(page, tmp_path, screenshot):
    from saewidgets.widgets import TokenHeatmap

    toks = syn.tokens(10_000, seed=3, hostile=True)
    ta = syn.token_activations(toks, [4, 9])
    path = TokenHeatmap(ta, title="10k tokens").save_html(tmp_path / "heatmap.html")
    page.goto(path.as_uri())
    page.wait_for_function("() => document.querySelectorAll('.saew-heatmap .saew-tok').length === 10000")
    # Time a full rebuild of the 10k-token view (what a new text costs) inside the page.
    ms = page.evaluate("""() => {
        const m = SAEW.models.main, t0 = performance.now();
        m.set('title', 'rebuilt');
        return new Promise(r => queueMicrotask(() => r(performance.now() - t0)));
    }""")
    assert page.inner_text(".saew-heatmap .saew-title") == "rebuilt"
    assert ms < 1500, f"rebuilding 10k tokens took {ms:.0f} ms"
    k = 1234
    span = page.locator(f".saew-heatmap .saew-tok[data-i='{k}']")
    span.scroll_into_view_if_needed()
    t0 = page.evaluate("performance.now()")
    span.hover()
    tip = page.locator(".saew-tooltip")
    tip.wait_for(state="visible")
    assert page.evaluate("performance.now()") - t0 < 1000
    text = tip.inner_text()
    assert f"position {k}" in text and json_token(toks[k]) in text
    shown_value = float(text.split("activation ")[1].split()[0])
    assert shown_value == pytest.approx(float(ta.acts[k, 0]), abs=1e-3)
    # Switch the feature: every span is recoloured from the second column.
    page.select_option(".saew-heatmap-picker", "1")
    assert "feature #9" in page.inner_text(".saew-heatmap .saew-muted")
    assert page.evaluate("window.__pwned") is None and page.errors == []
    screenshot(page, "static-heatmap-10k")


def json_token(tok: str) -> str:
    import json

    return json.dumps(tok)


def test_lasso_on_the_static_map_selects_the_features_inside(page, static_page_path):
    path, ex = static_page_path
    page.goto(path.as_uri())
    page.wait_for_selector(".saew-map .saew-map-overlay")
    box = page.locator(".saew-map-overlay").bounding_box()
    # A rectangle-ish lasso around the whole canvas's middle third.
    x0, y0, x1, y1 = (
        box["x"] + box["width"] * 0.2,
        box["y"] + box["height"] * 0.2,
        box["x"] + box["width"] * 0.8,
        box["y"] + box["height"] * 0.8,
    )
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in [(x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)]:
        page.mouse.move(x, y, steps=5)
    page.mouse.up()
    info = page.inner_text(".saew-map-info")
    assert "lasso" in info, info
    n = int(info.split("lasso ")[1])
    inside = page.evaluate("SAEW.models.explorer.get('map_lasso')")
    assert len(inside) == n > 0
    selected = page.evaluate("SAEW.models.explorer.get('map_selected')")
    assert selected in inside
    card_is(page, f"Feature #{selected}")
    # The lassoed features are listed, densest first, and each is one click away.
    items = page.locator(".saew-map-result-link")
    assert items.count() == min(n, 100)
    density = [ex.stats.density[int(t.lstrip("#"))] for t in items.all_inner_texts()]
    assert density == sorted(density, reverse=True)
    third = items.nth(2).inner_text()
    items.nth(2).click()
    card_is(page, f"Feature {third}")


def test_map_of_twenty_thousand_features_draws_and_selects_quickly(page, tmp_path, screenshot):
    from saewidgets.widgets import FeatureMap

    n = 20_000
    geo, st = syn.geometry(n, n_clusters=20), syn.stats(n)
    path = FeatureMap.from_geometry(geo, st, color_by="density").save_html(tmp_path / "map.html")
    page.goto(path.as_uri())
    page.wait_for_selector(".saew-map .saew-map-overlay")
    assert f"{n} features" in page.inner_text(".saew-map-info")
    # Redraw every point (what zooming costs) and time it in the page.
    ms = page.evaluate("""() => {
        const m = SAEW.models.main, t0 = performance.now();
        m.set('color_by', 'cluster');
        return new Promise(r => queueMicrotask(() => r(performance.now() - t0)));
    }""")
    assert ms < 1000, f"redrawing {n} points took {ms:.0f} ms"
    target = 12345
    x, y = page.evaluate(f"document.querySelector('.saew-map').saewScreenOf({target})")
    box = page.locator(".saew-map-overlay").bounding_box()
    # Scrolling over a map not clicked into leaves it alone (the page scrolls) and says how to zoom.
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(100)
    assert page.evaluate(f"document.querySelector('.saew-map').saewScreenOf({target})") == [x, y]
    assert page.locator(".saew-map-hint").is_visible()
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_function("() => SAEW.models.main.get('selected') >= 0")
    selected = page.evaluate("SAEW.models.main.get('selected')")
    sx, sy = page.evaluate(f"document.querySelector('.saew-map').saewScreenOf({selected})")
    assert abs(sx - x) < 1.5 and abs(sy - y) < 1.5  # the clicked point (or one drawn on the same pixel)
    page.mouse.wheel(0, -400)  # the map was clicked into: the wheel zooms around the cursor
    page.wait_for_timeout(100)
    zx, zy = page.evaluate(f"document.querySelector('.saew-map').saewScreenOf({target})")
    assert abs(zx - x) < 3 and abs(zy - y) < 3  # the point under the cursor stays put
    page.keyboard.down("Shift")  # shift-drag pans by the drag distance
    page.mouse.down()
    page.mouse.move(box["x"] + x + 40, box["y"] + y + 25, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    px, py = page.evaluate(f"document.querySelector('.saew-map').saewScreenOf({target})")
    assert abs(px - zx - 40) < 3 and abs(py - zy - 25) < 3
    assert page.evaluate("SAEW.models.main.get('lasso')") in (None, [])  # panning is not a lasso
    # Double-click resets the view and selects nothing, wherever it lands.
    other = page.evaluate("document.querySelector('.saew-map').saewScreenOf(777)")
    page.mouse.dblclick(box["x"] + other[0], box["y"] + other[1])
    page.wait_for_timeout(400)  # past the click's wait for a second click
    assert page.evaluate("SAEW.models.main.get('selected')") == selected
    rx, ry = page.evaluate(f"document.querySelector('.saew-map').saewScreenOf({target})")
    assert abs(rx - x) < 0.5 and abs(ry - y) < 0.5
    assert page.errors == []
    screenshot(page, "static-map-20k")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_static_page_follows_the_browser_colour_scheme_and_stays_readable(page, static_page_path, screenshot, scheme):
    from explorer_driver import assert_readable, no_horizontal_overflow, numbers_whole_and_aligned

    path, ex = static_page_path
    page.emulate_media(color_scheme=scheme)
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(path.as_uri())
    card_is(page, f"Feature #{ex.selected}")
    root = page.locator(".saew-explorer")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(255, 255, 255)") == (scheme == "light"), background
    assert_readable(root)
    no_horizontal_overflow(root)
    numbers_whole_and_aligned(root)
    screenshot(page, f"static-explorer-{scheme}")
    # The heatmap tab colours its text on the feature's own scale (its max over the corpus), not the text's max:
    # the strongest token's colour is as strong as max here / max over the corpus says.
    info = page.inner_text(".saew-heatmap .saew-muted")
    here, corpus = (float(v) for v in re.findall(r"max here ([\d.]+) .* max over the corpus, ([\d.]+)", info)[0])
    assert here < corpus, info
    alphas = page.eval_on_selector_all(
        ".saew-heatmap-view .saew-tok",
        "els => els.map(e => Number((getComputedStyle(e).backgroundColor.match(/[\\d.]+/g) || [])[3] || 0))",
    )
    assert max(alphas) == pytest.approx(0.12 + 0.78 * here / corpus, abs=0.01), (info, max(alphas))


def test_static_page_follows_a_colour_scheme_switch_while_open(page, static_page_path):
    """The browser switching light -> dark -> light under an open page: every view's palette follows, and the
    text stays readable after each switch."""
    from explorer_driver import assert_readable

    path, ex = static_page_path
    page.emulate_media(color_scheme="light")
    page.goto(path.as_uri())
    card_is(page, f"Feature #{ex.selected}")
    root = page.locator(".saew-explorer")
    for scheme in ("dark", "light"):
        page.emulate_media(color_scheme=scheme)
        page.wait_for_function(
            "(s) => [...document.querySelectorAll('.saew-root')].every(r => r.dataset.saewScheme === s)", arg=scheme
        )
        assert_readable(root)
    assert page.errors == []


def test_static_explorer_stacks_its_views_in_a_narrow_window(page, static_page_path, screenshot):
    """At 640 px the dashboard moves under the map; nothing scrolls sideways and every number still shows whole."""
    from explorer_driver import no_horizontal_overflow, numbers_whole_and_aligned

    path, ex = static_page_path
    page.set_viewport_size({"width": 640, "height": 900})
    page.goto(path.as_uri())
    card_is(page, f"Feature #{ex.selected}")
    root = page.locator(".saew-explorer")
    mp = page.locator(".saew-explorer-map").bounding_box()
    dash = page.locator(".saew-explorer-dashboard").bounding_box()
    assert dash["y"] >= mp["y"] + mp["height"] - 1, (mp, dash)
    no_horizontal_overflow(root)
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    numbers_whole_and_aligned(root)
    screenshot(page, "static-explorer-640", full_page=True)


def test_compact_page_of_4096_features_decodes_every_card_on_demand(page, tmp_path):
    """4,096 features: every card embedded, gzip-packed; the page shows quickly and any card decodes as Python
    embedded it."""
    ex = syn.explorer(n_features=4096, background=False)
    path = export_html(tmp_path / "explorer.html", ex)
    size = path.stat().st_size
    page.goto(path.as_uri())
    card_is(page, f"Feature #{ex.selected}")
    boot_ms = page.evaluate("SAEW.bootMs")
    for i in (0, 1000, 2047, 4095):
        assert page.evaluate(f"SAEW.models.explorer.__saewCards.get({i})") == expanded(ex.static_card(i))
    search = page.locator(".saew-map-search")
    search.fill("#4000")
    search.press("Enter")
    card_is(page, "Feature #4000")
    print(
        f"4096-feature synthetic page: {size / 1e6:.2f} MB ({size / 4096:.0f} B/feature), every view drawn "
        f"{boot_ms:.0f} ms after the page started"
    )
    assert page.errors == []


def test_packed_card_values_at_every_scale_decode_exactly_in_the_browser(page, tmp_path):
    """Context values and activations from 1e-32 to 1e31: the page's context columns (``m / 10**k``) and the
    JSON kept for the rest give chromium exactly the numbers Python embedded, for every card."""
    geo, st = syn.geometry(64), syn.stats(64)

    def card_fn(i: int) -> dict:
        card = syn.card(i, geo, st)
        scale = 10.0 ** (i - 32)
        for item in [*card["top"], *(e for b in card["quantiles"] for e in b["examples"])]:
            item["value"] *= scale
            item["acts"] = [a * scale for a in item["acts"]]
        return card

    ex = syn.explorer(n_features=64, background=False, card_fn=card_fn)
    path = export_html(tmp_path / "explorer.html", ex)
    page.goto(path.as_uri())
    card_is(page, f"Feature #{ex.selected}")
    # through JSON text read as floats: an integral double past 2**53 would otherwise come back as an inexact int
    shown = page.evaluate(
        "Promise.all(Array.from({length: 64}, (_, i) => SAEW.models.explorer.__saewCards.get(i)))"
        ".then((cards) => JSON.stringify(cards))"
    )
    assert json.loads(shown, parse_int=float) == [expanded(ex.static_card(i)) for i in range(64)]
    assert page.errors == []


def test_page_text_decodes_to_the_embedded_bytes_at_every_length(page, static_page_path):
    """The page's base85 (``_embed``): every length of last group (0 to 3 bytes past a multiple of 4), the
    alphabet's extremes, and gzip-compressed text inflate in chromium to exactly the bytes Python embedded."""
    from saewidgets.widgets._embed import embed_text

    path, _ = static_page_path
    page.goto(path.as_uri())
    page.wait_for_function("() => window.SAEW && SAEW.bootMs")
    samples = [bytes(range(k)) for k in range(10)] + [b"\xff" * 7, b"\x00" * 5, bytes(range(256)) * 3]
    texts = [embed_text(raw) for raw in samples]
    assert page.evaluate("(ts) => ts.map((t) => Array.from(saewBytes(t)))", texts) == [list(s) for s in samples]
    inflated = page.evaluate(
        "async (ts) => (await Promise.all(ts.map((t) => SAEW.inflate(t)))).map((b) => Array.from(b))",
        [embed_text(raw, compress=True) for raw in samples],
    )
    assert inflated == [list(s) for s in samples]
