"""The steering benchmark's experiments: quick-sized SAEs at other blocks (`LAYERS`) and each demo's settings with
the other demo's width (`WIDTHS`), trained by `demo_sae` (the demo pipeline's first stages, cached where
`demo_artifacts` looks) and judged on the validation prompts too."""

from __future__ import annotations

from dataclasses import asdict, replace
from types import SimpleNamespace

import numpy as np

import pytest

from benchmarks import bench_steering
from saewidgets.demo import FULL, QUICK, DemoSettings, demo_artifacts, demo_sae
from saewidgets.models import tiny_model


def test_layer_settings_are_the_quick_demos_but_for_the_block():
    for layer in bench_steering.LAYERS:
        changed = {k for k, v in asdict(bench_steering.layer_settings(layer)).items() if asdict(QUICK)[k] != v}
        assert changed == {"layer"}
        assert bench_steering.layer_settings(layer).key() != QUICK.key()


def test_width_settings_are_a_demos_but_for_the_other_demos_width():
    other = {"quick": FULL, "full": QUICK}
    assert {demo for demo, _ in bench_steering.WIDTHS} == {"quick", "full"}
    for demo, n_features in bench_steering.WIDTHS:
        label, settings = bench_steering.experiment(demo, n_features=n_features)
        base = bench_steering.demo_settings(demo)
        assert {k for k, v in asdict(settings).items() if asdict(base)[k] != v} == {"n_features"}
        assert settings.n_features == other[demo].n_features and settings.key() not in (QUICK.key(), FULL.key())
        assert label == f"{demo}, {n_features} features"


def test_a_second_draw_changes_only_the_seed_and_harvests_the_same_rows():
    from saewidgets.demo.pipeline import HARVEST_FIELDS

    label, settings = bench_steering.experiment("quick", corpus="demo-bridge-named-once", seed=1)
    assert label == "quick, corpus demo-bridge-named-once, seed 1"
    assert {k for k, v in asdict(settings).items() if asdict(QUICK)[k] != v} == {"corpus", "seed"}
    assert "seed" not in HARVEST_FIELDS  # a seed-1 SAE reuses the seed-0 run's harvest
    assert settings.key() != bench_steering.experiment("quick", corpus="demo-bridge-named-once")[1].key()


def test_an_experiment_that_changes_nothing_is_the_demo_itself():
    assert bench_steering.experiment("full", n_features=FULL.n_features) == ("full", FULL)
    assert bench_steering.experiment("quick") == ("quick", QUICK)


def test_the_benchmark_steers_the_experiments_saes_with_the_recipe_they_were_measured_by_after_the_demo_saes():
    """The experiments were measured on context candidates alone (before promoters): `context-only`."""
    labels = [
        (label, methods) for label, _, methods in bench_steering.saes(quick=True, layers=(6, 9), widths=(), corpora=())
    ]
    assert labels[0] == ("quick", tuple(bench_steering.METHODS))
    assert labels[1:] == [("quick, block 6", ("context-only",)), ("quick, block 9", ("context-only",))]
    none = dict(layers=(), widths=(), corpora=())
    assert [label for label, _, _ in bench_steering.saes(quick=False, **none)] == ["quick", "full"]
    widths = (("full", 2048), ("quick", 4096))
    corpora = (("quick", "demo-bridge-named-once"), ("full", "demo-bridge-named-once"))
    assert [label for label, _, _ in bench_steering.saes(quick=False, layers=(), widths=widths, corpora=corpora)] == [
        "quick",
        "full",
        "full, 2048 features",
        "quick, 4096 features",
        "quick, corpus demo-bridge-named-once",
        "full, corpus demo-bridge-named-once",
    ]
    quick = bench_steering.saes(quick=True, layers=(), widths=widths, corpora=corpora)
    assert [(label, methods) for label, _, methods in quick] == [
        ("quick", tuple(bench_steering.METHODS)),
        ("quick, 4096 features", ("context-only",)),
        ("quick, corpus demo-bridge-named-once", ("context-only",)),
    ], "a quick run trained an SAE on the full demo's tokens"


def test_layer_saes_are_trained_and_validated_the_demo_saes_are_only_loaded(monkeypatch):
    trained, built = [], []

    def demo_sae(settings, model, harvest_from, corpus):
        assert harvest_from == [QUICK, FULL] and corpus.name == settings.corpus
        trained.append(settings.layer if settings.corpus == "demo" else corpus.name)

    monkeypatch.setattr("saewidgets.demo.demo_sae", demo_sae)

    class Demo:
        def __init__(self, settings, model, validate=False):
            built.append((settings.layer, validate))

    monkeypatch.setattr(bench_steering, "Demo", Demo)
    bench_steering.load("quick, block 6", bench_steering.layer_settings(6), None)
    bench_steering.load("quick", QUICK, None)
    assert trained == [6] and built == [(6, True), ("late", False)]
    label, settings = bench_steering.experiment("full", corpus="demo-bridge-named-once")
    bench_steering.load(label, settings, None)
    assert trained == [6, "demo-bridge-named-once"] and built[-1] == ("late", True)


