"""Ctrl-C during training: the first SIGINT stops the run (or a family's or sweep's runs) where a step ends, so its
checkpoint is one an uninterrupted run passes through (and resumes to the same SAE); under torchrun every rank stops
at the same step instead of one leaving the others in a collective; the demo does not cache a stopped run's SAE."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from saewidgets.cancel import DeferredInterrupt
from saewidgets.sae import load_sae, train_sae
from saewidgets.sae import train as train_module
from saewidgets.sae.checkpoint import load_checkpoint
from saewidgets.store import ActivationStore

SETTINGS = dict(arch="topk", n_features=64, k=4, n_steps=12, batch_size=128, lr=1e-3, seed=2, progress=False)


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler for the test (what a script, a torchrun rank or a notebook cell runs under)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_the_first_ctrl_c_is_held_for_the_loop_and_a_second_raises(default_sigint, capsys):
    with DeferredInterrupt("stopping soon") as ctrl_c:
        os.kill(os.getpid(), signal.SIGINT)
        assert ctrl_c.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the handler is put back"
    assert "stopping soon" in capsys.readouterr().err


def test_deferral_leaves_other_threads_and_other_handlers_alone(default_sigint):
    seen = []

    def custom(signum, frame):
        seen.append(signum)

    signal.signal(signal.SIGINT, custom)
    with DeferredInterrupt() as ctrl_c:
        os.kill(os.getpid(), signal.SIGINT)
    assert seen == [signal.SIGINT] and not ctrl_c.requested and signal.getsignal(signal.SIGINT) is custom

    signal.signal(signal.SIGINT, signal.default_int_handler)
    installed = []

    def off_main_thread():
        with DeferredInterrupt():
            installed.append(signal.getsignal(signal.SIGINT) is not signal.default_int_handler)

    worker = threading.Thread(target=off_main_thread)
    worker.start()
    worker.join()
    assert installed == [False]


def ctrl_c_after_optimizer_step(n: int):
    """A stand-in for the trainers' `_adam` whose optimizers send this process SIGINT right after their ``n``-th
    step (counted over every optimizer it makes): after Adam has moved the weights, before the step is counted, so
    a KeyboardInterrupt there would checkpoint step ``n - 1`` with step ``n``'s weights."""
    adam, steps = train_module._adam, []

    def interrupted_adam(params, lr):
        optimizer = adam(params, lr)
        step = optimizer.step

        def step_then_ctrl_c(*args, **kwargs):
            result = step(*args, **kwargs)
            steps.append(1)
            if len(steps) == n:
                os.kill(os.getpid(), signal.SIGINT)
            return result

        optimizer.step = step_then_ctrl_c
        return optimizer

    return interrupted_adam


def test_ctrl_c_inside_the_optimizer_step_stops_after_it_and_resumes_to_the_same_sae(
    default_sigint, tmp_path, monkeypatch
):
    from test_sae_train import planted_data

    x, _ = planted_data(n_planted=32, d=16, n_tokens=2000)
    straight = train_sae(x, **SETTINGS)
    adam = train_module._adam
    monkeypatch.setattr(train_module, "_adam", ctrl_c_after_optimizer_step(6))
    with pytest.warns(UserWarning, match="interrupted after step 6 of 12"):
        half = train_sae(x, checkpoint_dir=tmp_path, **SETTINGS)
    assert half.cfg.provenance["steps"] == 6 and load_checkpoint(tmp_path)["step"] == 6
    monkeypatch.setattr(train_module, "_adam", adam)
    resumed = train_sae(x, checkpoint_dir=tmp_path, **SETTINGS)
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


def test_ctrl_c_inside_a_sweeps_step_checkpoints_every_run_where_its_step_ended(default_sigint, tmp_path, monkeypatch):
    from saewidgets.sae.family import sweep
    from test_scaling import SMALL, _data

    acts = _data()
    reference = sweep(acts, [4, 8], [10, 20], cache=False, checkpoint_every=5, **SMALL)
    adam = train_module._adam
    monkeypatch.setattr(train_module, "_adam", ctrl_c_after_optimizer_step(25))  # inside the 7th step of 4 runs
    with pytest.raises(KeyboardInterrupt):
        sweep(acts, [4, 8], [10, 20], cache_dir=tmp_path, checkpoint_every=5, **SMALL)
    monkeypatch.setattr(train_module, "_adam", adam)
    resumed = sweep(acts, [4, 8], [10, 20], cache_dir=tmp_path, checkpoint_every=5, **SMALL)
    assert [r.fingerprint for r in resumed.results] == [r.fingerprint for r in reference.results]


@pytest.mark.parametrize("parallel", ["data", "latents"])
def test_ctrl_c_on_one_torchrun_rank_stops_every_rank_at_the_same_step(parallel, tmp_path):
    """Data-parallel and latent-sharded: both ranks stop after step 6 and rank 0 checkpoints there (a sharded run
    gathers every rank's latents for it, so it could not save on Ctrl-C before the ranks agreed where to stop)."""
    from test_distributed import TRAIN, run_worker

    stopped, store_dir, out = run_worker(tmp_path, "SIGINT", parallel)  # rank 1 alone, as torchrun's signal
    # reaches the ranks at different moments
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "rank 0 stopped at step 6" in stopped.stdout and "rank 1 stopped at step 6" in stopped.stdout
    assert load_checkpoint(out / "checkpoints")["step"] == 6, "rank 0 checkpointed the step where both stopped"

    store = ActivationStore(store_dir)
    resumed = train_sae(store.subset(slice(None)), checkpoint_dir=out / "checkpoints", progress=False, **TRAIN)
    single = train_sae(store.subset(slice(None)), progress=False, **TRAIN)
    assert load_sae(out / "sae").cfg.provenance["steps"] == 6
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, atol=2e-5, rtol=1e-4, msg=name)


