"""SAE families and sweeps, FLOP accounting, scaling-law fits and feature splitting (issue #20), on tiny random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from saewidgets.analysis.scaling import compute_optimal, fit_power_law, fit_scaling_laws
from saewidgets.analysis.splitting import joint_geometry, match_features
from saewidgets.sae import SAE, SAEConfig, SAEMismatchError, TrainConfig, train_sae
from saewidgets.sae.architectures import training_step
from saewidgets.sae.family import SAEFamily, sweep, train_family
from saewidgets.sae.flops import step_flops
from saewidgets.sae.train import Trainer

D, F, B, K = 8, 32, 16, 4


# -- FLOP accounting ------------------------------------------------------------------------------------------


def test_flops_equal_a_hand_count_for_each_architecture():
    d, f, b, k, a = D, F, B, K, 3
    dense = 12 * b * d * f  # enc fwd, dec fwd, grad f, grad W_dec, grad W_enc, grad of x - b_dec: 2bdf each
    assert step_flops("relu", d, f, b) == dense == 49152
    assert step_flops("jumprelu", d, f, b) == dense
    # sparse TopK: encoder forward 2bdf; 4 products over the kb active pairs (2d each); W_enc @ grad b_enc 2df
    sparse = 2 * b * d * f + 8 * d * k * b + 2 * d * f
    assert step_flops("topk", d, f, b, k) == sparse == 12800
    assert step_flops("batchtopk", d, f, b, k) == sparse
    # AuxK on a dead latents per token: 4 sparse products over the ab pairs, one more W_enc @ grad b_enc
    assert step_flops("topk", d, f, b, k, aux=a) == sparse + 8 * b * d * a + 2 * d * f
    # dense kernels: TopK keeps the encoder's three dense products and decodes k latents (embedding bag x 3)
    assert step_flops("topk", d, f, b, k, sparse_kernels=False) == 6 * b * d * f + 6 * b * d * k
    assert step_flops("batchtopk", d, f, b, k, sparse_kernels=False, aux=a) == dense + 6 * b * d * a
    assert step_flops("relu", d, f, b, b_dec_in_input=False) == 10 * b * d * f
    with pytest.raises(ValueError, match="pass k="):
        step_flops("topk", d, f, b)
    with pytest.raises(ValueError, match="not an SAE architecture"):
        step_flops("gated", d, f, b)


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "batchtopk", "topk"])
def test_flops_of_the_dense_products_match_torch_counter(arch):
    """torch's own FLOP counter over a real training step (forward and backward) sees the matrix products the
    count names: all of them for the dense step, the dense encoder part for TopK (the rest are embedding bags)."""
    k = K if arch in ("topk", "batchtopk") else None
    sae = SAE(SAEConfig(d_in=D, n_features=F, architecture=arch, k=k), torch.Generator().manual_seed(0))
    tc = TrainConfig(arch=arch, n_features=F, k=K, n_steps=10, sparse_kernels=False)
    with FlopCounterMode(display=False) as counter:
        training_step(sae, torch.randn(B, D), tc, 3, torch.zeros(F, dtype=torch.bool)).loss.backward()
    expected = step_flops(arch, D, F, B, k, sparse_kernels=False)
    if arch == "topk":
        expected -= 6 * B * D * K  # the embedding-bag decode, which the counter does not see
    assert counter.get_total_flops() == expected


# -- families and sweeps ------------------------------------------------------------------------------------------


def _data(n=2048, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * torch.linspace(0.5, 2.0, d)


SMALL = dict(n_steps=20, batch_size=64, k=2, lr_warmup_steps=2, progress=False)


def test_family_member_is_the_sae_train_sae_makes_and_runs_are_cached(tmp_path):
    acts, held = _data(), _data(512, seed=1)
    family = train_family(acts, [16, 4], eval_activations=held, cache_dir=tmp_path, **SMALL)
    assert family.sizes == [4, 16]
    alone = train_sae(acts, n_features=16, **SMALL)
    assert family[16].fingerprint() == alone.fingerprint()  # one read per batch changes nothing
    for result, size in zip(family.results, [4, 16]):
        assert (result.n_features, result.n_steps, result.tokens, result.evaluated_on) == (size, 20, 1280, "held-out")
        assert result.flops == 20 * step_flops("topk", D, size, 64, 2)  # no latent dead within 20 steps
        assert math.isclose(result.loss, 1 - result.fve) and 0 < result.loss < 1
        assert 0 < result.l0 <= 2 and 0 <= result.dead_fraction <= 1
    again = train_family(acts, [4, 16], eval_activations=held, cache_dir=tmp_path, **SMALL)
    assert [s.fingerprint() for s in again.saes] == [s.fingerprint() for s in family.saes]
    assert again.results == family.results and again[16].history == family[16].history


def test_interrupted_sweep_resumes_to_the_same_saes(tmp_path, monkeypatch):
    acts = _data()
    reference = sweep(acts, [4, 8], [10, 20], cache=False, checkpoint_every=5, **SMALL)
    advance = Trainer.advance

    def interrupt_at_step_12(self, batch=None):
        if self.step == 12:
            raise KeyboardInterrupt
        return advance(self, batch)

    monkeypatch.setattr(Trainer, "advance", interrupt_at_step_12)
    with pytest.raises(KeyboardInterrupt):
        sweep(acts, [4, 8], [10, 20], cache_dir=tmp_path, checkpoint_every=5, **SMALL)
    monkeypatch.setattr(Trainer, "advance", advance)
    resumed = sweep(acts, [4, 8], [10, 20], cache_dir=tmp_path, checkpoint_every=5, **SMALL)
    assert [r.fingerprint for r in resumed.results] == [r.fingerprint for r in reference.results]
    assert [r.flops for r in resumed.results] == [r.flops for r in reference.results]
    assert [(r.n_features, r.n_steps) for r in resumed.results] == [(4, 10), (4, 20), (8, 10), (8, 20)]
    assert resumed.family().sizes == [4, 8] and resumed.family(10)[8].cfg.n_features == 8


def test_family_refuses_mixed_models_layers_and_bad_sizes():
    def sae(n, model="gemma-3-270m", layer=6):
        cfg = SAEConfig(d_in=D, n_features=n, architecture="topk", k=2, model_name=model, layer=layer)
        return SAE(cfg, torch.Generator().manual_seed(n))

    with pytest.raises(SAEMismatchError, match="layer 9.*layer 6"):
        SAEFamily([sae(4), sae(8, layer=9)])
    with pytest.raises(SAEMismatchError, match="'gpt2'.*one model"):
        SAEFamily([sae(4), sae(8, model="gpt2")])
    with pytest.raises(ValueError, match="more than once"):
        SAEFamily([sae(4), sae(4)])
    with pytest.raises(ValueError, match="repeats"):
        train_family(_data(), [4, 4], **SMALL)
    with pytest.raises(ValueError, match="not a whole number"):
        train_family(_data(), [4, 2.5], **SMALL)
    with pytest.raises(ValueError, match="is empty"):
        sweep(_data(), [4], [], **SMALL)


def test_a_diverging_member_is_named():
    with pytest.raises(FloatingPointError, match="Training the 8-feature SAE"):
        train_family(_data(), [8], cache=False, lr=1e6, arch="relu", l1=0.0, grad_clip=0.0, **SMALL)


# -- scaling-law fits -----------------------------------------------------------------------------------------------


def test_power_law_fit_recovers_known_exponent_with_noise():
    rng = np.random.default_rng(0)
    x = np.logspace(10, 16, 25)
    y = 7.0 * x**-0.23 * np.exp(rng.normal(0, 0.05, len(x)))
    law = fit_power_law(x, y, rng=np.random.default_rng(1))
    assert abs(law.exponent + 0.23) < 3 * law.exponent_stderr < 0.02
    lo, hi = law.exponent_interval
    assert lo < -0.23 < hi and hi - lo < 0.04
    assert law.r_squared > 0.9 and np.allclose(law(x), 7.0 * x**-0.23, rtol=0.2)


def test_scaling_fit_recovers_compute_optimal_exponents_of_a_known_loss():
    """L(F, S) = F^-a + 2 S^-b with FLOPs C = 6 F S: the compute-optimal F grows as C^(b/(a+b)), S as
    C^(a/(a+b)) and the loss falls as C^(-ab/(a+b)). Runs sample isoFLOP profiles (sizes 10x either side of the
    optimum at each budget) with 1% noise on the loss."""
    a, b = 0.5, 0.3
    rng = np.random.default_rng(0)
    runs = []
    for c in np.logspace(6, 16, 21):
        best = (a / (b * 2) * (c / 6) ** b) ** (1 / (a + b))  # argmin over F of F^-a + 2 (c / 6F)^-b
        for f in best * np.logspace(-1, 1, 21):
            s = c / (6 * f)
            runs.append(
                {"n_features": f, "n_steps": s, "flops": c, "loss": (f**-a + 2 * s**-b) * rng.lognormal(0, 0.01)}
            )
    fit = fit_scaling_laws(runs, n_bootstrap=200)
    assert fit.n_features.exponent == pytest.approx(b / (a + b), abs=0.05)
    assert fit.n_steps.exponent == pytest.approx(a / (a + b), abs=0.05)
    assert fit.loss.exponent == pytest.approx(-a * b / (a + b), abs=0.03)
    assert all(p["flops"] < q["flops"] and p["loss"] > q["loss"] for p, q in zip(fit.frontier, fit.frontier[1:]))
    assert "compute-optimal runs" in str(fit)


def test_scaling_fit_refuses_small_sweeps_and_non_finite_losses():
    runs = [{"n_features": 4 * 2**i, "n_steps": 100, "flops": 1e9 * 2**i, "loss": 0.5 / 1.1**i} for i in range(2)]
    with pytest.raises(ValueError, match="Only 2 of the 2 runs are compute-optimal.*at least 3"):
        fit_scaling_laws(runs)
    bad = [*runs, {"n_features": 32, "n_steps": 100, "flops": 4e9, "loss": float("nan")}]
    with pytest.raises(ValueError, match="run 2 .*loss=nan.*diverged"):
        fit_scaling_laws(bad)
    with pytest.raises(ValueError, match="needs"):
        fit_scaling_laws([{"n_features": 4, "loss": 0.3}])
    assert [r["flops"] for r in compute_optimal([*runs, {**runs[0], "flops": 3e9, "loss": 0.9}])] == [1e9, 2e9]


def test_scaling_fit_of_a_real_sweep():
    result = sweep(
        _data(), [4, 8, 16], [10, 20, 40], cache=False, batch_size=64, k=2, lr_warmup_steps=2, progress=False
    )
    fit = fit_scaling_laws(result, n_bootstrap=100)
    assert fit.loss.exponent < 0 and len(fit.frontier) >= 3 and len(fit.runs) == 9


# -- feature splitting ------------------------------------------------------------------------------------------------


def _planted(n_parents=8, n_children=4, d=64, spread=0.6, seed=0):
    """Unit parent directions, and children = parent + noise, renormalised: each parent splits into n_children."""
    g = torch.Generator().manual_seed(seed)
    parents = torch.nn.functional.normalize(torch.randn(n_parents, d, generator=g), dim=1)
    noise = torch.nn.functional.normalize(torch.randn(n_parents, n_children, d, generator=g), dim=2)
    children = torch.nn.functional.normalize(parents[:, None] + spread * noise, dim=2).reshape(-1, d)
    truth = torch.arange(n_parents).repeat_interleave(n_children)
    return parents, children, truth


def _sae_with_decoder(W_dec, layer=3):
    n, d = W_dec.shape
    sae = SAE(SAEConfig(d_in=d, n_features=n, architecture="topk", k=2, layer=layer))
    with torch.no_grad():
        sae.W_dec.copy_(W_dec)
    return sae


def test_match_features_recovers_a_planted_hierarchy():
    parents, children, truth = _planted()
    g = torch.Generator().manual_seed(1)
    p_perm, c_perm = torch.randperm(len(parents), generator=g), torch.randperm(len(children), generator=g)
    noise = torch.nn.functional.normalize(torch.randn(64, 64, generator=g), dim=1)
    grandchildren = torch.nn.functional.normalize(children[c_perm].repeat_interleave(2, 0) + 0.4 * noise, dim=1)
    family = SAEFamily([_sae_with_decoder(children[c_perm]), _sae_with_decoder(parents[p_perm])])
    family = SAEFamily([*family.saes, _sae_with_decoder(grandchildren)])
    tree = match_features(family)
    assert tree.sizes == [8, 32, 64]
    where_parent = torch.argsort(p_perm)  # position of true parent i in the small SAE
    assert tree.parents[0].tolist() == where_parent[truth[c_perm]].tolist()
    assert (tree.split_counts(8) == 4).all()
    p0 = int(where_parent[0])
    kids = [c["feature"] for c in tree.children(8, p0)]
    assert sorted(truth[c_perm][kids].tolist()) == [0, 0, 0, 0]
    sub = tree.descendants(8, p0)
    assert sub[32] == sorted(kids) and len(sub[64]) == 8
    assert tree.ancestors(64, sub[64][0]) == {64: sub[64][0], 32: tree.parent(64, sub[64][0]), 8: p0}
    basis = torch.linalg.qr(parents.T).Q  # [64, 8]: the parents' span
    other = torch.randn(16, 64, generator=g)
    unrelated = SAEFamily([_sae_with_decoder(parents), _sae_with_decoder(other - other @ basis @ basis.T)])
    assert (match_features(unrelated).parents[0] == -1).all()  # orthogonal to every parent: no links
    with pytest.raises(ValueError, match="2\\+ sizes"):
        match_features(SAEFamily([_sae_with_decoder(parents)]))


def test_trained_family_splits_planted_parents_into_children():
    """Each token one planted child (random scale, little noise): a 6-feature SAE learns the 6 parents (their
    children's mean), a 24-feature one the children, and match_features links each learnt child to the learnt
    parent of its true parent."""
    parents, children, truth = _planted(n_parents=6, n_children=4, d=32, spread=0.8)
    g = torch.Generator().manual_seed(2)
    n = 8192
    which = torch.randint(0, len(children), (n,), generator=g)
    acts = children[which] * (1 + torch.rand(n, 1, generator=g)) + 0.02 * torch.randn(n, 32, generator=g)
    family = train_family(
        acts,
        [6, 24],
        cache=False,
        arch="relu",
        l1=0.3,
        lr=3e-3,
        lr_warmup_steps=10,
        n_steps=300,
        batch_size=256,
        progress=False,
    )
    tree = match_features(family)
    small = torch.from_numpy(_unit(family[6])) @ parents.T  # [6 learnt, 6 planted parents]
    large = torch.from_numpy(_unit(family[24])) @ children.T  # [24 learnt, 24 planted children]
    assert sorted(small.argmax(1).tolist()) == list(range(6)) and (small.max(1).values > 0.8).all()
    clean = large.max(1).values > 0.9  # learnt features that are a planted child
    assert clean.sum() >= 14
    linked = torch.from_numpy(tree.parents[0]).long()
    right = (linked >= 0) & (small.argmax(1)[linked.clamp(min=0)] == truth[large.argmax(1)])
    assert right[clean].all()


def _unit(sae):
    from saewidgets.analysis.splitting import unit_directions

    return unit_directions(sae)


def test_joint_geometry_maps_every_size_and_is_cached(tmp_path):
    parents, children, _ = _planted()
    family = SAEFamily([_sae_with_decoder(parents), _sae_with_decoder(children)])
    geo = joint_geometry(family, n_neighbors=5, cache_dir=tmp_path)
    assert geo.coords.shape == (40, 2) and np.isfinite(geo.coords).all()
    assert geo.sizes.tolist() == [8] * 8 + [32] * 32 and geo.features[8:].tolist() == list(range(32))
    assert geo.point(32, 3) == 11
    again = joint_geometry(family, n_neighbors=5, cache_dir=tmp_path)
    assert np.array_equal(again.coords, geo.coords)


def test_scaling_laws_figure_draws_runs_frontier_and_fits():
    from saewidgets.figures import scaling_laws

    runs = [
        {"n_features": f, "n_steps": s, "flops": 12.0 * 640 * f * s * 256, "loss": 0.9 * f**-0.2 * s**-0.1}
        for f in (512, 2048, 8192)
        for s in (100, 400, 1600)
    ]
    fit = fit_scaling_laws(runs, n_bootstrap=50)
    fig = scaling_laws(fit, widget=False)
    names = [trace.name for trace in fig.data]
    assert names[:3] == ["512 features", "2,048 features", "8,192 features"] and "compute-optimal" in names
    assert any(n.startswith("loss ~ C^") for n in names) and any(n.startswith("features ~ C^") for n in names)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


@pytest.mark.parametrize("call", ["train_family", "sweep"])
def test_a_stopped_family_keeps_only_checkpoints_and_resumes_to_the_same_saes(tiny_gemma, tmp_path, call):
    import threading

    from saewidgets.activations import harvest
    from saewidgets.cancel import Cancelled
    from saewidgets.progress import reporting
    from saewidgets.sae.checkpoint import CHECKPOINT_NAME

    acts = harvest(tiny_gemma, ["The bridge is red and the bay is grey."] * 40, layer=1, progress=False)
    held = harvest(tiny_gemma, ["Paris is the capital of France."] * 10, layer=1, progress=False)
    settings = dict(eval_activations=held, n_steps=12, batch_size=32, k=2, lr_warmup_steps=2, progress=False)

    def run(**kwargs):
        if call == "sweep":
            return sweep(acts, [8, 16], [6, 12], **settings, **kwargs).results
        return train_family(acts, [8, 16], **settings, **kwargs).results

    reference = run(cache=False)
    stop, reports = threading.Event(), []

    def stop_after_seven_steps(report):
        reports.append(report)
        if report.n >= 7:
            stop.set()

    with reporting(stop_after_seven_steps), pytest.raises(Cancelled, match="training"):
        run(cache_dir=tmp_path, cancel=stop)
    assert reports[0].unit == "step" and 7 <= reports[-1].n < reports[-1].total, "progress came through progress_bar"
    run_dirs = list(tmp_path.iterdir())
    assert run_dirs and not list(tmp_path.glob("*/result.json")), "no run is marked finished"
    assert all((d / CHECKPOINT_NAME).exists() for d in run_dirs), "every run kept its resumable checkpoint"
    resumed = run(cache_dir=tmp_path, cancel=threading.Event())
    assert resumed == reference  # weights (fingerprint), FLOPs and held-out metrics
