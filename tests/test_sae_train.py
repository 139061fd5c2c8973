"""Training: planted dictionaries are recovered by every architecture; checkpoints resume exactly (in a new
process); Ctrl-C keeps the work; bad numbers are reported where they are; bf16/fp16 runs stay near fp32."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from saewidgets.sae import SAE, SAEConfig, TrainConfig, evaluate_sae, load_sae, train_sae
from saewidgets.sae.checkpoint import CHECKPOINT_NAME, BatchOrder, load_checkpoint


def planted_data(n_planted: int = 256, d: int = 64, n_tokens: int = 30_000, p: float = 0.02, seed: int = 0):
    """Tokens that are sparse non-negative combinations of ``n_planted`` unit-norm random directions."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_planted, d, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    active = torch.rand(n_tokens, n_planted, generator=g) < p
    magnitudes = torch.rand(n_tokens, n_planted, generator=g) * 2 + 0.5
    return (active * magnitudes) @ directions + 0.3, directions


def fraction_recovered(sae: SAE, directions: torch.Tensor, min_cos: float = 0.9) -> float:
    W = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    return float(((directions @ W.T).max(dim=1).values > min_cos).float().mean())


COMMON = dict(n_features=512, batch_size=512, lr=3e-3, progress=False, seed=0)
ARCH_SETTINGS = {
    "topk": dict(k=8, n_steps=500, dead_after_tokens=20_000),
    "batchtopk": dict(k=8, n_steps=500, dead_after_tokens=20_000),
    "relu": dict(l1=1.0, n_steps=500),
    "jumprelu": dict(n_steps=600),  # the default L0 coefficient, bandwidth and initial threshold
}


@pytest.mark.parametrize("arch", list(ARCH_SETTINGS))
def test_every_architecture_recovers_a_planted_dictionary(arch):
    x, directions = planted_data()
    sae = train_sae(x, arch=arch, **COMMON, **ARCH_SETTINGS[arch])
    assert fraction_recovered(sae, directions) >= 0.9
    # Sparse: about the 5 planted features per token, not a dense code.
    with torch.no_grad():
        l0 = float((sae.encode(x[:2000]) != 0).sum(-1).float().mean())
    assert l0 < 30, l0


def test_topk_sparse_decoder_equals_dense_decoder():
    cfg = SAEConfig(d_in=32, n_features=200, architecture="topk", k=7, input_scale=0.5)
    sae = SAE(cfg, torch.Generator().manual_seed(1))
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        sae.b_dec.normal_()
        dense = sae.decode(sae.encode(x))
        code = sae.encode_topk(x)
        assert code.values.shape == (3, 5, 7)
        torch.testing.assert_close(sae.decode_sparse(*code), dense, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(x), dense, rtol=1e-5, atol=1e-5)


def test_batch_order_is_a_pure_function_of_seed_and_step():
    a, b = BatchOrder(1000, 300, seed=3), BatchOrder(1000, 300, seed=3)
    steps = [b.rows(s) for s in range(7)]  # crosses epoch boundaries
    assert all(np.array_equal(a.rows(s), steps[s]) for s in reversed(range(7)))
    assert sorted(np.concatenate(steps[:3] + [steps[3][:100]]).tolist()) == list(range(1000))


def _interrupt_at(step_to_stop: int):
    def callback(step, info):
        if step == step_to_stop:
            raise KeyboardInterrupt

    return callback


RESUME_SETTINGS = dict(
    arch="topk",
    n_features=128,
    k=4,
    n_steps=40,
    batch_size=256,
    lr=1e-3,
    seed=5,
    dead_after_tokens=2048,
    progress=False,
)