def test_a_demo_stopped_in_training_caches_no_sae_and_resumes_from_its_checkpoint(
    default_sigint, tmp_path, monkeypatch
):
    from saewidgets.demo import pipeline
    from saewidgets.models import tiny_model
    from test_demo_run import TINY as settings

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path))
    model = tiny_model("gpt2", seed=3)
    folder = pipeline.cache_dir("demo", settings.key())
    advance = train_module.Trainer.advance

    def ctrl_c_at_step_10(self, batch=None):
        if self.step == 10:
            os.kill(os.getpid(), signal.SIGINT)
        return advance(self, batch)

    monkeypatch.setattr(train_module.Trainer, "advance", ctrl_c_at_step_10)
    with pytest.warns(UserWarning, match="interrupted after step 11 of 50"), pytest.raises(KeyboardInterrupt):
        pipeline.demo_artifacts(settings, model=model, progress=False)
    assert not (folder / "sae").exists(), "the SAE of a stopped run was cached as the demo's"
    assert load_checkpoint(folder / "checkpoints")["step"] == 11

    monkeypatch.setattr(train_module.Trainer, "advance", advance)
    assert pipeline.demo_artifacts(settings, model=model, progress=False).sae.cfg.provenance["steps"] == 50


def _start_distributed_training(out: Path) -> subprocess.Popen:
    """``saewidgets train --distributed 2`` on a tiny model, endless, in a process group of its own; returns once
    its first checkpoint is written."""
    command = [str(Path(sys.executable).with_name("saewidgets")), "train", "--distributed", "2", "--model"]
    command += ["tiny-gpt2", "--corpus", "demo", "--layer", "1", "--n-tokens", "4000", "--out", str(out), "--arch"]
    command += ["topk", "--n-features", "64", "--k", "8", "--batch-size", "64", "--n-steps", "1000000"]
    job = subprocess.Popen(
        command + ["--checkpoint-every", "20"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.poll() is None, "training ended before it could be interrupted"
    return job


def _stop(job: subprocess.Popen, out: Path, send: Callable[[], None]) -> str:
    """``send`` the signal, wait for the command to return; asserts that no rank outlives it. Returns its output."""
    try:
        send()
        output, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        ranks = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
        subprocess.run(["pkill", "-KILL", "-f", str(out)])  # torchrun and ranks of a failed test, in their sessions
    assert not ranks, f"ranks still running after the command returned:\n{output[-3000:]}"
    return output


@pytest.mark.parametrize("to", ["terminal", "command"])
def test_ctrl_c_stops_saewidgets_train_distributed_and_every_rank(to, tmp_path):
    """As a user's Ctrl-C reaches a foreground job (SIGINT to the whole process group of ``saewidgets train
    --distributed 2``), and as ``kill -INT`` reaches the command alone: the command passes it to torchrun, which
    passes it to the ranks. The command returns once every rank has checkpointed, saved the SAE so far and ended.
    Before, at the terminal, the ranks stopped at different steps and hung in a collective, with no SAE saved, after
    the command had returned; and a ``kill -INT`` of the command alone never reached torchrun, so it kept training."""
    out = tmp_path / "run"
    job = _start_distributed_training(out)
    if to == "terminal":
        output = _stop(job, out, lambda: os.killpg(job.pid, signal.SIGINT))
    else:
        output = _stop(job, out, lambda: os.kill(job.pid, signal.SIGINT))
    assert job.returncode == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]  # torchrun's SignalException, after the ranks' last words
    step = load_checkpoint(out / "checkpoints")["step"]
    assert f"interrupted after step {step} of 1000000" in output, output[-3000:]
    assert load_sae(out / "sae").cfg.provenance["steps"] == step


def test_a_second_ctrl_c_ends_saewidgets_train_distributed_at_once(tmp_path):
    """Two SIGINTs to the command: torchrun ends the ranks without waiting for their step (it terminates them), and
    the command returns after them, with no traceback."""
    out = tmp_path / "run"
    job = _start_distributed_training(out)

    def twice() -> None:
        os.kill(job.pid, signal.SIGINT)
        time.sleep(0.3)
        os.kill(job.pid, signal.SIGINT)

    output = _stop(job, out, twice)
    assert job.returncode == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def test_sigterm_to_saewidgets_train_distributed_ends_every_rank(tmp_path):
    """``kill`` (SIGTERM) of the command, as a job scheduler or a closing terminal sends it: torchrun gets it and
    terminates the ranks, and the command returns after them. Before, the command died at once and left torchrun
    and its ranks training with no parent."""
    out = tmp_path / "run"
    job = _start_distributed_training(out)
    output = _stop(job, out, lambda: os.kill(job.pid, signal.SIGTERM))
    assert job.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
