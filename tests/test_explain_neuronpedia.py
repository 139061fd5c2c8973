"""Neuronpedia interoperability: dashboards and labels exported in SAEDashboard's / Neuronpedia's JSON format read
back unchanged, and explanations import from each form Neuronpedia exports them in."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import pytest
import torch
from explain_helpers import make_effects, make_stats
from test_explain_pattern import EFFECTS, GATE, STATS, VARIED

from saewidgets.analysis import feature_card
from saewidgets.analysis.explain import PatternExplainer, explain_features
from saewidgets.analysis.explain.neuronpedia import (
    export_neuronpedia,
    import_neuronpedia_explanations,
    read_neuronpedia_dashboards,
)


class FakeSAE:
    """What export reads of an SAE: its fingerprint, decoder and config."""

    def __init__(self, n_features: int, neuronpedia_id: str | None = None):
        self.W_dec = torch.arange(n_features * 3, dtype=torch.float32).view(n_features, 3)
        self.cfg = SimpleNamespace(neuronpedia_id=neuronpedia_id)

    def fingerprint(self):
        return STATS.fingerprint


def test_dashboards_round_trip_through_the_neuronpedia_format(tmp_path):
    path = export_neuronpedia(STATS, tmp_path / "np", logit_effects=EFFECTS, features_per_batch=3, dataset="demo")
    assert sorted(p.name for p in path.iterdir()) == [
        ".saewidgets-files.json",
        "batch-0.json",
        "batch-1.json",
        "saewidgets.json",
    ]
    batch = json.loads((path / "batch-0.json").read_text())
    assert set(batch) == {"model_id", "layer", "sae_set", "sae_id_suffix", "features"}
    assert batch["model_id"] == "hand-made" and batch["layer"] == 1 and len(batch["features"]) == 3
    feature = batch["features"][0]
    assert feature["pos_str"][0] == " Bridge" and feature["activations"][0]["bin_min"] == -1
    back = read_neuronpedia_dashboards(path)
    assert sorted(back) == [0, 1, 2, 3]
    for i, card in back.items():
        original = feature_card(STATS, i, EFFECTS)
        for key in ("top", "promoted", "suppressed", "density", "max_act"):
            assert card[key] == original[key], key  # JSON floats read back exactly
        assert card["histogram"]["counts"] == original["histogram"]["counts"]
        assert card["histogram"]["edges"] == pytest.approx(original["histogram"]["edges"], abs=1e-6)
        shown = [e for band in original["quantiles"] for e in band["examples"]]
        assert [e for band in card["quantiles"] for e in band["examples"]] == shown


def test_labels_round_trip_through_a_neuronpedia_explanations_export(tmp_path):
    labels = explain_features(STATS, PatternExplainer(), logit_effects=EFFECTS, progress=False)
    path = export_neuronpedia(STATS, tmp_path / "np", labels=labels, sae=FakeSAE(4, "gemma-3-270m/12-res-demo"))
    records = json.loads((path / "explanations.json").read_text())
    assert records[0]["modelId"] == "gemma-3-270m" and records[0]["layer"] == "12-res-demo"
    assert json.loads((path / "batch-0.json").read_text())["features"][1]["vector"] == [3.0, 4.0, 5.0]
    back = import_neuronpedia_explanations(path / "explanations.json", STATS)
    assert [(e.feature, e.text, e.kind, e.model, e.created) for e in back] == [
        (e.feature, e.text, e.kind, e.model, e.created) for e in labels
    ]


NEURONPEDIA_RECORDS = [  # shaped like Neuronpedia's /api/explanation/export reply
    {
        "id": "a1",
        "modelId": "gpt2-small",
        "layer": "6-res-jb",
        "index": "0",
        "description": " the Golden Gate Bridge",
        "explanationModelName": "gpt-4o-mini",
        "typeName": "oai_token-act-pair",
        "authorId": "x",
        "scores": [],
    },
    {
        "id": "a2",
        "modelId": "gpt2-small",
        "layer": "6-res-jb",
        "index": "0",
        "description": "second opinion",
        "explanationModelName": "claude",
        "typeName": "np_max-act-logits",
    },
    {
        "id": "a3",
        "modelId": "gpt2-small",
        "layer": "7-res-jb",
        "index": "1",
        "description": "other source",
        "explanationModelName": "gpt-4o-mini",
        "typeName": "oai_token-act-pair",
    },
    {
        "id": "a4",
        "modelId": "gpt2-small",
        "layer": "6-res-jb",
        "index": "1",
        "description": "bridges in general",
        "explanationModelName": "gpt-4o-mini",
        "typeName": "oai_token-act-pair",
    },
]


@pytest.mark.parametrize("form", ["json", "jsonl.gz", "feature"])
def test_explanations_import_from_each_neuronpedia_export_form(tmp_path, form):
    if form == "json":
        path = tmp_path / "export.json"
        path.write_text(json.dumps(NEURONPEDIA_RECORDS))
    elif form == "jsonl.gz":
        path = tmp_path / "batch-0.jsonl.gz"
        path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in NEURONPEDIA_RECORDS).encode()))
    else:
        path = tmp_path / "feature.json"
        path.write_text(
            json.dumps(
                {"modelId": "gpt2-small", "layer": "6-res-jb", "index": "0", "explanations": NEURONPEDIA_RECORDS[:2]}
            )
        )
    labels = import_neuronpedia_explanations(path, STATS, model_id="gpt2-small", source="6-res-jb")
    assert labels[0].text == "the Golden Gate Bridge" and labels[0].kind == "llm"
    assert (labels[0].explainer, labels[0].model) == ("neuronpedia:oai_token-act-pair", "gpt-4o-mini")
    if form != "feature":
        assert labels[1].text == "bridges in general"  # the other source's record was left out
    merged = explain_features(STATS, PatternExplainer(), progress=False).merged(labels)
    assert merged[0].kind == "llm" and merged[2].kind == "pattern"


def test_bad_neuronpedia_files_get_clear_errors_and_exports_leave_nothing_half_written(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Neuronpedia export"):
        import_neuronpedia_explanations(tmp_path / "missing.json", STATS)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a Neuronpedia explanations export"):
        import_neuronpedia_explanations(tmp_path / "bad.json", STATS)
    (tmp_path / "nodesc.json").write_text(json.dumps([{"index": "0"}]))
    with pytest.raises(ValueError, match="Record 0 .* no 'description'"):
        import_neuronpedia_explanations(tmp_path / "nodesc.json", STATS)
    (tmp_path / "far.json").write_text(json.dumps([{"index": "99", "description": "x"}]))
    with pytest.raises(IndexError, match="out of range"):
        import_neuronpedia_explanations(tmp_path / "far.json", STATS)
    (tmp_path / "ok.json").write_text(json.dumps(NEURONPEDIA_RECORDS))
    with pytest.raises(ValueError, match="None of the 4 records"):
        import_neuronpedia_explanations(tmp_path / "ok.json", STATS, model_id="gemma-2-2b")
    with pytest.raises(IndexError):
        export_neuronpedia(STATS, tmp_path / "out", features=[0, 99])
    with pytest.raises(ValueError, match="describe SAE other"):
        export_neuronpedia(STATS, tmp_path / "out", logit_effects=make_effects([["a"]] * 4, fingerprint="other"))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    assert make_stats([GATE, VARIED]).n_features == 2
