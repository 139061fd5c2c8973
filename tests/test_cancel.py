"""Cancellation: every long call stops between batches once its ``cancel=`` signal is set, raises `Cancelled`,
returns and saves nothing, and leaves the model usable and giving the same results.

`SetAfter` is a signal that reads as set from its ``n+1``-th check on: with ``n >= 1`` the call has passed at least
one check and done work before it stops, which shows the check is made between batches, not only at the start.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from saewidgets import analysis, harvest
from saewidgets.cancel import Cancelled, check_cancel
from saewidgets.models import tiny_model
from tiny_sae import tiny_topk_sae

PROMPT = "The Golden Gate Bridge is in"
TEXTS = [f"Document {i}: the bridge over the bay is red and the fog rolls in at dawn." for i in range(12)]


class SetAfter:
    """Reads as not set for ``n`` checks, then set; counts the checks."""

    def __init__(self, n: int) -> None:
        self.n, self.checks = n, 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > self.n


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("gpt2", seed=3)
    sae = tiny_topk_sae(model)
    stats = analysis.feature_stats(model, sae, TEXTS, top_k=3, progress=False)
    return model, sae, stats


def model_is_clean(model) -> bool:
    """Its lock can be taken from another thread and no hook is left on any module."""
    got = []
    probe = threading.Thread(target=lambda: got.append(model.lock.acquire(timeout=5) and (model.lock.release() or 1)))
    probe.start()
    probe.join()
    hooks = any(m._forward_hooks or m._forward_pre_hooks for m in model.hf.modules())
    return bool(got and got[0]) and not hooks


def test_check_cancel_accepts_none_and_events():
    check_cancel(None, "x")
    event = threading.Event()
    check_cancel(event, "x")
    event.set()
    with pytest.raises(Cancelled, match="Stopped: the work did not finish"):
        check_cancel(event, "the work")


def test_harvest_stops_between_batches_and_deletes_its_spill_file(setup, tmp_path):
    model, _, _ = setup
    options = dict(layer=1, context_len=16, batch_size=2, ram_budget=0, memmap_dir=tmp_path, progress=False)
    signal = SetAfter(2)
    with pytest.raises(Cancelled, match="harvest"):
        harvest(model, TEXTS, cancel=signal, **options)
    assert signal.checks == 3, "not checked before every batch"
    assert list(tmp_path.iterdir()) == [], "the cancelled harvest left its spill file"
    assert model_is_clean(model)
    full = harvest(model, TEXTS, **options)
    np.testing.assert_array_equal(np.asarray(full.acts), np.asarray(harvest(model, TEXTS, **options).acts))


def test_feature_stats_stop_between_batches_and_the_next_run_is_unchanged(setup):
    model, sae, stats = setup
    acts = harvest(model, TEXTS, layer=1, progress=False)
    signal = SetAfter(3)
    with pytest.raises(Cancelled, match="feature statistics"):
        analysis.feature_stats(model, sae, acts, top_k=3, batch_size=16, progress=False, cancel=signal)
    assert signal.checks == 4
    again = analysis.feature_stats(model, sae, TEXTS, top_k=3, progress=False, cancel=threading.Event())
    torch.testing.assert_close(again.max_act, stats.max_act)
    torch.testing.assert_close(again.top_values, stats.top_values)


def test_feature_stats_of_a_corpus_passes_the_signal_to_its_harvest(setup):
    model, sae, _ = setup
    with pytest.raises(Cancelled, match="harvest"):
        analysis.feature_stats(model, sae, TEXTS, progress=False, cancel=SetAfter(0))


def test_generation_stops_within_a_token_and_the_next_one_is_unchanged(setup):
    model, sae, stats = setup
    before = analysis.steer(model, sae, PROMPT, {2: 1.0}, stats=stats, max_new_tokens=12)
    steps = []
    handle = model.hf.transformer.h[0].register_forward_hook(lambda *_: steps.append(1))
    try:
        with pytest.raises(Cancelled, match="generation"):
            analysis.steer(model, sae, PROMPT, {2: 1.0}, stats=stats, max_new_tokens=12, cancel=SetAfter(4))
    finally:
        handle.remove()
    assert 3 <= len(steps) <= 5, f"{len(steps)} forward passes: the generation did not stop within a token"
    assert model_is_clean(model)
    after = analysis.steer(model, sae, PROMPT, {2: 1.0}, stats=stats, max_new_tokens=12)
    assert (after.default, after.steered) == (before.default, before.steered)


@pytest.mark.parametrize("call", ["generate", "steer_vector"])
def test_every_generation_entry_point_takes_the_signal(setup, call):
    model, sae, _ = setup
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        if call == "generate":
            analysis.generate(model, PROMPT, max_new_tokens=3, cancel=stop)
        else:
            vector = analysis.SteeringVector(
                direction=sae.W_dec[0].detach(),
                norm=1.0,
                median_norm=1.0,
                layer=1,
                model_name=model.name,
                n_concept=1,
                n_other=1,
            )
            analysis.steer_vector(model, PROMPT, vector, alpha=1.0, max_new_tokens=3, cancel=stop)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_attribution_stops_between_its_passes(setup, n):
    model, sae, _ = setup
    before = analysis.attribute(model, sae, PROMPT, target=" Paris", n_ablate=3)
    with pytest.raises(Cancelled, match="attribution"):
        analysis.attribute(model, sae, PROMPT, target=" Paris", n_ablate=3, cancel=SetAfter(n))
    assert model_is_clean(model)
    after = analysis.attribute(model, sae, PROMPT, target=" Paris", n_ablate=3)
    torch.testing.assert_close(after.scores, before.scores)
    assert after.ablations == before.ablations


def test_token_activations_never_return_after_a_stop(setup):
    model, sae, _ = setup
    with pytest.raises(Cancelled, match="token activations"):
        analysis.token_activations(model, sae, PROMPT, [0, 1], cancel=SetAfter(1))
    assert model_is_clean(model)
    assert analysis.token_activations(model, sae, PROMPT, [0, 1], cancel=threading.Event()).tokens


class SetOnceExists:
    """Reads as set from the ``n``-th check after ``path`` appears (a stage of the pipeline has finished)."""

    def __init__(self, path, n: int) -> None:
        self.path, self.n, self.seen = path, n, 0

    def is_set(self) -> bool:
        if self.path.exists():
            self.seen += 1
        return self.seen >= self.n


def test_the_demo_pipeline_stops_inside_harvest_and_training_and_caches_nothing_partial(setup, tmp_path, monkeypatch):
    from saewidgets.demo import pipeline
    from saewidgets.demo.settings import DemoSettings

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path))
    model = setup[0]
    settings = DemoSettings(
        model="tiny-gpt2", layer=1, n_tokens=3000, context_len=32, n_features=64, k=4, n_steps=50, batch_size=64
    )
    folder = pipeline.cache_dir("demo", settings.key())
    with pytest.raises(Cancelled, match="harvest"):
        pipeline.demo_artifacts(settings, model=model, progress=False, cancel=SetAfter(2))
    assert not (folder / "activations").exists()

    with pytest.raises(Cancelled, match=r"demo pipeline \(training\)"):
        pipeline.demo_artifacts(settings, model=model, progress=False, cancel=SetOnceExists(folder / "activations", 5))
    assert (folder / "activations").exists(), "the finished stage was not kept"
    assert not (folder / "sae").exists(), "a stopped training run was saved as the demo's SAE"
    assert model_is_clean(model)
