"""Faults survived: SIGKILL of training, of saves and of a harvest never leaves a corrupt or missing file, and resuming
loses at most the steps since the last checkpoint.

Each fault runs in a child process that the test kills with SIGKILL from outside (at a random moment once the
process is doing the work), or that kills itself at the worst moment (while a committed save's files are being
moved into place).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from saewidgets.sae import train_sae
from saewidgets.sae.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint

# Training run shared by the child processes and the in-process reference (every setting must match to resume).
TRAIN = dict(arch="topk", n_features=32, k=4, batch_size=32, n_steps=100, checkpoint_every=1, seed=3, progress=False)


def training_data() -> torch.Tensor:
    return torch.randn(1024, 8, generator=torch.Generator().manual_seed(0))


def child(code: str, *args: str) -> subprocess.Popen:
    """A Python child running ``code`` (dedented) with ``args`` in sys.argv, stdout piped, in line mode."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 90) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` turns true; False if it finished first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("child never got going")
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


TRAIN_CHILD = """
    import sys, time, torch
    torch.set_num_threads(int(sys.argv[2]))
    sys.path.insert(0, sys.argv[3])
    from test_reliability_faults import TRAIN, training_data
    from saewidgets.sae import train_sae

    def report(step, info):
        print(step, flush=True)
        time.sleep(0.004)  # slow enough to be killed mid-run; the arithmetic is unchanged

    train_sae(training_data(), checkpoint_dir=sys.argv[1], callback=report, **TRAIN)
    print("done", flush=True)
"""


def test_sigkilled_training_resumes_losing_at_most_the_steps_since_the_last_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    tests_dir = str(Path(__file__).parent)
    threads = str(torch.get_num_threads())
    rng = random.Random(0)
    kills = 0
    for _ in range(1):  # more rounds add nothing but time: every round is the same situation
        proc = child(TRAIN_CHILD, str(folder), threads, tests_dir)
        if not kill_when(proc, lambda: (folder / CHECKPOINT_NAME).exists(), rng.uniform(0.05, 0.4)):
            break
        kills += 1
        reached = [int(line) for line in proc.stdout.read().split() if line.isdigit()]
        # The checkpoint is whole. A kill that lands inside a checkpoint write (likelier on a loaded machine, where
        # the fsync is slow) leaves that write's hidden temporary: nothing can clean up after SIGKILL, so the next
        # save removes it (checked after resuming, and alone in the test below).
        files = sorted(p.name for p in folder.iterdir())
        assert CHECKPOINT_NAME in files and len(files) <= 2, f"left behind after SIGKILL: {files}"
        assert all(f == CHECKPOINT_NAME or KILLED_WRITE.fullmatch(f) for f in files), files
        state = load_checkpoint(folder / CHECKPOINT_NAME)
        if reached:
            assert state["step"] >= reached[-1] - TRAIN["checkpoint_every"], (state["step"], reached[-1])
    assert kills >= 1, "the run finished before it could be killed"

    resumed = train_sae(training_data(), checkpoint_dir=folder, **TRAIN)
    assert sorted(p.name for p in folder.iterdir()) == [CHECKPOINT_NAME], "a killed write's temporary outlived a save"
    reference = train_sae(training_data(), **TRAIN)
    assert resumed.cfg.provenance["steps"] == TRAIN["n_steps"]
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), f"{name} differs from the uninterrupted run"


KILLED_WRITE = re.compile(rf"\.{re.escape(CHECKPOINT_NAME)}\.[a-z0-9_]+\.tmp")  # atomic_write_bytes' temporary

STALLED_WRITE_CHILD = """
    import os, sys, time
    from saewidgets.sae.checkpoint import save_checkpoint

    def stall(fd):  # the bytes are in the temporary file, not yet synced or renamed: the kill lands mid-write
        print("writing", flush=True)
        time.sleep(120)

    os.fsync = stall
    save_checkpoint(sys.argv[1], {"step": 1})
"""


