"""``saewidgets demo`` end to end on a tiny random model: the page is written, and the model is freed before the
feature map imports UMAP (the order that keeps the quick demo within Binder's memory)."""

from __future__ import annotations

import gc
import os
import platform
import re
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from saewidgets import analysis
from saewidgets.demo import page as demo_page
from saewidgets.demo import run as demo_run
from saewidgets.demo.settings import DemoSettings

TINY = DemoSettings(
    model="tiny-gpt2", layer=1, n_tokens=3000, context_len=32, n_features=64, k=4, n_steps=50, batch_size=64
)


def test_the_demo_writes_its_page_with_the_model_freed_before_the_feature_map(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path / "cache"))
    models: list[weakref.ref] = []
    model_alive_at_map: list[bool] = []
    artifacts, geometry = demo_run.demo_artifacts, analysis.feature_geometry

    def recording_artifacts(*args, **kwargs):
        art = artifacts(*args, **kwargs)
        models.append(weakref.ref(art.model))
        return art

    def checking_geometry(*args, **kwargs):
        gc.collect()
        model_alive_at_map.append(models[0]() is not None)
        return geometry(*args, **kwargs)

    monkeypatch.setattr(demo_run, "demo_artifacts", recording_artifacts)
    monkeypatch.setattr(analysis, "feature_geometry", checking_geometry)
    assert demo_run.run_demo(TINY, tmp_path / "page", steer=False) == 0

    assert model_alive_at_map == [False], "the feature map ran while the model was still held"
    page = (tmp_path / "page" / "explorer.html").read_text()
    assert demo_page.HEATMAP_TEXT.split()[3] in page and "feature map: 64 decoder directions" in capsys.readouterr().out


@pytest.mark.parametrize("quick", [True, False])
def test_the_quick_demo_fixes_the_allocator_threshold_after_training_and_the_full_demo_never(
    tmp_path, monkeypatch, quick
):
    """The quick demo (Binder's, ~2 GB) keeps glibc's own threshold for harvest and training (a fixed one faults in
    their blocks afresh each batch) and fixes it for the held-out LM loss, logit effects and steering (their
    many-sized logit blocks would fragment the heap). The full demo keeps glibc's throughout: it has room to spare,
    and the fixed threshold cost its later stages time in the kernel, faulting pages in."""
    import saewidgets.sae as sae_module

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path / "cache"))
    order: list[str] = []

    def recorded(name, fn):
        def call(*args, **kwargs):
            order.append(name)
            return fn(*args, **kwargs)

        return call

    # Recorded, not set: the allocator setting would last for the rest of the test session (it has its own test,
    # in a child process).
    monkeypatch.setattr(demo_run, "return_large_blocks", recorded("threshold", lambda: True))
    monkeypatch.setattr(sae_module, "train_sae", recorded("training", sae_module.train_sae))
    monkeypatch.setattr(sae_module, "evaluate_sae", recorded("metrics", sae_module.evaluate_sae))
    assert demo_run.run_demo(TINY, tmp_path / "page", steer=False, quick=quick) == 0
    assert order == (["training", "threshold", "metrics"] if quick else ["training", "metrics"])


def test_demo_artifacts_refuses_first_stages_run_with_other_settings(tmp_path, monkeypatch):
    from saewidgets.demo import demo_artifacts, demo_sae

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path / "cache"))
    first = demo_sae(TINY, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        demo_artifacts(TINY, sae_stages=first, k=8, progress=False)
    art = demo_artifacts(TINY, sae_stages=first, progress=False)
    assert art.sae is first.sae and art.stats is first.stats


def test_a_cached_demo_loads_no_model_and_writes_the_same_page(tmp_path, monkeypatch, capsys):
    """Every stage of the second run is read from the cache (the page's attribution and heatmap included), so the
    model (~6 s and ~500 MB for Gemma) is never loaded."""
    import saewidgets

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path / "cache"))
    assert demo_run.run_demo(TINY, tmp_path / "first", steer=False) == 0
    first_out = capsys.readouterr().out

    def no_model(*args, **kwargs):
        raise AssertionError("a cached run loaded the model")

    monkeypatch.setattr(saewidgets, "load_model", no_model)
    assert demo_run.run_demo(TINY, tmp_path / "again", steer=False) == 0
    again_out = capsys.readouterr().out
    assert "features on tiny-gpt2 " in again_out
    assert again_out.split("Explorer written")[0] == first_out.split("Explorer written")[0]
    first, again = ((tmp_path / run / "explorer.html").read_text() for run in ("first", "again"))
    fallback_id = re.compile(r'"fallback_id":"[0-9a-f]{32}"')  # a fresh id per page
    assert fallback_id.sub("", again) == fallback_id.sub("", first) and "heatmap_acts" in first


