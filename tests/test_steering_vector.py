"""DiffMean steering vectors, checked against a plain PyTorch computation, and steering by adding them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saewidgets.activations import harvest
from saewidgets.analysis import SteeringVector, steer_vector, steering_vector
from saewidgets.models.tiny import _TRAINING_TEXT

LAYER = 1


@pytest.fixture(scope="module")
def acts(tiny):
    return harvest(tiny, _TRAINING_TEXT, LAYER, progress=False)


def test_diffmean_equals_plain_pytorch(acts, monkeypatch):
    x = torch.from_numpy(np.asarray(acts.acts, dtype=np.float32)).double()
    docs = np.unique(acts.doc_ids)[:2]
    rows = torch.from_numpy(np.isin(acts.doc_ids, docs))
    diff = x[rows].mean(0) - x[~rows].mean(0)
    monkeypatch.setattr("saewidgets.analysis.diffmean.CHUNK_ROWS", 7)  # sums over several chunks
    for concept in (docs.tolist(), rows.numpy(), rows):
        v = steering_vector(acts, concept)
        assert torch.allclose(v.direction.double(), diff / diff.norm(), atol=1e-5)
        assert v.norm == pytest.approx(float(diff.norm()), rel=1e-5)
        assert v.median_norm == pytest.approx(float(x.norm(dim=1).median()), rel=1e-5)
        assert (v.n_concept, v.n_other, v.layer) == (int(rows.sum()), int((~rows).sum()), LAYER)
        assert torch.allclose(v.delta(0.5), 0.5 * v.median_norm * v.direction)


def test_diffmean_refuses_empty_sides_and_bad_masks(acts):
    with pytest.raises(ValueError, match="No rows of the concept"):
        steering_vector(acts, [10_000])
    with pytest.raises(ValueError, match="No rows of everything else"):
        steering_vector(acts, np.unique(acts.doc_ids).tolist())
    with pytest.raises(ValueError, match="one entry per row"):
        steering_vector(acts, np.zeros(3, dtype=bool))
    with pytest.raises(TypeError, match="document ids"):
        steering_vector(acts, [0.5, 1.5])


def test_steer_vector_equals_a_plain_forward_hook(tiny, acts):
    vector = steering_vector(acts, np.unique(acts.doc_ids)[:1].tolist())
    prompt, alpha = "I went for a walk and saw", 0.7
    ids = torch.tensor([tiny.encode(prompt)])
    delta = vector.delta(alpha)
    block = tiny.hf.get_submodule(tiny.site_name(LAYER))

    def add(module, inputs, output):  # every position but BOS, generated tokens included
        h = output[0] if isinstance(output, tuple) else output
        keep = torch.ones(h.shape[:2], dtype=h.dtype)
        if tiny.bos_id is not None and h.shape[1] == ids.shape[1]:
            keep[:, ids[0] == tiny.bos_id] = 0
        new = h + keep[..., None] * delta
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = block.register_forward_hook(add)
    try:
        with torch.no_grad():
            plain = tiny.hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=8,
                min_new_tokens=8,
                do_sample=False,
                pad_token_id=tiny.tokenizer.eos_token_id,
            )
    finally:
        handle.remove()
    result = steer_vector(tiny, prompt, vector, alpha, max_new_tokens=8, repetition_penalty=1.0)
    assert result.steered == [tiny.tokenizer.decode(plain[0, ids.shape[1] :], skip_special_tokens=True)]
    assert result.mode == "vector" and result.settings["alpha"] == alpha
    unsteered = steer_vector(tiny, [prompt, "The fog"], vector, 0.0, max_new_tokens=6)
    assert unsteered.steered == unsteered.default


def test_steer_vector_refuses_bad_strength(tiny, acts):
    vector = steering_vector(acts, np.unique(acts.doc_ids)[:1].tolist())
    with pytest.raises(ValueError, match="alpha"):
        steer_vector(tiny, "Hello", vector, float("nan"))
    with pytest.raises(ValueError, match="max_new_tokens"):
        steer_vector(tiny, "Hello", vector, 1.0, max_new_tokens=0)
    assert isinstance(vector, SteeringVector) and "median residual norms" in repr(vector)


def test_steering_results_carry_their_measured_hit_rate(tiny, acts):
    from saewidgets.analysis import SELECTION_PROMPTS, judge_steering
    from saewidgets.analysis.steering_judge import default_fluency
    from saewidgets.widgets.steering_panel import SteeringPanel

    vector = steering_vector(acts, np.unique(acts.doc_ids)[:1].tolist())
    prompts, terms = ["I went for a walk and saw", "The fog"], ["the", "a"]
    result = steer_vector(tiny, prompts, vector, 0.8, max_new_tokens=6, terms=terms, fluency=-1e9)
    expected = judge_steering(tiny, prompts, result.default, result.steered, terms, -1e9)
    assert result.judgement.success == expected.success and result.hit_rate == expected.rate
    assert "hit rate" in repr(result)
    assert steer_vector(tiny, prompts, vector, 0.8, max_new_tokens=2).hit_rate is None  # not judged: no terms
    calibrated = steer_vector(tiny, prompts, vector, 0.8, max_new_tokens=3, terms=terms)  # on selection prompts
    assert calibrated.judgement.threshold == default_fluency(tiny, 3).threshold
    assert default_fluency(tiny, 3).prompts == SELECTION_PROMPTS
    with pytest.raises(ValueError, match="include_default"):
        steer_vector(tiny, prompts, vector, 0.8, max_new_tokens=2, terms=terms, include_default=False)
    panel = SteeringPanel(result=result, background=False)
    assert panel.hit_rate == result.hit_rate and f"measured hit rate {result.hit_rate:.0%}" in panel.status
    panel.show_result(steer_vector(tiny, prompts, vector, 0.8, max_new_tokens=2))
    assert panel.hit_rate is None and "hit rate" not in panel.status


def test_steer_each_equals_one_steer_call_per_intervention(tiny, monkeypatch, capsys):
    from saewidgets.analysis.steering import steer, steer_each
    from saewidgets.sae import SAE, SAEConfig

    sae = SAE(
        SAEConfig(d_in=tiny.d_model, n_features=16, architecture="topk", k=4, layer=LAYER),
        torch.Generator().manual_seed(0),
    ).eval()
    prompts = ["I went for a walk and saw", "The fog"]
    interventions = [{3: 4.0}, {5: -2.0}, {3: 0.0, 7: 6.0}]
    monkeypatch.setattr("saewidgets.analysis.steering.MAX_BATCH_ROWS", 4)  # two generate calls
    batched = steer_each(tiny, sae, prompts, interventions, units="activation", max_new_tokens=6)
    for features, texts in zip(interventions, batched):
        one = steer(tiny, sae, prompts, features, units="activation", max_new_tokens=6, include_default=False)
        assert texts == one.steered
    assert "100%" not in capsys.readouterr().err, "no bar unless asked"
    shown = steer_each(tiny, sae, prompts, interventions, units="activation", max_new_tokens=6, progress="trials")
    bar = capsys.readouterr().err
    assert shown == batched and "trials: 100%" in bar and "3/3" in bar, bar


def test_steer_each_in_chunks_bounded_by_the_logits_budget_equals_one_batch(tiny, monkeypatch):
    """A budget of one intervention's rows per step: one ``generate`` per intervention, the same greedy texts as
    all of them in one batch."""
    import saewidgets.analysis.steering as steering
    from saewidgets.sae import SAE, SAEConfig

    sae = SAE(
        SAEConfig(d_in=tiny.d_model, n_features=16, architecture="topk", k=4, layer=LAYER),
        torch.Generator().manual_seed(1),
    ).eval()
    prompts = ["I went for a walk and saw", "The fog", "Bridges are"]
    interventions = [{3: 4.0}, {5: -2.0}, {3: 0.0, 7: 6.0}, {9: 3.0}]
    calls = []
    generate = steering._generate_batch  # one batched generate call
    monkeypatch.setattr(
        steering,
        "_generate_batch",
        lambda model, rows, *a, **kw: calls.append(len(rows)) or generate(model, rows, *a, **kw),
    )

    def run(budget_rows: int) -> list[list[str]]:
        monkeypatch.setattr(steering, "GENERATION_LOGITS_BUDGET", budget_rows * 4 * tiny.vocab_size)
        calls.clear()
        return steering.steer_each(tiny, sae, prompts, interventions, units="activation", max_new_tokens=5)

    whole = run(steering.MAX_BATCH_ROWS)
    assert calls == [12]
    assert run(len(prompts) + 1) == whole and calls == [3, 3, 3, 3]
    assert run(1) == whole and calls == [3, 3, 3, 3], "at least one whole intervention per call"
    assert steering.rows_per_generate(tiny) == 1


def test_steering_panel_shows_feature_and_vector_steering_side_by_side(tiny, acts):
    """`SteeringPanel.for_model` with a DiffMean vector: one Generate clamps the feature (`steer`) and adds the
    vector (`steer_vector`) on the same prompt; each column shows what that call returns, with its hit rate."""
    from saewidgets.analysis import feature_stats, steer
    from saewidgets.sae import SAE, SAEConfig
    from saewidgets.widgets.steering_panel import SteeringPanel

    sae = SAE(SAEConfig(d_in=tiny.d_model, n_features=16, architecture="topk", k=4, layer=LAYER)).eval()
    stats = feature_stats(tiny, sae, acts, top_k=3, context=(2, 1), progress=False)
    vector = steering_vector(acts, np.unique(acts.doc_ids)[:1].tolist())
    terms = ["the", "a"]
    panel = SteeringPanel.for_model(
        tiny, sae, stats, vector, terms=terms, feature=3, multiple=2.0, prompt="The fog", background=False
    )
    assert panel.has_vector and panel.vector_name == "DiffMean vector" and panel.vector_texts == []
    panel.alpha = 0.75
    assert panel.generate(wait=True) and panel.error == ""
    clamped = steer(tiny, sae, "The fog", {3: 2.0}, stats=stats, terms=terms)
    added = steer_vector(tiny, "The fog", vector, 0.75, terms=terms)
    assert panel.steered_texts == clamped.steered and panel.default_texts == clamped.default
    assert panel.vector_texts == added.steered and panel.vector_alpha == 0.75
    assert (panel.hit_rate, panel.vector_hit_rate) == (clamped.hit_rate, added.hit_rate)
    assert "DiffMean vector" in panel._fallback_html()
    with pytest.raises(Exception, match="alpha: the vector's strength"):
        panel.alpha = -1.0
    alone = SteeringPanel.for_model(tiny, sae, stats, prompt="The fog", background=False)
    assert not alone.has_vector and alone.generate(wait=True) and alone.vector_texts == []
    assert "DiffMean" not in alone._fallback_html()
