"""Python-side behaviour of the widgets: traits, binary transport, selection, callbacks, generation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import traitlets

from saewidgets.widgets import AttributionView, FeatureDashboard, FeatureMap, SteeringPanel, TokenHeatmap
import synthetic_results as syn
from saewidgets.analysis.results import SteeringExample
from saewidgets.widgets.serializers import array_to_bytes, bytes_to_array, jsonable


def test_arrays_travel_as_float32_bytes_and_round_trip():
    a = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    b = array_to_bytes(a)
    assert isinstance(b, bytes) and len(b) == 12 * 4
    np.testing.assert_array_equal(bytes_to_array(b, np.float32, (3, 4)), a.astype(np.float32))


def test_jsonable_turns_numpy_and_nan_into_plain_json():
    out = jsonable({"a": np.float32(1.5), "b": np.int64(3), "c": (1, 2), "d": float("nan"), "e": np.arange(2)})
    assert out == {"a": 1.5, "b": 3, "c": [1, 2], "d": None, "e": [0, 1]}


def test_static_cards_round_floats_to_four_significant_digits():
    data = {"a": [1.23456789, 2, True], "b": {"c": 123456.7, "d": np.float32(0.123456)}, "t": "x", "n": np.nan}
    assert jsonable(data, digits=4) == {"a": [1.235, 2, True], "b": {"c": 123500.0, "d": 0.1235}, "t": "x", "n": None}
    assert jsonable(data)["a"][0] == 1.23456789, "no rounding unless asked"
    floats, words = [0.123456, np.nan, -np.inf, 2.0], ("a", "b", None)  # the lists taken whole, not item by item
    assert jsonable(floats, digits=2) == [0.12, None, None, 2.0] and jsonable(floats) == [0.123456, None, None, 2.0]
    assert jsonable(words) == ["a", "b", None] and jsonable([np.float32(0.5), (1, 2)]) == [0.5, [1, 2]]


def test_heatmap_takes_token_activations_and_ships_acts_as_bytes():
    ta = syn.token_activations(syn.tokens(50), [7, 3])
    hm = TokenHeatmap(ta)
    assert hm.tokens == ta.tokens and hm.features == [7, 3] and hm.feature == 7
    assert isinstance(hm.acts, bytes) and hm.acts_shape == [50, 2]
    np.testing.assert_array_equal(hm.values, ta.acts)


def test_heatmap_accepts_one_feature_as_a_1d_array_and_rejects_misaligned_acts():
    hm = TokenHeatmap(tokens=["a", "b"], acts=[0.0, 1.0], feature=12)
    assert hm.features == [12] and hm.feature == 12 and hm.acts_shape == [2, 1]
    with pytest.raises(ValueError, match="T = 2 tokens"):
        TokenHeatmap(tokens=["a", "b"], acts=np.zeros((3, 1)))


def test_heatmap_handles_ten_thousand_tokens_as_one_buffer():
    ta = syn.token_activations(syn.tokens(10_000), [1, 2, 3])
    hm = TokenHeatmap(ta)
    assert len(hm.acts) == 10_000 * 3 * 4


def test_dashboard_shows_card_and_follows_neighbour_clicks_through_card_fn():
    geo, st = syn.geometry(50), syn.stats(50)
    calls = []

    def card_fn(i):
        calls.append(i)
        return syn.card(i, geo, st)

    dash = FeatureDashboard(syn.card(3, geo, st), card_fn=card_fn)
    assert dash.feature == 3 and dash.card["feature"] == 3
    j = dash.card["neighbours"][0]["feature"]
    dash.feature = j  # what the JS does when a neighbour link is clicked
    assert calls == [j] and dash.card["feature"] == j and not dash.loading and dash.error == ""


def test_dashboard_reports_card_errors_in_the_view():
    dash = FeatureDashboard(card_fn=lambda i: 1 / 0)
    dash.feature = 4
    assert "ZeroDivisionError" in dash.error and not dash.loading


def test_map_selection_highlights_the_neighbourhood():
    geo, st = syn.geometry(100), syn.stats(100)
    m = FeatureMap.from_geometry(geo, st, n_neighbours=5)
    assert m.n_features == 100 and len(m.coords) == 100 * 2 * 4 and len(m.clusters) == 100 * 4
    m.selected = 10
    assert m.highlight == [j for j, _ in geo.neighbours(10, 5)]
    np.testing.assert_array_equal(m.points, geo.coords)


def test_map_rejects_out_of_range_selection():
    m = FeatureMap(np.zeros((4, 2)))
    with pytest.raises(traitlets.TraitError, match="0 to 3"):
        m.selected = 4


def test_map_search_by_id_and_by_text_callback():
    m = FeatureMap(np.random.default_rng(0).normal(size=(30, 2)), search_fn=lambda q: [(12, 0.9), (4, 0.5)])
    m.query = "#7"
    assert m.selected == 7 and m.search_results == [7]
    m.query = "bridge"
    assert m.search_results == [12, 4] and m.selected == 12
    m.selected = 0
    m._on_frontend_msg(m, {"event": "search", "query": "bridge"}, [])  # the search box, same query again
    assert m.selected == 12
    m2 = FeatureMap(np.zeros((3, 2)))
    assert m2.search("bridge") == [] and "search function" in m2.message


def test_map_colours_by_density_when_there_are_no_clusters():
    m = FeatureMap(np.zeros((3, 2)), density=[0.1, 0.0, 0.2])
    assert m.color_by == "density"


def test_map_rejects_per_feature_arrays_of_the_wrong_length():
    with pytest.raises(ValueError, match="one per feature"):
        FeatureMap(np.zeros((3, 2)), clusters=[0, 1])


def test_attribution_view_shows_rows_and_bar_click_opens_feature():
    toks = syn.tokens(8)
    opened = []
    view = AttributionView(syn.attribution(toks, " fog"), n=5, on_feature=opened.append)
    assert view.tokens == toks and view.target_label == " fog" and len(view.rows) == 5
    assert all(isinstance(r["feature"], int) and all(isinstance(p, int) for p in r["positions"]) for r in view.rows)
    view.feature = view.rows[2]["feature"]  # what the JS does on a bar click
    assert opened == [view.rows[2]["feature"]]


def test_attribution_view_recomputes_for_a_picked_target():
    toks = syn.tokens(8)
    view = AttributionView(
        syn.attribution(toks, "a"), attribute_fn=lambda tgt: syn.attribution(toks, tgt), background=False
    )
    view._on_frontend_msg(view, {"event": "attribute", "target": " bridge"}, [])
    assert view.target == " bridge" and view.target_label == " bridge"
    assert view.rows == AttributionView(syn.attribution(toks, " bridge")).rows
    view.attribute("")  # empty: the model's own top token
    assert view.target_label == " the"
    failing = AttributionView(attribute_fn=lambda tgt: (_ for _ in ()).throw(KeyError(tgt)), background=False)
    failing.attribute("x")
    assert "KeyError" in failing.error and not failing.busy


def test_steering_slider_defaults_to_the_analysis_clamp_and_is_bounded():
    from saewidgets.widgets.steering_panel import default_clamp_multiple

    panel = SteeringPanel(syn.steer)
    assert panel.multiple == default_clamp_multiple()
    assert (panel.min_multiple, panel.max_multiple) == (-10.0, 10.0)
    panel.multiple = -10
    with pytest.raises(traitlets.TraitError, match="between -10 and 10"):
        panel.multiple = 10.5


def test_generate_runs_steer_fn_with_the_panel_values_and_shows_both_columns():
    calls = []

    def steer_fn(prompt, feature, multiple):
        calls.append((prompt, feature, multiple))
        return syn.steer(prompt, feature, multiple)

    panel = SteeringPanel(steer_fn, feature=9, prompt="The bridge", background=False)
    panel.multiple = 8.0
    assert panel.generate()
    assert calls == [("The bridge", 9, 8.0)]
    assert panel.default_texts == ["The bridge a suspension bridge in San Francisco."]
    assert "feature 9 at 8x" in panel.steered_texts[0] and panel.steered_multiple == 8.0
    assert not panel.busy and panel.error == ""


def test_generate_click_message_starts_a_background_generation():
    panel = SteeringPanel(syn.steer, prompt="x")
    panel._on_frontend_msg(panel, {"event": "generate"}, [])
    panel.wait(5)
    assert panel.steered_texts and not panel.busy


def test_generate_never_runs_two_at_once_and_shows_busy_state():
    release = threading.Event()
    started = threading.Event()
    calls = []

    def slow(prompt, feature, multiple):
        calls.append(1)
        started.set()
        release.wait(5)
        return syn.steer(prompt, feature, multiple)

    panel = SteeringPanel(slow, prompt="x")
    assert panel.generate()
    started.wait(5)
    assert panel.busy
    assert not panel.generate() and "already generating" in panel.status
    release.set()
    panel.wait(5)
    assert calls == [1] and not panel.busy and panel.steered_texts


def test_generate_errors_are_shown_in_the_panel():
    def broken(prompt, feature, multiple):
        raise RuntimeError("CUDA out of memory")

    panel = SteeringPanel(broken, prompt="x", background=False)
    panel.generate()
    assert "CUDA out of memory" in panel.error and not panel.busy
    assert not SteeringPanel(syn.steer, background=False).generate()  # empty prompt: refused, explained
    assert not SteeringPanel(None, prompt="x").generate()


def test_explorer_selection_anywhere_updates_every_view():
    ex = syn.explorer(n_features=120, background=False)
    ex.map.selected = 17
    assert (ex.dashboard.feature, ex.dashboard.card["feature"], ex.steering.feature, ex.attribution.feature) == (
        17,
        17,
        17,
        17,
    )
    j = ex.dashboard.card["neighbours"][0]["feature"]
    ex.dashboard.feature = j  # neighbour link
    assert ex.map.selected == j and ex.steering.feature == j
    bar = ex.attribution.rows[0]["feature"]
    ex.attribution.feature = bar  # attribution bar click
    assert ex.map.selected == bar and ex.dashboard.card["feature"] == bar
    ex.steering.feature = 3
    assert ex.selected == 3 and ex.map.highlight


def test_explorer_heatmap_tab_colours_text_by_the_selection_and_its_neighbours():
    ex = syn.explorer(n_features=60, background=False)
    ex.select(11)
    ex.tab = "heatmap"
    assert ex.heatmap.feature == 11 and ex.heatmap.features[0] == 11 and len(ex.heatmap.features) > 1
    nb = ex.heatmap.features[1]
    ex.heatmap.feature = nb  # the heatmap's feature picker
    assert ex.selected == nb


def test_explorer_heatmap_show_during_the_tabs_own_refresh_runs_after_it_not_never():
    # Opening the tab colours its text in the background; a Show clicked before the browser heard "busy" used to
    # be refused by the job in flight and dropped, leaving the old text's tokens on screen (a browser test saw it).
    release, asked = threading.Event(), []

    def activations_fn(text, features):
        asked.append(text)
        if len(asked) == 1:
            assert release.wait(10), "the first job was never released"
        return syn.token_activations(syn.tokens(len(text.split()), seed=6), features)

    ex = syn.explorer(n_features=60, activations_fn=activations_fn)
    ex.select(11)
    ex.tab = "heatmap"  # starts the tab's own refresh, which blocks
    ex._on_frontend_msg(ex, {"event": "heatmap", "text": "one two three"}, [])
    ex._on_frontend_msg(ex, {"event": "heatmap", "text": "one two three four"}, [])  # the newest request wins
    assert ex.heatmap_busy and asked == ["synthetic text"]
    release.set()
    deadline = time.monotonic() + 10
    while (len(ex.heatmap.tokens) != 4 or ex.heatmap_busy) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert asked == ["synthetic text", "one two three four"] and len(ex.heatmap.tokens) == 4

    # Stop drops a request still waiting along with the job in flight.
    release.clear()
    asked.clear()
    ex._on_frontend_msg(ex, {"event": "heatmap", "text": "a b"}, [])
    ex._on_frontend_msg(ex, {"event": "heatmap", "text": "a b c"}, [])
    ex._on_frontend_msg(ex, {"event": "heatmap_stop"}, [])
    release.set()
    ex.wait(10)
    time.sleep(0.1)
    assert asked == ["a b"] and ex.heatmap_error == "stopped" and len(ex.heatmap.tokens) == 4


def test_explorer_generate_uses_the_selected_feature():
    ex = syn.explorer(n_features=40, background=False)
    ex.select(6)
    ex.steering.generate()
    assert "feature 6" in ex.steering.steered_texts[0]


def test_explorer_steering_tab_adds_vector_steering_beside_the_feature():
    def vector_fn(prompt, alpha):
        return syn.FakeSteeringResult([prompt], [prompt], [f"{prompt} vector at {alpha:g}"], {})

    ex = syn.explorer(n_features=40, background=False, vector_fn=vector_fn)
    assert ex.steering_has_vector and not syn.explorer(n_features=40, background=False).steering_has_vector
    ex.select(6)
    ex.steering_alpha = 0.25  # as the front end sets it, through the Explorer's mirrored trait
    ex.steering.generate()
    assert "feature 6" in ex.steering.steered_texts[0]
    assert ex.steering_vector_texts == [f"{ex.steering.prompt} vector at 0.25"] and ex.steering_vector_alpha == 0.25


def test_explorer_needs_geometry_or_sae():
    from saewidgets.widgets import Explorer

    with pytest.raises(ValueError, match="geometry"):
        Explorer(None, None, syn.stats(5))


def test_views_render_in_notebook_mime_bundle_with_html_fallback():
    def data_of(bundle):
        return bundle[0] if isinstance(bundle, tuple) else bundle

    hm = TokenHeatmap(tokens=["a"], acts=[1.0], feature=0)
    bundle = data_of(hm._repr_mimebundle_())
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/html"].startswith("<iframe")
    ex = syn.explorer(n_features=30, background=False)
    eb = data_of(ex._repr_mimebundle_())
    assert "application/vnd.jupyter.widget-view+json" in eb and "<iframe" in eb["text/html"]


def test_threaded_trait_updates_finish_quickly():
    panel = SteeringPanel(syn.steer, prompt="p")
    t0 = time.time()
    panel.generate()
    panel.wait(5)
    assert time.time() - t0 < 5 and panel.steered_texts


def test_explorer_shows_a_saved_steering_example_and_named_features():
    ex = syn.explorer(n_features=50, background=False, highlights={"Golden Gate Bridge": 12, "out of range": 99})
    assert ex.map.bookmarks == [{"label": "Golden Gate Bridge", "feature": 12}]
    ex.show_steering(
        SteeringExample(
            feature=12,
            multiple=4.0,
            prompts=["I saw"],
            default=["I saw a cat"],
            steered=["I saw the bridge"],
            name="GGB",
        )
    )
    assert (ex.steering.steered_feature, ex.steering.steered_multiple, ex.steering.prompt) == (12, 4.0, "I saw")
    assert ex.steering.steered_texts == ["I saw the bridge"] and ex.steering.default_texts == ["I saw a cat"]
    ex.select(3)  # the shown result still names the feature it was made with
    assert ex.steering.feature == 3 and ex.steering.steered_feature == 12
    ex.show_steering(SteeringExample.from_result(syn.steer("p", 7, 2.0), multiple=2.0))
    assert ex.steering.steered_feature == 7 and ex.steering.steered_multiple == 2.0
    assert ex.steering.steered_family == [] and ex.steering.status.startswith("feature #7 at 2×")
    family = SteeringExample(feature=12, multiple=1.0, prompts=["I saw"], default=["a"], steered=["b"], family=(12, 4))
    ex.show_steering(family)  # a family shows every feature it clamped
    assert (ex.steering.steered_feature, ex.steering.steered_family) == (12, [12, 4])
    assert ex.steering.status.startswith("features #12+#4 at 1×")
    ex.steering.show_result(syn.steer("p", 7, 2.0), multiple=2.0, feature=7)  # one feature again: no family left
    assert (ex.steering.steered_feature, ex.steering.steered_family) == (7, [])


def test_explorer_is_one_widget_whose_traits_mirror_every_view():
    from saewidgets.widgets.explorer import CHILDREN, Explorer

    ex = syn.explorer(n_features=50, background=False)
    for prefix, cls in CHILDREN.items():
        for name in cls.state_names():
            assert f"{prefix}_{name}" not in vars(Explorer), f"{prefix}_{name} shadows an Explorer attribute"
            assert getattr(ex, f"{prefix}_{name}") == getattr(getattr(ex, prefix), name), (prefix, name)
    assert all(getattr(ex, p).comm is None for p in CHILDREN)  # the views open no comm of their own
    ex.map_selected = 9  # what a map click in explorer.js does
    assert ex.selected == 9 and ex.dashboard_card["feature"] == 9 and ex.steering_feature == 9
    ex.dashboard_feature = 4  # a neighbour link
    assert ex.map_selected == 4 and ex.map_highlight == ex.map.highlight
    ex.map_selected = 10_000  # invalid from the front-end: the view keeps its value, the map says why
    assert ex.map_selected == 4 and "feature ids run from 0" in ex.map_message


def test_explorer_messages_reach_its_views_and_stop_drops_a_running_job():
    import threading

    release = threading.Event()

    def slow_steer(prompt, feature, multiple):
        release.wait(5)
        return syn.steer(prompt, feature, multiple)

    ex = syn.explorer(n_features=30, steer_fn=slow_steer)
    ex.steering.prompt = "p"
    ex._on_frontend_msg(ex, {"view": "steering", "msg": {"event": "generate"}}, [])
    assert ex.steering_busy
    ex._on_frontend_msg(ex, {"view": "steering", "msg": {"event": "stop"}}, [])
    release.set()
    ex.wait(5)
    assert ex.steering_error == "stopped" and ex.steering_steered_texts == []
    ex._on_frontend_msg(ex, {"view": "map", "msg": {"event": "search", "query": "#3"}}, [])
    assert ex.selected == 3 and ex.map_search_results == [3]


def test_generate_uses_the_prompt_and_clamp_sent_with_it_even_before_the_state_update():
    """marimo delivered the page's state update after the Generate message: the inputs come with the message."""
    ex = syn.explorer(n_features=30, steer_fn=syn.steer, background=False)
    ex.steering.prompt = "old prompt"
    generate = {"event": "generate", "prompt": "new prompt", "multiple": 3.5}
    ex._on_frontend_msg(ex, {"view": "steering", "msg": generate}, [])
    assert ex.steering_steered_texts[0].startswith("new prompt [feature") and "at 3.5x" in ex.steering_steered_texts[0]
    assert ex.steering_prompt == "new prompt" and ex.steering_multiple == 3.5

    refused = {"event": "generate", "prompt": "other prompt", "multiple": 1e6}
    ex._on_frontend_msg(ex, {"view": "steering", "msg": refused}, [])
    assert "multiple: the clamp is a multiple" in ex.steering_error
    assert ex.steering_steered_texts[0].startswith("new prompt"), "nothing generated with a refused clamp"