def test_the_page_examples_slice_the_heatmap_text_run_once_for_every_feature(tmp_path):
    from types import SimpleNamespace

    from saewidgets.models import tiny_model
    from tiny_sae import tiny_topk_sae

    model = tiny_model("gpt2", seed=3)
    sae = tiny_topk_sae(model)
    art = SimpleNamespace(model=model, sae=sae, folder=tmp_path, settings=TINY)
    examples = demo_page.page_examples(art)
    chosen = [5, 0, 17]
    direct = analysis.token_activations(model, sae, demo_page.HEATMAP_TEXT, chosen)
    sliced = examples.activations(demo_page.HEATMAP_TEXT, chosen)
    assert sliced.tokens == direct.tokens and sliced.features == chosen
    np.testing.assert_allclose(sliced.acts, direct.acts, rtol=1e-5, atol=1e-6)
    assert "Paris" in examples.attribution.target and examples.attribution.scores.shape[1] == sae.cfg.n_features
    with pytest.raises(ValueError, match="only its own heatmap text"):
        examples.activations("another text", chosen)

    # Kept beside the SAE and read back as they were; another SAE's examples are run again, on that SAE.
    kept = demo_page.page_examples(SimpleNamespace(model=None, sae=sae, folder=tmp_path, settings=TINY))
    assert kept.heatmap.tokens == examples.heatmap.tokens and kept.heatmap.features == examples.heatmap.features
    np.testing.assert_array_equal(kept.heatmap.acts, examples.heatmap.acts)
    a, b = kept.attribution, examples.attribution
    assert (a.tokens, a.target, a.target_ids, a.metric, a.ablations) == (
        b.tokens,
        b.target,
        b.target_ids,
        b.metric,
        b.ablations,
    )
    assert torch.equal(a.scores, b.scores) and torch.equal(a.error_attribution, b.error_attribution)
    other = tiny_topk_sae(model, seed=1)
    fresh = demo_page.page_examples(SimpleNamespace(model=model, sae=other, folder=tmp_path, settings=TINY))
    direct = analysis.attribute(model, other, demo_page.ATTRIBUTION_PROMPT, target=demo_page.ATTRIBUTION_TARGET)
    assert torch.allclose(fresh.attribution.scores, direct.scores)
    (tmp_path / "page_examples.npz").write_bytes(b"not a zip")  # unreadable: run again, not an error
    assert (
        demo_page.page_examples(SimpleNamespace(model=model, sae=sae, folder=tmp_path, settings=TINY)).heatmap.tokens
        == examples.heatmap.tokens
    )


HEAP_PROBE = """
import sys
import numpy as np
from saewidgets.models._memory import return_large_blocks

def resident_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

if sys.argv[1] == "fixed":
    assert return_large_blocks()
warm = np.ones(24 * 2**20, np.uint8)  # freed: glibc raises its mmap threshold to 24 MB
del warm
before = resident_mb()
block = np.ones(16 * 2**20, np.uint8)
del block
print(resident_mb() - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not Path("/proc/self/status").exists(), reason="glibc")
def test_large_blocks_go_back_to_the_system_when_freed(tmp_path):
    """After a 24 MB block is freed glibc serves 16 MB from its heap and keeps it; `return_large_blocks` (the demo
    calls it) maps it on its own, so freeing it gives the memory back; so does `LARGE_BLOCK_ENV` in a child's
    environment (the kernels `saewidgets demo --lab` and Binder start). In child processes: it lasts for the
    process."""
    from saewidgets.models._memory import LARGE_BLOCK_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    runs = {"default": ("default", env), "fixed": ("fixed", env), "env": ("default", {**env, **LARGE_BLOCK_ENV})}
    kept = {
        name: float(
            subprocess.run(
                [sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, check=True, env=child_env
            ).stdout
        )
        for name, (mode, child_env) in runs.items()
    }
    assert kept["default"] > 12, f"glibc's default kept {kept['default']:.1f} MB: the probe no longer shows the case"
    assert kept["fixed"] < 2, f"{kept['fixed']:.1f} MB of a freed 16 MB block stayed resident"
    assert kept["env"] < 2, f"with LARGE_BLOCK_ENV (kernels, Binder) {kept['env']:.1f} MB stayed resident"