def test_the_command_line_runs_a_cell_on_the_experiment_it_names(monkeypatch):
    loaded, cells = [], []
    monkeypatch.setattr(bench_steering, "gemma", lambda: "model")
    monkeypatch.setattr(
        bench_steering,
        "load",
        lambda label, settings, model, validate: loaded.append((label, settings, validate)) or "art",
    )
    monkeypatch.setattr(bench_steering, "cell", lambda model, art, c, i, method, label: cells.append((c.name, method)))
    bench_steering.main(["--sae", "full", "--features", "2048", "--concept", "Golden Gate Bridge"])
    bench_steering.main(["--layer", "6", "--concept", "music", "--method", "diffmean"])
    bench_steering.main(["--sae", "full", "--concept", "music"])
    bench_steering.main(["--corpus", "demo-bridge-named-once", "--concept", "music"])
    bench_steering.main(["--seed", "2", "--validate", "--concept", "music"])
    assert loaded == [
        ("full, 2048 features", bench_steering.experiment("full", n_features=2048)[1], False),
        ("quick, block 6", bench_steering.layer_settings(6), False),
        ("full", FULL, False),
        ("quick, corpus demo-bridge-named-once", replace(QUICK, corpus="demo-bridge-named-once"), False),
        ("quick, seed 2", replace(QUICK, seed=2), True),
    ]
    assert cells == [("Golden Gate Bridge", "recipe"), ("music", "diffmean")] + [("music", "recipe")] * 3
    ceilings = []
    monkeypatch.setattr(bench_steering, "shortlist_ceiling", lambda model, art, c: ceilings.append(c.name) or [])
    bench_steering.main(["--sae", "full", "--ceiling", "--concept", "music"])
    assert ceilings == ["music"] and len(cells) == 5, "--ceiling runs the ceiling instead of a method"
    with pytest.raises(SystemExit):
        bench_steering.main(["--sae", "huge"])


#: A demo small enough for a unit test on the tiny GPT-2 (block 1, 2,000 tokens, 32 features, 20 steps).
TINY_DEMO = DemoSettings(
    model="tiny-gpt2", layer=1, n_tokens=2000, context_len=32, n_features=32, k=4, n_steps=20, batch_size=64
)


def test_demo_sae_caches_the_first_stages_and_demo_artifacts_reuses_them(tmp_path, monkeypatch):
    import saewidgets.sae as sae_module

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path))
    model = tiny_model("gpt2", seed=3)
    settings = TINY_DEMO
    first = demo_sae(settings, model=model, progress=False)
    assert first.sae.cfg.layer == 1 and first.stats.n_features == 32
    assert {p.name for p in first.folder.iterdir()} >= {"activations", "sae", "stats"}
    assert not (first.folder / "metrics.json").exists(), "demo_sae ran the held-out metrics"

    monkeypatch.setattr(sae_module, "train_sae", lambda *a, **k: pytest.fail("the cached SAE was trained again"))
    art = demo_artifacts(settings, model=model, progress=False)
    assert art.sae.fingerprint() == first.sae.fingerprint() and art.folder == first.folder
    assert (first.folder / "metrics.json").exists()


def test_demo_sae_copies_a_cached_harvest_only_where_it_is_the_same(tmp_path, monkeypatch):
    import saewidgets.activations as activations_module

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path))
    model = tiny_model("gpt2", seed=3)
    base = TINY_DEMO
    first = demo_sae(base, model=model, progress=False)
    harvest = activations_module.harvest
    harvested = []
    monkeypatch.setattr(
        activations_module, "harvest", lambda *a, **k: harvested.append((a[2], k["precision"])) or harvest(*a, **k)
    )

    wider = demo_sae(replace(base, n_features=64), model=model, progress=False, harvest_from=[base])
    assert harvested == [] and wider.folder != first.folder and wider.sae.cfg.n_features == 64
    assert np.array_equal(np.asarray(wider.activations.acts), np.asarray(first.activations.acts))
    assert (wider.folder / "activations" / "activations.json").exists()

    other_block = demo_sae(replace(base, layer=0), model=model, progress=False, harvest_from=[base])
    assert harvested == [(model.resolve_layer(0), "fp32")] and other_block.activations.layer != first.activations.layer

    bf16 = demo_sae(replace(base, precision="bf16"), model=model, progress=False, harvest_from=[base])
    assert harvested[1:] == [(first.activations.layer, "bf16")], "a bf16 run harvests anew, in bf16"
    assert not np.array_equal(np.asarray(bf16.activations.acts), np.asarray(first.activations.acts))


