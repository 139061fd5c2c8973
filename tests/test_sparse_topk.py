"""The sparse TopK / BatchTopK training path gives the dense path's results (selection, loss, every gradient,
a few optimizer steps), and the benchmark harness runs."""

from __future__ import annotations

import copy

import pytest
import torch

from saewidgets.sae import SAE, SAEConfig, TrainConfig
from saewidgets.sae.architectures import training_step
from saewidgets.sae.sparse import select_batch_topk, select_topk, sparse_training_step

D_IN, N_FEATURES, K, N_TOKENS = 24, 192, 6, 48


def _sae(arch: str, dtype: torch.dtype = torch.float64) -> SAE:
    sae = SAE(SAEConfig(d_in=D_IN, n_features=N_FEATURES, architecture=arch, k=K), torch.Generator().manual_seed(1))
    with torch.no_grad():  # non-zero biases, so their gradients are exercised too
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(2))
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    return sae.to(dtype)


def _batch(dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    return 3 * torch.randn(N_TOKENS, D_IN, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _dead_mask(n_dead: int) -> torch.Tensor:
    dead = torch.zeros(N_FEATURES, dtype=torch.bool)
    dead[torch.randperm(N_FEATURES, generator=torch.Generator().manual_seed(4))[:n_dead]] = True
    return dead


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("n_dead", [0, 5, 150], ids=["no-dead", "few-dead", "many-dead"])
def test_sparse_step_matches_dense_loss_reconstruction_and_every_gradient(arch: str, n_dead: int) -> None:
    dense_sae, x, dead = _sae(arch), _batch(), _dead_mask(n_dead)
    sparse_sae = copy.deepcopy(dense_sae)
    tc = TrainConfig(n_steps=10, aux_k=12)
    dense = training_step(dense_sae, x, tc, 0, dead)
    sparse = sparse_training_step(sparse_sae, x, tc, 0, dead)
    dense.loss.backward()
    sparse.loss.backward()

    torch.testing.assert_close(sparse.loss, dense.loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sparse.x_hat, dense.x_hat, rtol=1e-12, atol=1e-12)
    assert sparse.terms == pytest.approx(dense.terms, rel=1e-12, abs=1e-12)
    assert sparse.l0 == dense.l0
    assert torch.equal(sparse.fired, dense.fired)
    for name, param in dense_sae.named_parameters():
        torch.testing.assert_close(
            dict(sparse_sae.named_parameters())[name].grad,
            param.grad,
            rtol=1e-10,
            atol=1e-12,
            msg=lambda m, name=name: f"gradient of {name}: {m}",
        )
    if arch == "batchtopk":
        torch.testing.assert_close(sparse_sae.threshold, dense_sae.threshold)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_a_few_float32_adam_steps_stay_within_float_tolerance_of_the_dense_path(arch: str) -> None:
    dense_sae = _sae(arch, torch.float32)
    sparse_sae = copy.deepcopy(dense_sae)
    tc, dead = TrainConfig(n_steps=5, aux_k=12), _dead_mask(20)
    for sae, step_fn in ((dense_sae, training_step), (sparse_sae, sparse_training_step)):
        optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)
        for step in range(tc.n_steps):
            optimizer.zero_grad()
            step_fn(sae, _batch(torch.float32, seed=step), tc, step, dead).loss.backward()
            optimizer.step()
    for name, param in dense_sae.named_parameters():
        torch.testing.assert_close(dict(sparse_sae.named_parameters())[name], param, rtol=1e-4, atol=1e-5)


def test_batch_topk_selection_is_exact_when_one_token_holds_more_than_its_candidates() -> None:
    pre = torch.randn(16, 256, generator=torch.Generator().manual_seed(5))
    pre[3] += 100.0  # token 3 owns the batch's top 16 * 4 entries: more than its 4k candidates
    pairs = select_batch_topk(pre, 4)
    expected = pre.flatten().topk(16 * 4).indices.sort().values
    assert torch.equal((pairs.rows * 256 + pairs.cols).sort().values, expected)
    assert bool((pairs.rows.diff() >= 0).all())  # grouped by token
    assert int((pairs.rows == 3).sum()) == 16 * 4


def test_topk_selection_keeps_k_latents_per_token_in_token_order() -> None:
    pre = torch.randn(10, 64, generator=torch.Generator().manual_seed(6))
    pairs = select_topk(pre, 5)
    assert torch.equal(pairs.rows, torch.arange(10).repeat_interleave(5))
    assert torch.equal(pairs.cols.view(10, 5).sort(-1).values, pre.topk(5, dim=-1).indices.sort(-1).values)


def test_sparse_step_refuses_architectures_it_does_not_handle() -> None:
    sae = SAE(SAEConfig(d_in=D_IN, n_features=N_FEATURES, architecture="relu"))
    with pytest.raises(ValueError, match="topk and batchtopk"):
        sparse_training_step(sae, _batch(torch.float32), TrainConfig(n_steps=1), 0, _dead_mask(0))


def test_benchmark_harness_runs_the_training_comparison_and_writes_its_table_and_json(tmp_path) -> None:
    import json

    from benchmarks.bench_train import TrainSettings, measure
    from benchmarks.run import format_table, write_json
    from benchmarks.timing import machine

    rows = measure(TrainSettings(d_in=16, n_features=64, k=4, batch=32, steps=1, repeats=1))
    assert rows and all(r.ours > 0 and r.reference > 0 for r in rows)
    assert "SAELens" in format_table(rows)
    write_json(tmp_path / "m.json", machine(), "smoke", rows, {}, {"train": 0.0})
    saved = json.loads((tmp_path / "m.json").read_text())
    assert [r["figure"] for r in saved["rows"]] == [r.figure for r in rows]


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_step_does_only_the_encoder_forward_as_a_dense_matrix_product(arch: str) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    n_tokens, d_in, n_features = 256, 32, 1024
    x = torch.randn(n_tokens, d_in, generator=torch.Generator().manual_seed(7))
    encoder_forward = 2 * n_tokens * d_in * n_features
    dead = torch.zeros(n_features, dtype=torch.bool)
    flops = {}
    for name, step_fn in (("sparse", sparse_training_step), ("dense", training_step)):
        sae = SAE(SAEConfig(d_in=d_in, n_features=n_features, architecture=arch, k=8))
        with FlopCounterMode(display=False) as counter:
            step_fn(sae, x, TrainConfig(n_steps=1), 0, dead).loss.backward()
        flops[name] = counter.get_total_flops()
    assert flops["sparse"] <= 1.05 * encoder_forward  # + the [d, F] @ [F] bias term
    assert flops["dense"] >= 2.9 * encoder_forward
