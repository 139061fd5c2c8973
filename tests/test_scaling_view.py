"""The FamilyMap view in Python: selection loads the selected feature's and its children's cards, static pages
embed a subtree, bad selections are refused (the browser tests drive it live and static)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import traitlets

import synthetic_results as syn


def test_selecting_a_feature_loads_its_card_and_its_childrens():
    view = syn.family_map()
    assert view.sizes == [8, 32, 64] and len(view.parents[0]) == 32 and len(view.parents[1]) == 64
    assert view.cards == {}
    view.selected = [8, 3]
    kids = [c["feature"] for c in view.tree.children(8, 3)]
    assert len(kids) == 4  # the planted split
    assert sorted(view.cards) == sorted(["8/3", *(f"32/{k}" for k in kids)])
    assert view.cards["32/" + str(kids[0])]["mean_act"] == 32.0  # each size's own card function
    view.selected = [64, 5]  # the largest SAE: no children, one card
    assert "64/5" in view.cards


def test_bad_selections_and_mismatched_inputs_are_refused():
    view = syn.family_map()
    for bad in ([16, 1], [8, 8], [8]):
        with pytest.raises(traitlets.TraitError, match="selected"):
            view.selected = bad
    from saewidgets.analysis.splitting import JointGeometry
    from saewidgets.widgets import FamilyMap

    other = JointGeometry(np.zeros((8, 2), np.float32), np.full(8, 8), np.arange(8))
    with pytest.raises(ValueError, match="same family"):
        FamilyMap(other, view.tree)


def test_static_page_embeds_the_subtree_and_escapes_hostile_tokens(tmp_path):
    view = syn.family_map(hostile=True, selected=(8, 0), embed=(8, 0))
    tree = view.tree
    below = tree.descendants(8, 0)
    assert {f"32/{k}" for k in below[32]} <= set(view.cards)
    shown_grandchildren = {f"64/{c['feature']}" for k in below[32] for c in tree.children(32, k)}
    assert shown_grandchildren <= set(view.cards)
    page = view.save_html(tmp_path / "family.html").read_text()
    data = re.search(r'<script type="application/json" id="saew-data">(.*?)</script>', page, re.S).group(1)
    assert "<img" not in data and "</script" not in data.lower()
    state = json.loads(data)["views"][0]
    assert state["view"] == "family_map" and state["state"]["selected"] == [8, 0]