def test_resume_in_a_new_process_equals_training_straight_through(tmp_path):
    x, _ = planted_data(n_planted=64, d=16, n_tokens=3000)
    np.save(tmp_path / "x.npy", x.numpy())
    straight = train_sae(x, **RESUME_SETTINGS)

    with pytest.warns(UserWarning, match="interrupted after step 20"):
        half = train_sae(x, checkpoint_dir=tmp_path / "ckpt", callback=_interrupt_at(20), **RESUME_SETTINGS)
    assert load_checkpoint(tmp_path / "ckpt")["step"] == 20
    assert not torch.equal(half.W_dec, straight.W_dec)

    script = textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads({torch.get_num_threads()})
        from saewidgets.sae import train_sae, save_sae
        x = torch.from_numpy(np.load({str(tmp_path / "x.npy")!r}))
        sae = train_sae(x, checkpoint_dir={str(tmp_path / "ckpt")!r}, **{RESUME_SETTINGS!r})
        save_sae(sae, {str(tmp_path / "resumed")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    resumed = load_sae(tmp_path / "resumed")
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    assert resumed.cfg.provenance["steps"] == 40


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    x, _ = planted_data(n_planted=64, d=16, n_tokens=3000)
    with pytest.warns(UserWarning):
        train_sae(x, checkpoint_dir=tmp_path, callback=_interrupt_at(5), **RESUME_SETTINGS)
    with pytest.raises(ValueError, match="different run.*seed: checkpoint 5, now 6"):
        train_sae(x, checkpoint_dir=tmp_path, **{**RESUME_SETTINGS, "seed": 6})
    with pytest.raises(ValueError, match="different run.*data"):
        train_sae(x[:2000], checkpoint_dir=tmp_path, **RESUME_SETTINGS)


def test_ctrl_c_saves_a_checkpoint_and_returns_the_sae_so_far(tmp_path):
    x, _ = planted_data(n_planted=64, d=16, n_tokens=3000)
    with pytest.warns(UserWarning, match=r"interrupted after step 8 of 40.*checkpoint"):
        sae = train_sae(x, checkpoint_dir=tmp_path, callback=_interrupt_at(8), **RESUME_SETTINGS)
    assert isinstance(sae, SAE) and not sae.training
    assert sae.cfg.provenance["steps"] == 8
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["step"] == 8
    assert torch.equal(state["sae_state"]["W_dec"], sae.W_dec)
    assert not list(tmp_path.glob(".*.tmp")), "a temporary checkpoint file was left behind"


def test_checkpoints_are_written_every_n_steps(tmp_path):
    x, _ = planted_data(n_planted=64, d=16, n_tokens=3000)
    seen = []
    train_sae(
        x,
        checkpoint_dir=tmp_path,
        checkpoint_every=15,
        callback=lambda step, info: seen.append((tmp_path / CHECKPOINT_NAME).exists()),
        **RESUME_SETTINGS,
    )
    assert seen[:15] == [False] * 15 and all(seen[15:])
    assert load_checkpoint(tmp_path)["step"] == 30  # the last multiple of 15 (no checkpoint after the final step)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_activations_are_reported_by_row_and_column(bad):
    x = torch.randn(500, 16)
    x[123, 7] = bad
    with pytest.raises(FloatingPointError, match=r"row 123, column 7"):
        train_sae(x, n_features=32, k=4, n_steps=2, progress=False)


def test_a_diverging_loss_stops_at_its_step_and_suggests_a_lower_lr():
    x, _ = planted_data(n_planted=64, d=16, n_tokens=3000)
    with pytest.raises(FloatingPointError, match=r"at step \d+.*Lower the learning rate"):
        train_sae(
            x,
            arch="relu",
            n_features=64,
            n_steps=50,
            batch_size=256,
            lr=1e30,
            lr_warmup_steps=1,
            grad_clip=0,
            progress=False,
        )


def test_training_records_where_the_activations_came_from():
    class FakeActivations:  # duck-typed like saewidgets.activations.Activations
        acts = np.random.default_rng(0).normal(size=(600, 16)).astype(np.float32)
        model_name, layer, site = "tiny-gemma", 1, "model.layers.1"

    sae = train_sae(FakeActivations(), n_features=32, k=4, n_steps=3, batch_size=128, progress=False)
    assert (sae.cfg.model_name, sae.cfg.layer, sae.cfg.site) == ("tiny-gemma", 1, "model.layers.1")
    assert {"tokens", "steps", "lr", "seed", "date", "saewidgets_version"} <= set(sae.cfg.provenance)
    assert sae.cfg.provenance["tokens"] == 3 * 128


def test_input_scale_is_inside_the_sae():
    """Callers pass raw residuals: scaling the data by 100 gives the same codes up to that factor."""
    x, _ = planted_data(n_planted=64, d=16, n_tokens=3000)
    small = train_sae(x, n_features=64, k=4, n_steps=20, batch_size=256, progress=False)
    big = train_sae(x * 100, n_features=64, k=4, n_steps=20, batch_size=256, progress=False)
    assert big.cfg.input_scale == pytest.approx(small.cfg.input_scale / 100, rel=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(big(x[:50] * 100) / 100, small(x[:50]), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "arch, options", [("topk", dict(k=4)), ("topk", dict(k=4, sparse_kernels=False)), ("relu", {})]
)
def test_training_steps_bypass_nnsights_patched_tensor_backward(monkeypatch, arch, options):
    """Importing nnsight replaces ``torch.Tensor.backward`` with a version that parses the caller's source file for a
    ``with loss.backward():`` block before calling torch's (an AST parse that can race another thread's trace, and
    fails where sources are not shipped). Training steps call ``torch.autograd.backward`` and never reach it."""
    from nnsight.intervention import backward as nnsight_backward

    assert torch.Tensor.backward is nnsight_backward._backward  # the patch this test is about is in place

    def refuse(*args, **kwargs):
        raise AssertionError("a training step called Tensor.backward (nnsight's patched version)")

    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    x, _ = planted_data(n_planted=32, d=16, n_tokens=2_000)
    sae = train_sae(x, arch, n_features=32, n_steps=5, batch_size=128, progress=False, seed=0, **options)
    assert sae.cfg.provenance["steps"] == 5 and torch.isfinite(sae.W_dec).all()


PRECISION_SETTINGS = dict(
    n_features=128, k=8, n_steps=60, batch_size=256, lr=3e-3, lr_warmup_steps=5, progress=False, seed=0
)


def _held_out_metrics(sae: SAE, x: torch.Tensor) -> tuple[float, float, float]:
    m = evaluate_sae(sae, x, check_provenance=False)
    return m.fve, m.l0, m.dead_fraction


@pytest.mark.parametrize(
    "arch, precision, options",
    [
        ("topk", "bf16", {}),  # the sparse step: its encoder product in bf16
        ("topk", "bf16", {"sparse_kernels": False}),
        ("batchtopk", "bf16", {}),
        ("relu", "bf16", {"l1": 1.0}),
        ("jumprelu", "bf16", {}),
        ("topk", "fp16", {}),  # fp16 with the loss scaler
        ("relu", "fp16", {"l1": 1.0}),
    ],
)
def test_mixed_precision_trains_within_tolerance_of_fp32(arch, precision, options):
    """A bf16/fp16 run ends within FVE 0.01, L0 3% and dead fraction 0.02 of the fp32 run (held-out tokens); its
    weights stay float32 and differ from fp32's (the products really ran in 16 bits)."""
    x, _ = planted_data(n_planted=128, d=32, n_tokens=12_000)
    train, held_out = x[:10_000], x[10_000:]
    fp32 = train_sae(train, arch, **PRECISION_SETTINGS, **options)
    low = train_sae(train, arch, **PRECISION_SETTINGS, **options, precision=precision)
    assert all(p.dtype == torch.float32 for p in low.parameters())
    assert not torch.equal(low.W_enc, fp32.W_enc), "autocast changed nothing: the step ran in fp32"
    (fve32, l0_32, dead32), (fve, l0, dead) = _held_out_metrics(fp32, held_out), _held_out_metrics(low, held_out)
    assert fve32 > 0.3, "the fp32 run learned something to compare against"
    assert abs(fve - fve32) <= 0.01 and abs(l0 - l0_32) <= 0.03 * l0_32 and abs(dead - dead32) <= 0.02, (
        (fve, l0, dead),
        (fve32, l0_32, dead32),
    )


@pytest.mark.parametrize("bad", ["float16", "bfloat16", torch.bfloat16, None, "BF16"])
def test_a_precision_the_trainer_lacks_is_refused_naming_the_choices(bad):
    with pytest.raises(ValueError, match=r"precision=.* is not a precision: pass one of 'fp32', 'bf16', 'fp16'"):
        TrainConfig(precision=bad)


def test_fp16_resume_keeps_the_loss_scale(tmp_path):
    x, _ = planted_data(n_planted=64, d=16, n_tokens=3000)
    settings = {**RESUME_SETTINGS, "precision": "fp16"}
    straight = train_sae(x, **settings)
    with pytest.warns(UserWarning, match="interrupted after step 20"):
        train_sae(x, checkpoint_dir=tmp_path, callback=_interrupt_at(20), **settings)
    assert "grad_scaler" in load_checkpoint(tmp_path)
    resumed = train_sae(x, checkpoint_dir=tmp_path, **settings)
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda_stays_near_fp32(precision):
    x, _ = planted_data(n_planted=128, d=32, n_tokens=12_000)
    fp32 = train_sae(x[:10_000], "topk", **PRECISION_SETTINGS, device="cuda")
    low = train_sae(x[:10_000], "topk", **PRECISION_SETTINGS, device="cuda", precision=precision)
    assert abs(_held_out_metrics(low, x[10_000:])[0] - _held_out_metrics(fp32, x[10_000:])[0]) <= 0.01


def test_family_runs_in_another_precision_are_cached_apart_and_fp32_keeps_its_key():
    from dataclasses import replace

    from saewidgets.sae.data import as_rows
    from saewidgets.sae.family import _run_key

    rows = as_rows(planted_data(n_planted=16, d=8, n_tokens=200)[0])
    fp32 = TrainConfig()
    assert _run_key(rows, replace(fp32, precision="bf16"), None) != _run_key(rows, fp32, None)
