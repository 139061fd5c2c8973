"""A TopK SAE on the real Gemma 3 270M middle layer explains most of the variance of held-out tokens.

A scaled-down version of the acceptance run (4,096 latents, k=32, the whole demo corpus: >= 70% of variance), sized
to finish in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gemma


def test_topk_sae_on_gemma_middle_layer_explains_most_held_out_variance(gemma):
    from saewidgets.activations import harvest
    from saewidgets.corpus import demo_corpus
    from saewidgets.sae import evaluate_sae, train_sae

    corpus = demo_corpus()
    acts = harvest(gemma, corpus, "middle", n_tokens=24_000, progress=False)
    train, held_out = acts.split(0.1, seed=0)
    sae = train_sae(
        train,
        arch="topk",
        n_features=1024,
        k=32,
        n_steps=300,
        batch_size=1024,
        lr=1e-3,
        dead_after_tokens=100_000,
        progress=False,
    )
    assert (sae.cfg.layer, sae.cfg.site) == (9, "model.layers.9")
    texts = [corpus.texts[i] for i in np.unique(held_out.doc_ids)[:6]]  # documents the SAE never saw
    metrics = evaluate_sae(sae, held_out, model=gemma, texts=texts)
    print(metrics)
    assert metrics.fve >= 0.7
    assert 28 <= metrics.l0 <= 32
    assert metrics.ce_loss_recovered > 0.5
    assert metrics.ce_clean < metrics.ce_with_sae < metrics.ce_zero_ablation