def test_a_checkpoint_write_killed_midway_keeps_the_old_checkpoint_and_the_next_save_removes_its_temporary(tmp_path):
    """Found by the clean-clone CI under load: SIGKILL inside a checkpoint write left ``.checkpoint.pt.*.tmp``. The
    old checkpoint stays whole and loads; the next save deletes the temporary."""
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"step": 0})
    proc = child(STALLED_WRITE_CHILD, str(path))
    assert proc.stdout.readline().strip() == "writing", proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[1] == CHECKPOINT_NAME and KILLED_WRITE.fullmatch(left[0]), left
    assert load_checkpoint(path)["step"] == 0
    save_checkpoint(path, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    assert load_checkpoint(path)["step"] == 2


# -- saves killed mid-write -----------------------------------------------------------------------------------------

SAVE_CHILD = """
    import itertools, sys, torch
    sys.path.insert(0, sys.argv[2])
    from test_reliability_faults import two_versions
    kind, path = sys.argv[1], sys.argv[3]
    versions, save, _ = two_versions(kind)
    for i in itertools.count():
        save(versions[i % 2], path)
        print(i, flush=True)
"""


def two_versions(kind: str):
    """Two different objects of ``kind``, how to save one to a path, and how to tell which one a path holds."""
    from saewidgets.activations import Activations
    from saewidgets.analysis.stats import FeatureStats
    from saewidgets.sae import SAE, SAEConfig, load_sae, save_sae

    if kind == "sae":
        saes = [SAE(SAEConfig(d_in=256, n_features=2048, k=8), torch.Generator().manual_seed(s)) for s in (1, 2)]
        return saes, lambda sae, path: save_sae(sae, path), lambda path: load_sae(path).fingerprint()
    if kind == "activations":
        rows = 200_000
        versions = [
            Activations(
                np.full((rows, 16), v, dtype=np.float32),
                np.zeros(rows, np.int32),
                np.zeros(rows, np.int32),
                np.arange(rows, dtype=np.int32),
            )
            for v in (1.0, 2.0)
        ]
        return versions, lambda a, path: a.save(path), lambda path: float(Activations.load(path).acts[-1, -1])
    if kind == "stats":
        F, k, W, nb, S = 2048, 8, 15, 5, 5

        def stats(v):
            return FeatureStats(
                fingerprint=f"v{v}",
                model_name="m",
                layer=0,
                n_tokens=1,
                context=(10, 4),
                density=torch.full((F,), v),
                max_act=torch.full((F,), v),
                mean_act=torch.zeros(F),
                top_values=torch.zeros(F, k),
                top_tokens=torch.zeros(F, k, W, dtype=torch.int32),
                top_acts=torch.zeros(F, k, W),
                band_values=torch.zeros(F, nb, S),
                band_tokens=torch.zeros(F, nb, S, W, dtype=torch.int32),
                band_acts=torch.zeros(F, nb, S, W),
                hist_counts=torch.zeros(F, 40, dtype=torch.int64),
                hist_edges=torch.zeros(F, 41),
                token_strings={0: "a"},
            )

        return [stats(1.0), stats(2.0)], lambda s, path: s.save(path), lambda path: FeatureStats.load(path).fingerprint
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["sae", "stats", "activations"])
def test_sigkill_during_repeated_saves_always_leaves_one_complete_version(kind, tmp_path):
    path = tmp_path / kind
    versions, save, identify = two_versions(kind)
    expected = set()
    for i, version in enumerate(versions):
        expected.add(identify(save(version, tmp_path / f".reference-{i}")))
    assert len(expected) == 2
    seen = set()
    for delay in (random.uniform(0.05, 0.5),):
        proc = child(SAVE_CHILD, kind, str(Path(__file__).parent), str(path))
        saved = []

        def first_save_done():
            line = proc.stdout.readline()
            saved.append(line)
            return line.strip().isdigit()

        assert kill_when(proc, first_save_done, delay), "the saving loop ended by itself"
        seen.add(identify(path))  # loads: complete, one of the two versions
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != kind]
        assert all(name.startswith(".") for name in leftovers), leftovers  # only hidden temporaries, if any
    assert seen <= expected


SWAP_CHILD = """
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from test_reliability_faults import two_versions
    kind, path = sys.argv[1], sys.argv[3]
    versions, save, _ = two_versions(kind)
    save(versions[0], path)
    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        if ".saewidgets-commit" in os.fspath(src):  # one file of the new version in place, others not: worst moment
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace_then_die
    save(versions[1], path)
    print("saved", flush=True)
"""


@pytest.mark.parametrize("kind", ["sae", "stats"])
def test_sigkill_while_moving_a_saved_folders_files_into_place_is_finished_by_the_next_load(kind, tmp_path):
    path = tmp_path / kind
    proc = child(SWAP_CHILD, kind, str(Path(__file__).parent), str(path))
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
    versions, save, identify = two_versions(kind)
    expected = {identify(save(v, tmp_path / f".reference-{i}")) for i, v in enumerate(versions)}
    assert identify(path) in expected  # the old or the new version loads


# -- harvest ------------------------------------------------------------------------------------------------------

HARVEST_CHILD = """
    import sys, torch
    from saewidgets import harvest
    from saewidgets.models import tiny_model
    model = tiny_model("gpt2", n_layers=1, d_model=32)
    text = " ".join(["The Golden Gate Bridge is a suspension bridge in San Francisco."] * 400)
    print("start", flush=True)
    acts = harvest(model, [text] * 40, layer=0, batch_size=8, ram_budget=1, memmap_dir=sys.argv[1], progress=False)
    acts.save(sys.argv[2])
    print("done", flush=True)
"""


@pytest.fixture(scope="module")
def killed_harvest(tmp_path_factory):
    """A harvest (spilling to a memmap, then saving) SIGKILLed mid-way: (spill folder, result folder)."""
    tmp = tmp_path_factory.mktemp("killed-harvest")
    spill, result = tmp / "spill", tmp / "result"
    proc = child(HARVEST_CHILD, str(spill), str(result))
    killed = kill_when(proc, lambda: spill.exists() and any(spill.iterdir()), 0.3)
    assert killed, "the harvest finished before it could be killed"
    return spill, result


