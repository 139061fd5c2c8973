"""The steering benchmark's layer experiment: quick-sized SAEs at other blocks, trained by `demo_sae` (the demo
pipeline's first stages, cached where `demo_artifacts` looks) and judged on the validation prompts too."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from benchmarks import bench_steering
from saewidgets.demo import QUICK, DemoSettings, demo_artifacts, demo_sae
from saewidgets.models import tiny_model


def test_layer_settings_are_the_quick_demos_but_for_the_block():
    for layer in bench_steering.LAYERS:
        changed = {k for k, v in asdict(bench_steering.layer_settings(layer)).items() if asdict(QUICK)[k] != v}
        assert changed == {"layer"}
        assert bench_steering.layer_settings(layer).key() != QUICK.key()


def test_the_benchmark_steers_the_layer_saes_with_the_recipe_after_the_demo_saes():
    labels = [(label, methods) for label, _, methods in bench_steering.saes(quick=True, layers=(6, 9))]
    assert labels[0] == ("quick", tuple(bench_steering.METHODS))
    assert labels[1:] == [("quick, block 6", ("recipe",)), ("quick, block 9", ("recipe",))]
    assert [label for label, _, _ in bench_steering.saes(quick=False, layers=())] == ["quick", "full"]


def test_layer_saes_are_trained_and_validated_the_demo_saes_are_only_loaded(monkeypatch):
    trained, built = [], []
    monkeypatch.setattr("saewidgets.demo.demo_sae", lambda settings, model: trained.append(settings.layer))

    class Demo:
        def __init__(self, settings, model, validate=False):
            built.append((settings.layer, validate))

    monkeypatch.setattr(bench_steering, "Demo", Demo)
    bench_steering.load("quick, block 6", bench_steering.layer_settings(6), None)
    bench_steering.load("quick", QUICK, None)
    assert trained == [6] and built == [(6, True), ("late", False)]


def test_the_command_line_refuses_a_layer_for_the_full_sae():
    with pytest.raises(SystemExit):
        bench_steering.main(["--sae", "full", "--layer", "6"])


def test_demo_sae_caches_the_first_stages_and_demo_artifacts_reuses_them(tmp_path, monkeypatch):
    import saewidgets.sae as sae_module

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path))
    model = tiny_model("gpt2", seed=3)
    settings = DemoSettings(
        model="tiny-gpt2", layer=1, n_tokens=2000, context_len=32, n_features=32, k=4, n_steps=20, batch_size=64
    )
    first = demo_sae(settings, model=model, progress=False)
    assert first.sae.cfg.layer == 1 and first.stats.n_features == 32
    assert {p.name for p in first.folder.iterdir()} >= {"activations", "sae", "stats"}
    assert not (first.folder / "metrics.json").exists(), "demo_sae ran the held-out metrics"

    monkeypatch.setattr(sae_module, "train_sae", lambda *a, **k: pytest.fail("the cached SAE was trained again"))
    art = demo_artifacts(settings, model=model, progress=False)
    assert art.sae.fingerprint() == first.sae.fingerprint() and art.folder == first.folder
    assert (first.folder / "metrics.json").exists()