def test_dashboard_cards_show_repeated_contexts_once_with_their_count():
    from saewidgets.widgets.dashboard import display_card

    row = {"tokens": ["a", "b"], "center": 1, "value": 2.0, "acts": [0, 2.0]}
    other = {"tokens": ["c"], "center": 0, "value": 1.0, "acts": [1.0]}
    card = display_card(
        {
            "feature": 1,
            "top": [row, dict(row), other, dict(row)],
            "quantiles": [{"label": "q", "examples": [other, dict(other)]}],
        }
    )
    assert [c.get("count", 1) for c in card["top"]] == [3, 1] and card["top"][0]["tokens"] == ["a", "b"]
    assert card["quantiles"][0]["examples"] == [dict(other, count=2)]


def test_displayed_explorer_leaves_an_offline_copy_tagged_for_the_live_view(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    published = []
    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell.display_pub, "publish", lambda data, metadata=None, **kw: published.append(data))
    ex = syn.explorer(n_features=60, background=False)
    ex._ipython_display_()
    copy, widget = published
    assert f'data-saew-for="{ex.fallback_id}"' in copy["text/html"] and "<iframe" in copy["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in widget and "text/html" not in widget
    # The copy embeds the selection's neighbourhood: small, whatever the number of features.
    assert len(copy["text/html"]) < 400_000