def test_sigkilled_harvest_leaves_no_result_folder(killed_harvest):
    spill, result = killed_harvest
    assert not result.exists(), "a harvest killed mid-way left a result folder"
    # The killed process's spill file stays behind (no process is left to delete it): see
    # test_next_harvest_removes_spill_files_of_dead_processes.


def test_next_harvest_removes_spill_files_of_dead_processes(killed_harvest):
    spill, _ = killed_harvest
    orphans = sorted(spill.iterdir())
    assert orphans

    from saewidgets import harvest
    from saewidgets.models import tiny_model

    harvest(
        tiny_model("gpt2", n_layers=1, d_model=32), ["a b c"], layer=0, ram_budget=1, memmap_dir=spill, progress=False
    )
    assert not any(p.exists() for p in orphans)


STORE_CHILD = """
    import sys
    sys.path.insert(0, sys.argv[2])
    from test_reliability_faults import store_job
    model, texts, options = store_job()
    from saewidgets.store import harvest_to_store
    harvest_to_store(model, texts, sys.argv[1], **options)
    print("done", flush=True)
"""


def store_job():
    from saewidgets.models import tiny_model

    model = tiny_model("gpt2", n_layers=1, d_model=32)
    texts = [
        f"Document {i}: " + " ".join(["The Golden Gate Bridge is a suspension bridge."] * (30 + i % 7))
        for i in range(40)
    ]
    return model, texts, dict(layer=0, context_len=128, batch_size=4, shard_tokens=1024, progress=False)


def test_sigkilled_disk_store_harvest_keeps_only_complete_shards_and_resumes_to_the_same_rows(tmp_path):
    from saewidgets import harvest
    from saewidgets.store import MANIFEST, ActivationStore, harvest_to_store

    folder = tmp_path / "store"
    proc = child(STORE_CHILD, str(folder), str(Path(__file__).parent))
    shards = folder / "shards"
    assert kill_when(
        proc, lambda: shards.exists() and any(p.name.isdigit() for p in shards.iterdir()), random.uniform(0.0, 0.5)
    ), "the harvest finished before it could be killed"
    try:
        partial = ActivationStore(folder, allow_incomplete=True)  # every shard listed is whole and readable
    except ValueError as err:  # killed after the first shard's rename, before the manifest listed it
        assert "no committed shards yet" in str(err), err
    else:
        if partial.manifest["complete"]:  # killed after the last commit, while the child was exiting
            assert len(partial) == partial.manifest["n_rows"]
        else:
            assert 0 < len(partial) < partial.manifest["n_rows"]
        assert np.isfinite(np.asarray(partial.acts[: len(partial)])).all()

    model, texts, options = store_job()
    store = harvest_to_store(model, texts, folder, **options)
    reference = harvest_to_store(model, texts, tmp_path / "uninterrupted", **options)
    assert (
        len(store)
        == len(reference)
        == len(harvest(model, texts, **{k: v for k, v in options.items() if k != "shard_tokens"}))
    )
    for name in ("acts", "token_ids", "doc_ids", "positions"):
        np.testing.assert_array_equal(
            np.asarray(getattr(store, name)[: len(store)]),
            np.asarray(getattr(reference, name)[: len(reference)]),
            err_msg=name,
        )
    assert sorted(p.name for p in shards.iterdir() if not p.name.isdigit()) == [], "temporary shards left behind"
    assert (folder / MANIFEST).exists()


MIDWRITE_CHILD = """
    import os, signal, sys, torch
    torch.set_num_threads(int(sys.argv[2]))
    sys.path.insert(0, sys.argv[3])
    from test_reliability_faults import TRAIN, training_data
    from saewidgets.sae import train_sae

    real_fsync, calls = os.fsync, [0]

    def fsync_then_die(fd):
        calls[0] += 1
        if calls[0] == 5:  # the 5th checkpoint's bytes are written to its temporary file, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
        real_fsync(fd)

    os.fsync = fsync_then_die
    train_sae(training_data(), checkpoint_dir=sys.argv[1], **TRAIN)
"""


def test_sigkill_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one_and_the_next_run_cleans_up(tmp_path):
    folder = tmp_path / "ckpt"
    proc = child(MIDWRITE_CHILD, str(folder), str(torch.get_num_threads()), str(Path(__file__).parent))
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
    assert load_checkpoint(folder / CHECKPOINT_NAME)["step"] == 4  # the last complete checkpoint
    stray = [p.name for p in folder.iterdir() if p.name != CHECKPOINT_NAME]
    # SIGKILL cannot be caught: the half-written temporary stays, hidden, and is never read as a checkpoint.
    assert stray and all(n.startswith(f".{CHECKPOINT_NAME}.") and n.endswith(".tmp") for n in stray), stray

    resumed = train_sae(training_data(), checkpoint_dir=folder, **TRAIN)
    assert resumed.cfg.provenance["steps"] == TRAIN["n_steps"]
    assert sorted(p.name for p in folder.iterdir()) == [CHECKPOINT_NAME], "the next run left the stray temporary"
