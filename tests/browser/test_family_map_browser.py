"""The FamilyMap (feature splitting across a family of SAEs) in chromium: the static page from file:// and the live
widget in JupyterLab. Clicking a feature of the smallest SAE shows its dashboard beside its four children's (the
planted split of `synthetic_results.family_map`); clicking a child goes one level further down."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from test_jupyterlab_widgets import TESTS_DIR, open_and_run, our_errors

import synthetic_results as syn

pytestmark = pytest.mark.browser


def click_feature(page, size: int, feature: int) -> None:
    """Click the map point of ``feature`` of the ``size``-feature SAE (positions from the views' test hooks)."""
    family = page.locator(".saew-family").first
    point = family.evaluate(f"el => el.saewPointOf({size}, {feature})")
    x, y = family.locator(".saew-map").evaluate(f"el => el.saewScreenOf({point})")
    family.locator(".saew-map-overlay").click(position={"x": x, "y": y})


def expect_cards(page, heads: list[str], timeout: int = 10_000) -> None:
    """The dashboards shown, left to right, have these heads ("size · #feature") and each holds its card."""
    cards = page.locator(".saew-family-card")
    expect(cards).to_have_count(len(heads), timeout=timeout)
    for k, head in enumerate(heads):
        expect(cards.nth(k).locator(".saew-family-card-head .saew-subhead")).to_have_text(head)
        expect(cards.nth(k).locator(".saew-card-id")).to_have_count(1, timeout=timeout)


def split_heads(view, size: int, feature: int) -> list[str]:
    return [f"{s} · #{f}" for s, f in view.shown(size, feature)]


def test_static_family_page_links_map_clicks_to_dashboards(page, tmp_path, screenshot):
    view = syn.family_map(hostile=True, embed=(8, 0))
    path = view.save_html(tmp_path / "family.html")
    page.goto(path.as_uri())
    expect(page.locator(".saew-family-legend-item")).to_have_count(3)
    click_feature(page, 8, 0)
    expect_cards(page, split_heads(view, 8, 0))
    expect(page.locator(".saew-family-status")).to_contain_text("4 children in 32")
    # The hover names the point by its SAE and feature, not by its index in the joint map or a "cluster".
    family = page.locator(".saew-family").first
    point = family.evaluate("el => el.saewPointOf(32, 5)")
    x, y = family.locator(".saew-map").evaluate(f"el => el.saewScreenOf({point})")
    family.locator(".saew-map-overlay").hover(position={"x": x, "y": y})
    tip = page.locator(".saew-family-map .saew-tooltip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("SAE 32 · feature #5")
    assert "cluster" not in tip.inner_text() and f"feature #{point}\n" not in tip.inner_text() + "\n"
    child = view.tree.children(8, 0)[0]["feature"]
    click_feature(page, 32, child)
    expect_cards(page, split_heads(view, 32, child))
    expect(page.locator(".saew-family-status")).to_contain_text("parent #0 in 8")
    screenshot(page, "family-map-static")
    other = next(f for f in range(8) if f != 0)
    click_feature(page, 8, other)  # not embedded: said so, not a blank
    expect(page.locator(".saew-family-card .saew-empty").first).to_have_text(
        "This page holds no card for this feature."
    )
    assert page.evaluate("() => window.__pwned") is None
    assert our_errors(page) == []


def test_cards_without_logit_effects_say_so_instead_of_empty_tables(page, tmp_path):
    # FamilyMap.from_family builds cards from statistics alone: no promoted / suppressed tokens to show.
    view = syn.family_map()
    view.card_fns = {n: (lambda i, f=f: {**f(i), "promoted": [], "suppressed": []}) for n, f in view.card_fns.items()}
    view.embed_subtree(8, 0)
    page.goto(view.save_html(tmp_path / "family.html").as_uri())
    click_feature(page, 8, 0)
    expect_cards(page, split_heads(view, 8, 0))
    cards = page.locator(".saew-family-card")
    expect(cards.locator(".saew-logits-none")).to_have_count(cards.count())
    expect(cards.locator(".saew-logit-head")).to_have_count(0)
    assert our_errors(page) == []


CELLS = [
    f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\nimport synthetic_results as syn\nview = syn.family_map()\nview",
]


def test_live_family_map_fetches_cards_from_the_kernel(page, jupyter_server, screenshot, notebook_writer):
    base, token, root = jupyter_server
    notebook_writer(root, "family_map.ipynb", CELLS)
    open_and_run(page, f"{base}/lab/tree/family_map.ipynb?token={token}")
    expect(page.locator(".saew-family")).to_have_count(1, timeout=60_000)
    view = syn.family_map()  # the same planted family as the kernel's
    click_feature(page, 8, 2)
    expect_cards(page, split_heads(view, 8, 2), timeout=30_000)
    child = view.tree.children(8, 2)[1]["feature"]
    click_feature(page, 32, child)
    expect_cards(page, split_heads(view, 32, child), timeout=30_000)
    screenshot(page, "family-map-jupyterlab", locator=page.locator(".saew-family"))
    assert our_errors(page) == []
