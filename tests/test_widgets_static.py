"""Static HTML export: self-contained, offline, and immune to hostile token strings."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest

from saewidgets.widgets import AttributionView, FeatureDashboard, FeatureMap, SteeringPanel, TokenHeatmap, export_html
import synthetic_results as syn
from saewidgets.widgets.static_html import page_data, script_json, static_bundle_js


class TagCollector(HTMLParser):
    """Every start tag with its attributes, and the text of each <script>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._in_script: dict | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None


def parse(doc: str) -> TagCollector:
    p = TagCollector()
    p.feed(doc)
    p.close()
    return p


def hostile_views():
    toks = syn.tokens(40, hostile=True)
    geo, st = syn.geometry(40), syn.stats(40)
    panel = SteeringPanel(syn.steer, prompt=syn.HOSTILE_TOKENS[1], background=False)
    panel.generate()
    return {
        "heatmap": TokenHeatmap(syn.token_activations(toks, [1, 2])),
        "dashboard": FeatureDashboard(syn.card(3, geo, st, hostile=True)),
        "map": FeatureMap.from_geometry(geo, st),
        "attribution": AttributionView(syn.attribution(toks, syn.HOSTILE_TOKENS[0])),
        "steering": panel,
        "explorer": syn.explorer(n_features=40, hostile=True, background=False),
    }


@pytest.fixture(scope="module")
def documents():
    return {name: view.to_html() for name, view in hostile_views().items()}


def test_every_view_exports_a_full_html_document(documents):
    for name, doc in documents.items():
        assert doc.startswith("<!DOCTYPE html>"), name
        assert "<style>" in doc and "</html>" in doc


@pytest.mark.parametrize("name", ["heatmap", "dashboard", "map", "attribution", "steering", "explorer"])
def test_hostile_tokens_create_no_markup_in_static_html(documents, name):
    parsed = parse(documents[name])
    tags = [t for t, _ in parsed.tags]
    assert "img" not in tags and "iframe" not in tags
    # Exactly our three scripts: the JSON data, the inlined bundle, the boot call.
    assert [a.get("type") for a, _ in parsed.scripts] == ["application/json", None, None]
    assert all(not k.startswith("on") for _, attrs in parsed.tags for k in attrs)
    # Token text survives as data: the JSON payload holds it verbatim once decoded.
    data = page_data(documents[name])
    assert "window.__pwned" in json.dumps(data, default=repr) or name == "map"


def test_static_html_loads_nothing_from_the_network(documents):
    for name, doc in documents.items():
        for tag, attrs in parse(doc).tags:
            assert "src" not in attrs, (name, tag)
            assert attrs.get("href", "#").startswith("#"), (name, tag)
        assert "default-src 'none'" in doc


def test_script_json_escapes_everything_that_could_end_a_script():
    payload = {"t": ["</script><script>alert(1)</script>", "<!--", "a&b", "\u2028\u2029", "<img src=x>"]}
    text = script_json(payload)
    for ch in "<>&\u2028\u2029":
        assert ch not in text
    assert json.loads(text) == payload


def test_binary_traits_are_embedded_as_page_text_and_decode_to_the_same_floats():
    from saewidgets.widgets._embed import decode_text

    hm = TokenHeatmap(tokens=["a", "b", "c"], acts=np.array([0.5, 1.5, -2.0], dtype=np.float32), feature=4)
    data = json.loads(parse(hm.to_html()).scripts[0][1])
    acts = data["views"][0]["state"]["acts"]
    assert "gzip" not in acts  # 12 bytes of floats: compressing would not pay
    np.testing.assert_array_equal(np.frombuffer(decode_text(acts["__saew_bytes__"]), "<f4"), [0.5, 1.5, -2.0])


def test_large_state_values_are_embedded_compressed_and_read_back_whole():
    from saewidgets.widgets.static_html import COMPRESS_STATE_ABOVE, page_data

    ex = syn.explorer(n_features=600, background=False)
    ex.map.labels = [f"pattern: '<{i}>' after 'the' -> promotes ' cat'" for i in range(600)]
    doc = ex.to_html()
    raw = json.loads(parse(doc).scripts[0][1])["views"][0]["state"]
    assert len(json.dumps(ex.map.labels)) > COMPRESS_STATE_ABOVE and set(raw["map_labels"]) == {"__saew_json__"}
    assert raw["map_selected"] == ex.selected  # small values stay plain JSON
    state = page_data(doc)["views"][0]["state"]
    assert state["map_labels"] == ex.map.labels
    clusters = np.frombuffer(state["map_clusters"], "<i4")
    assert (
        raw["map_clusters"].get("gzip") is True and clusters.tolist() == np.frombuffer(ex.map.clusters, "<i4").tolist()
    )


def test_inlined_javascript_cannot_close_its_own_script_element():
    js = static_bundle_js()
    assert "</script" not in js.lower()
    # Token text only ever goes through textContent: no HTML-parsing sinks anywhere in the views.
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in js, sink


def unpack_cards(packed: dict) -> dict[int, dict]:
    """The cards of a static page rebuilt as static_host.js does (see ``_packed_cards``)."""
    from _packed_cards import unpack_cards as unpack

    return unpack(packed)


def test_explorer_static_page_embeds_cards_for_every_feature_of_a_small_map():
    ex = syn.explorer(n_features=25, background=False)
    data = json.loads(parse(ex.to_html()).scripts[0][1])
    cards = unpack_cards(data["cards"])
    assert sorted(cards) == list(range(25))
    assert cards[7] == ex.static_card(7) and cards[7]["feature"] == 7
    assert [v["name"] for v in data["views"]] == ["explorer"]  # one view: the Explorer, with every part inside
    assert data["views"][0]["state"]["map_selected"] == ex.selected
    small = json.loads(parse(ex.to_html(features=[1, 2])).scripts[0][1])
    assert {1, 2, ex.selected} <= set(unpack_cards(small["cards"])) and len(small["cards"]["features"]) <= 3 + 10


def test_export_html_writes_atomically(tmp_path):
    ex = syn.explorer(n_features=20, background=False)
    out = export_html(tmp_path / "sub" / "explorer.html", ex)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["explorer.html"]


def test_notebook_fallback_iframe_holds_the_document_as_escaped_text():
    hm = TokenHeatmap(syn.token_activations(syn.tokens(20, hostile=True), [0]))
    bundle = hm._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    parsed = parse(data["text/html"])
    assert [t for t, _ in parsed.tags] == ["iframe"]
    assert parsed.tags[0][1]["srcdoc"].startswith("<!DOCTYPE html>")


def test_named_features_are_linked_and_their_cards_always_embedded():
    ex = syn.explorer(n_features=3000, background=False)
    data = json.loads(parse(ex.to_html(features=[1], highlights={"Golden Gate Bridge": 2999})).scripts[0][1])
    assert {2999, 1} <= set(unpack_cards(data["cards"]))
    state = data["views"][0]["state"]
    assert state["map_bookmarks"] == [{"label": "Golden Gate Bridge", "feature": 2999}]


def test_packed_windows_share_one_token_stream():
    from saewidgets.widgets.static_html import _chained

    windows = [(1, 2, 3), (2, 3, 4), (9, 9), (3, 4, 5), (7,), (0, 1, 2)]
    stream, spans = _chained(windows)
    assert [tuple(stream[a : a + n]) for a, n in spans] == windows
    assert len(stream) == 6 + 2 + 1  # 0 1 2 3 4 5 chained, then 9 9 and 7
