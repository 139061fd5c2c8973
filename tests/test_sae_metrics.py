"""evaluate_sae: reconstruction numbers on held-out rows, and CE loss with the SAE spliced into a real (tiny) model."""

from __future__ import annotations

import math

import pytest
import torch

from saewidgets.sae import SAE, SAEConfig, evaluate_sae

TEXTS = [
    "The Golden Gate Bridge is a suspension bridge in San Francisco.",
    "I went for a walk and saw the fog roll over the bay.",
    "Trains, buses and ferries carry commuters across the city every morning.",
]


def identity_sae(d: int, layer: int = 1, decoder_scale: float = 1.0, model_name: str = "") -> SAE:
    """relu(x) - relu(-x) = x: a ReLU SAE with 2d latents that reconstructs any input exactly (scaled decoder:
    a reconstruction that is decoder_scale * x)."""
    sae = SAE(
        SAEConfig(
            d_in=d,
            n_features=2 * d,
            architecture="relu",
            layer=layer,
            model_name=model_name,
            apply_b_dec_to_input=False,
        )
    )
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0) * decoder_scale)
    return sae.eval()


def test_reconstruction_metrics_match_their_definitions():
    torch.manual_seed(0)
    x = torch.randn(300, 8) * 2 + 1
    sae = identity_sae(8, decoder_scale=0.5)  # x_hat = x / 2
    with torch.no_grad():
        sae.W_enc[:, :3] = 0  # latents 0..2 never fire; 8..15 fire on the negative half of each coordinate
    m = evaluate_sae(sae, x, batch_size=64)  # several batches
    with torch.no_grad():
        x_hat = sae(x)
    assert m.n_tokens == 300
    assert m.mse == pytest.approx(float((x - x_hat).pow(2).mean()), rel=1e-5)
    assert m.fve == pytest.approx(float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()), rel=1e-5)
    assert m.l0 == pytest.approx(float((sae.encode(x) != 0).sum(-1).float().mean()), rel=1e-6)
    assert m.dead_fraction == pytest.approx(3 / 16)
    assert m.dense_fraction == pytest.approx(13 / 16)
    assert sum(m.density_histogram["counts"]) == 13
    assert m.ce_clean is None and "CE" not in str(m)
    assert set(m.to_dict()) >= {"l0", "mse", "fve", "dead_fraction", "dense_fraction", "density_histogram"}


@pytest.mark.parametrize("layout", ["gpt2", "gemma"])
def test_ce_loss_recovered_is_1_for_a_perfect_sae_and_0_for_one_that_outputs_zeros(request, layout):
    model = request.getfixturevalue(f"tiny_{layout}")
    x = torch.randn(50, model.d_model)
    # Layer 0, not the last block: the final RMSNorm of Gemma would undo a rescaled reconstruction there.
    perfect = evaluate_sae(identity_sae(model.d_model, layer=0), x, model, TEXTS)
    assert perfect.ce_with_sae == pytest.approx(perfect.ce_clean, abs=1e-5)
    assert abs(perfect.ce_zero_ablation - perfect.ce_clean) > 1e-3  # zeroing the residual stream changes the loss
    assert perfect.ce_loss_recovered == pytest.approx(1.0, abs=1e-3)
    assert perfect.delta_lm_loss == pytest.approx(0.0, abs=1e-5)

    zero = evaluate_sae(identity_sae(model.d_model, layer=0, decoder_scale=0.0), x, model, TEXTS)
    assert zero.ce_with_sae == pytest.approx(zero.ce_zero_ablation, abs=1e-5)
    assert zero.ce_loss_recovered == pytest.approx(0.0, abs=1e-3)

    half = evaluate_sae(identity_sae(model.d_model, layer=0, decoder_scale=0.5), x, model, TEXTS)
    assert half.ce_with_sae != pytest.approx(half.ce_clean, abs=1e-4)  # the splice really changed the model
    assert "CE loss recovered" in str(half)


def test_clean_ce_equals_a_plain_forward_of_each_text(tiny_gemma):
    """Left padding, masks and BOS handling must not change the clean loss of a batch."""
    model = tiny_gemma
    total, count = 0.0, 0
    for text in TEXTS:
        ids = torch.tensor([model.encode(text)])
        with torch.no_grad():
            logits = model.hf(ids).logits[0, :-1]
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    m = evaluate_sae(identity_sae(model.d_model), torch.randn(10, model.d_model), model, TEXTS, layer=1)
    assert m.n_ce_tokens == count
    assert m.ce_clean == pytest.approx(total / count, rel=1e-5)


def test_evaluating_on_activations_of_the_wrong_width_says_so():
    with pytest.raises(ValueError, match="are 9 wide but the SAE expects d_in=8"):
        evaluate_sae(identity_sae(8), torch.randn(10, 9))


def test_nan_in_held_out_activations_is_located():
    x = torch.randn(20, 8)
    x[4, 2] = math.nan
    with pytest.raises(FloatingPointError, match="row 4, column 2"):
        evaluate_sae(identity_sae(8), x)


def test_lm_loss_does_not_depend_on_how_texts_are_batched(tiny_gemma):
    """The loss is taken one text at a time within a batch (no copy of the [batch, context, vocab] logits), and
    the default batch is sized by the logits' bytes: every batching gives the same three losses."""
    from saewidgets.sae.metrics import lm_loss_with_sae

    sae = identity_sae(tiny_gemma.d_model, layer=0, decoder_scale=0.5)
    texts = TEXTS + ["A short one.", "Commuters crossed the bridge in the fog while the ferries waited at the pier."]
    by_batch = [lm_loss_with_sae(sae, tiny_gemma, texts, batch_size=b) for b in (None, 1, 2, len(texts))]
    for other in by_batch[1:]:
        assert other[3] == by_batch[0][3]
        assert other[:3] == pytest.approx(by_batch[0][:3], rel=1e-5)