def test_corpus_settings_are_a_demos_but_for_the_text_and_cached_apart():
    for demo, corpus in bench_steering.CORPUS_RUNS:
        label, settings = bench_steering.experiment(demo, corpus=corpus)
        base = bench_steering.demo_settings(demo)
        assert {k for k, v in asdict(settings).items() if asdict(base)[k] != v} == {"corpus"}
        assert settings.key() not in (QUICK.key(), FULL.key()) and label == f"{demo}, corpus {corpus}"
        assert bench_steering.corpus_for(settings).name == corpus
    assert bench_steering.corpus_for(QUICK).name == "demo"


def test_settings_added_later_keep_the_keys_of_runs_cached_before():
    import hashlib
    import json

    for settings in (QUICK, FULL, TINY_DEMO):
        fields = {k: v for k, v in asdict(settings).items() if k not in ("corpus", "precision")}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
        assert settings.key() == digest
    assert QUICK.key() == "847e5792fed9"  # the quick demo's cache folder, as CI, Binder and users have it
    assert FULL.key() == "0e0cc17f14ac"  # the full demo's (the SAE its steering figures were measured on)
    assert replace(FULL, precision="bf16").key() != FULL.key(), "a bf16 run is cached apart"


def test_bridge_named_once_keeps_the_first_mention_in_each_document():
    from benchmarks.corpus_variants import bridge_named_once
    from saewidgets.corpus import Corpus, Document

    text = (
        "The Golden Gate Bridge opened in 1937. The Golden Gate Bridge is orange. We crossed the Golden Gate Bridge, "
        "and Golden Gate Park is nearby."
    )
    corpus = Corpus([Document(text, "a", "golden_gate"), Document("Golden Gate Bridge at dawn.", "b")], name="x")
    variant = bridge_named_once(corpus)
    assert variant.texts[0] == (
        "The Golden Gate Bridge opened in 1937. The bridge is orange. We crossed the bridge, and Golden Gate Park is "
        "nearby."
    )
    assert variant.texts[1] == "Golden Gate Bridge at dawn."
    assert variant.name == "demo-bridge-named-once" and variant.documents[0].topic == "golden_gate"


def test_demo_sae_harvests_the_corpus_its_settings_name(tmp_path, monkeypatch):
    from saewidgets.corpus import Corpus, Document

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path))
    model = tiny_model("gpt2", seed=3)
    texts = [f"Document {i} says the fog rolls over the orange towers at dawn." for i in range(80)]
    own = Corpus([Document(t, str(i)) for i, t in enumerate(texts)], name="fog")
    fog_settings = replace(TINY_DEMO, corpus="fog")
    with pytest.raises(ValueError, match="pass that Corpus as corpus="):
        demo_sae(fog_settings, model=model, progress=False)
    with pytest.raises(ValueError, match=r"DemoSettings\(corpus='fog'\)"):
        demo_sae(TINY_DEMO, model=model, progress=False, corpus=own)
    with pytest.raises(TypeError, match="takes a Corpus"):
        demo_sae(TINY_DEMO, model=model, progress=False, corpus="fog")

    demo = demo_sae(TINY_DEMO, model=model, progress=False)
    fog = demo_sae(fog_settings, model=model, progress=False, corpus=own, harvest_from=[TINY_DEMO])
    assert fog.folder != demo.folder
    harvested = model.tokenizer.decode(np.asarray(fog.activations.token_ids[fog.activations.doc_ids == 0]))
    assert "fog rolls over the orange towers" in harvested
    assert not np.array_equal(np.asarray(fog.activations.acts[:50]), np.asarray(demo.activations.acts[:50]))


def test_shortlist_ceiling_clamps_the_recipes_best_candidates_on_validation_prompts_only(tmp_path, monkeypatch):
    from saewidgets.analysis import output_scores, steering_candidates
    from saewidgets.analysis.output_score import SCORING_PROMPTS

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path))
    model = tiny_model("gpt2", seed=3)
    art = demo_sae(TINY_DEMO, model=model, progress=False)
    concept = SimpleNamespace(name="fog", query="the", terms=("fog",))
    judged_on = []
    judged = bench_steering.judged
    monkeypatch.setattr(
        bench_steering,
        "judged",
        lambda m, name, key, prompts, *rest: judged_on.append(prompts) or judged(m, name, key, prompts, *rest),
    )
    rows = bench_steering.shortlist_ceiling(model, art, concept, n=3)

    found = list(steering_candidates(model, art.sae, art.stats, "the", ["fog"]))
    scores = output_scores(model, art.sae, art.stats, found, ["fog"], 2.0, SCORING_PROMPTS, progress=False)
    best = [found[i] for i in scores.argsort(descending=True)[:3].tolist()]
    assert sorted((r["rank"], r["feature"], r["multiple"]) for r in rows) == [
        (rank, feature, m) for rank, feature in enumerate(best) for m in bench_steering.RECIPE_MULTIPLES
    ]
    assert judged_on and set(judged_on) == {bench_steering.VALIDATION_PROMPTS}, "judged on other prompts"
    assert [r["validation"] for r in rows] == sorted((r["validation"] for r in rows), reverse=True)
