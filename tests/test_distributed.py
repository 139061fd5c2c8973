"""Data-parallel training: a 2-process torchrun (gloo, CPU, tiny model) that loses a rank resumes, and the result
equals single-process training on the same rows."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from saewidgets.sae import load_sae, train_sae
from saewidgets.sae.checkpoint import load_checkpoint
from saewidgets.store import ActivationStore, harvest_to_store

TEXTS = [
    "The Golden Gate Bridge is a suspension bridge in San Francisco, painted international orange.",
    "Paris is the capital of France, and the Eiffel Tower stands on the Champ de Mars.",
    "I went for a walk and saw the fog roll over the bay, and then the ferries crossed to Sausalito.",
    "def add(a, b):\n    return a + b",
    "Le pont est rouge. Die Brücke ist rot. El puente es rojo.",
    "She kept the secret, but honesty mattered more to her than anything.",
] * 4
TRAIN = dict(arch="topk", n_features=64, k=8, batch_size=32, n_steps=12, seed=0)
CLI_TRAIN = ["--arch", "topk", "--n-features", "64", "--k", "8", "--batch-size", "32", "--n-steps", "12"]

# Harvests the store across both ranks, then trains; rank 1 sends itself SIGNAL after step 6 (SIGKILL: it dies;
# SIGINT: Ctrl-C). A rank that returns prints the step it stopped at, and rank 0 saves the SAE.
WORKER = """
import os, signal, sys
from saewidgets.corpus import load_corpus
from saewidgets.models import tiny_model
from saewidgets.sae import save_sae, train_sae
from saewidgets.sae.distributed import init_process_group
from saewidgets.store import harvest_to_store

rank, world, device = init_process_group()
corpus, store_dir, out = sys.argv[1:]
store = harvest_to_store(tiny_model("gpt2"), load_corpus(corpus), store_dir, 1, shard_tokens=100, progress=False)

def signal_rank_1(step, info):
    if rank == 1 and step == 6:
        os.kill(os.getpid(), signal.{signal})

sae = train_sae(store, parallel={parallel!r}, checkpoint_dir=out + "/checkpoints", checkpoint_every=4,
                callback=signal_rank_1, progress=False, **{train})
print(f"rank {{rank}} stopped at step {{sae.cfg.provenance['steps']}}")
if rank == 0:
    save_sae(sae, out + "/sae")
"""


def run_worker(tmp_path, signal: str, parallel: str = "data") -> tuple[subprocess.CompletedProcess, Path, Path]:
    """`WORKER` on two torchrun ranks over `TEXTS`: (the finished job, its store folder, its run folder)."""
    corpus, store_dir, out = tmp_path / "corpus.txt", tmp_path / "store", tmp_path / "run"
    corpus.write_text("\n\n".join(TEXTS))
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(WORKER.format(train=TRAIN, signal=signal, parallel=parallel)))
    return torchrun(str(worker), str(corpus), str(store_dir), str(out)), store_dir, out


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


def test_torchrun_resumes_after_a_rank_is_killed_and_equals_single_process_training(tmp_path):
    killed, store_dir, out = run_worker(tmp_path, "SIGKILL")
    assert killed.returncode != 0, "the job fails when a rank dies"
    assert load_checkpoint(out / "checkpoints")["step"] == 4, "rank 0 wrote the last checkpoint before the kill"
    store = ActivationStore(store_dir)
    assert len(store.shard_sizes()) >= 4, "both ranks harvested shards of one store"

    resumed = torchrun(
        "-m",
        "saewidgets.training_run",
        "--model",
        "tiny-gpt2",
        "--corpus",
        str(tmp_path / "corpus.txt"),
        "--layer",
        "1",
        "--store",
        str(store_dir),
        "--shard-tokens",
        "100",
        "--out",
        str(out),
        "--held-out-fraction",
        "0",
        "--checkpoint-every",
        "4",
        *CLI_TRAIN,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    distributed = load_sae(out / "sae")
    assert distributed.cfg.provenance["data_parallel_ranks"] == 2
    single = train_sae(store.subset(slice(None)), progress=False, **TRAIN)
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(distributed.state_dict()[name], tensor, atol=2e-5, rtol=1e-4, msg=name)


def test_distributed_training_outside_a_process_group_says_how_to_launch(tiny_gpt2, tmp_path):
    from saewidgets.sae.distributed import train_sae_distributed

    store = harvest_to_store(tiny_gpt2, TEXTS[:6], tmp_path / "store", layer=1, progress=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        train_sae_distributed(store, **TRAIN)


def test_entry_point_without_torchrun_trains_in_one_process_like_train_sae(tmp_path, monkeypatch):
    from saewidgets.sae.distributed import _free_port
    from saewidgets.training_run import main

    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)  # what init_process_group would set, restored after the test
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(TEXTS[:8]))
    main(
        [
            "--model",
            "tiny-gpt2",
            "--corpus",
            str(corpus),
            "--layer",
            "1",
            "--store",
            str(tmp_path / "store"),
            "--out",
            str(tmp_path / "run"),
            "--checkpoint-every",
            "5",
            *CLI_TRAIN,
        ]
    )
    store = ActivationStore(tmp_path / "store")
    single = train_sae(store.subset(slice(None)), progress=False, **TRAIN)
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(load_sae(tmp_path / "run" / "sae").state_dict()[name], tensor, atol=2e-5, rtol=1e-4)


# At exit, after init_process_group's handler destroyed the group (atexit runs last in, first out), it reports gloo's
# threads still running: a group left for interpreter teardown aborted finished runs now and then.
SHARDED_WORKER = """
import atexit, sys
from saewidgets.sae.distributed import _gloo_threads, init_process_group
from saewidgets.sae.sharded import train_sae_latent_sharded
from saewidgets.store import ActivationStore

def report_gloo_threads():
    # One write per rank (a pipe write this short is atomic): print() writes its parts separately, and the two
    # ranks' lines interleaved once in CI ("gloo threads at exit: gloo threads at exit: [][]").
    sys.stdout.write("gloo threads at exit: " + str(sorted(_gloo_threads())) + "\\n")
    sys.stdout.flush()

atexit.register(report_gloo_threads)
init_process_group()
train_sae_latent_sharded(ActivationStore(sys.argv[1]), checkpoint_dir=sys.argv[2], checkpoint_every=6, **{train})
"""
# Wide and very sparse, and latents count as dead after one step without firing, so AuxK is at work.
SHARDED = dict(n_features=256, k=2, batch_size=32, n_steps=12, seed=0, dead_after_tokens=32)


def test_latent_sharded_topk_across_two_ranks_equals_single_process_training(tiny_gpt2, tmp_path):
    store = harvest_to_store(tiny_gpt2, TEXTS, tmp_path / "store", layer=1, progress=False)
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(SHARDED_WORKER.format(train=SHARDED)))
    run = torchrun(str(worker), str(store.path), str(tmp_path / "checkpoints"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("gloo threads at exit: []") == 2, run.stdout[-2000:]

    single = train_sae(store.subset(slice(None)), "topk", progress=False, **SHARDED)
    assert single.history[-1]["auxk"] > 0 and single.history[-1]["dead"] > 0.5, "dead latents and AuxK exercised"
    # The sharded run's gathered checkpoint is the single-process format: train_sae resumes it (here: at its end).
    sharded = train_sae(
        store.subset(slice(None)), "topk", progress=False, checkpoint_dir=tmp_path / "checkpoints", **SHARDED
    )
    assert load_checkpoint(tmp_path / "checkpoints")["step"] == 12
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(sharded.state_dict()[name], tensor, atol=2e-5, rtol=1e-4, msg=name)
