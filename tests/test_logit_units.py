"""Logit effects in units people can read: the logit change at a feature's activation on a typical token, checked
against the model's own final norm and unembedding, with the per-unit ranking kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saewidgets.activations import harvest
from saewidgets.analysis import feature_card, feature_stats, logit_effects
from saewidgets.analysis.logits import _META, TYPICAL_TEXTS, final_residual_rms, norm_gain
from saewidgets.sae import SAE, SAEConfig


@pytest.fixture(scope="module")
def sae(tiny):
    sae = SAE(
        SAEConfig(d_in=tiny.d_model, n_features=24, architecture="relu", layer=1), torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 3, 24)[:, None])  # directions of different sizes
    return sae.eval()


@pytest.fixture(scope="module")
def effects(tiny, sae):
    return logit_effects(tiny, sae, k=5, progress=False)


def test_logit_change_at_an_activation_is_what_the_model_computes_on_a_typical_token(tiny, sae):
    """Add ``a * d`` to the final residual ``h`` of the token whose norm scale is the median, run the model's own
    final norm and unembedding, and compare the logit change of each promoted / suppressed token with the table.
    The directions are made orthogonal to (centred) ``h``, so that adding them leaves the norm's scale unchanged to
    first order: what remains is exactly what the table claims (gain, centring, 1/rms, unembedding)."""
    residuals = torch.from_numpy(
        np.asarray(harvest(tiny, TYPICAL_TEXTS, layer=tiny.n_layers - 1, progress=False).acts)
    ).float()
    _, centres = norm_gain(tiny.final_norm, tiny.d_model)
    c = residuals - residuals.mean(-1, keepdim=True) if centres else residuals
    scales = c.pow(2).mean(-1).sqrt()
    t = int((scales - float(scales.double().median())).abs().argmin())
    h, u = residuals[t], c[t] / c[t].norm()
    orthogonal = SAE(sae.cfg, torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        orthogonal.load_state_dict(sae.state_dict())
        orthogonal.W_dec.sub_((orthogonal.W_dec @ u)[:, None] * u)
    effects = logit_effects(tiny, orthogonal, k=5, progress=False)
    assert effects.final_rms == pytest.approx(float(scales.double().median()), rel=1e-5)
    for feature in (3, 20):
        d = orthogonal.W_dec[feature].detach() / orthogonal.cfg.input_scale
        a = 0.01 * float(h.norm() / d.norm())  # small next to the residual: the linear regime
        change = tiny.logits_of_residual(h + a * d) - tiny.logits_of_residual(h)
        for rows, ids in (
            (effects.promoted(feature, a), effects.promoted_ids[feature]),
            (effects.suppressed(feature, a), effects.suppressed_ids[feature]),
        ):
            actual = change[ids].numpy()
            np.testing.assert_allclose([r["value"] for r in rows], actual, rtol=0.02, atol=0.01 * abs(actual).max())


def test_the_ranking_is_the_per_unit_one(effects):
    for feature in range(effects.n_features):
        per_unit, at = effects.promoted(feature), effects.promoted(feature, 7.5)
        assert [r["token"] for r in per_unit] == [r["token"] for r in at]
        assert all(x["value"] * 7.5 / effects.final_rms == pytest.approx(y["value"]) for x, y in zip(per_unit, at))


def test_the_card_states_its_unit_and_gives_the_change_at_the_mean_activation(tiny, sae, effects):
    acts = harvest(tiny, list(TYPICAL_TEXTS), layer=1, progress=False)
    stats = feature_stats(tiny, sae, acts, top_k=3, progress=False)
    i = int(stats.density.argmax())
    card = json.loads(json.dumps(feature_card(stats, i, effects).to_dict()))
    assert card["logit_unit"] == "Δlogit @ mean act"
    expected = [r["value"] * card["mean_act"] / effects.final_rms for r in effects.promoted(i)]
    assert [r["value"] for r in card["promoted"]] == pytest.approx(expected)


def test_a_cache_written_without_the_final_scale_gets_it(tiny, sae, tmp_path):
    first = logit_effects(tiny, sae, k=3, progress=False, cache_dir=tmp_path)
    (meta_path,) = tmp_path.glob(f"logit_effects-*/{_META}")
    meta = json.loads(meta_path.read_text())
    meta.pop("final_rms")  # as an older saewidgets wrote it
    meta_path.write_text(json.dumps(meta))
    again = logit_effects(tiny, sae, k=3, progress=False, cache_dir=tmp_path)
    assert again.final_rms == pytest.approx(first.final_rms) == pytest.approx(final_residual_rms(tiny))
    assert json.loads(meta_path.read_text())["final_rms"] == pytest.approx(first.final_rms)
