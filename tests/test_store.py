"""Disk-backed activation store: same rows as harvest(), manifest, resume after an exception or SIGKILL, shuffling."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import torch
import pytest

from saewidgets.activations import harvest
from saewidgets.store import ActivationStore, ShardedRows, harvest_to_store

TEXTS = [
    "The Golden Gate Bridge is a suspension bridge in San Francisco.",
    "Paris is the capital of France, and the Eiffel Tower stands there.",
    "I went for a walk and saw the fog roll over the bay, and then the ferries crossed to Sausalito again.",
    "def add(a, b): return a + b",
    "Le pont est rouge. Die Brücke ist rot. El puente es rojo.",
    "She kept the secret, but honesty mattered more to her.",
] * 3
SETTINGS = dict(layer=1, context_len=16, batch_size=4, shard_tokens=40, progress=False)


def assert_same_rows(store, reference) -> None:
    assert len(store) == len(reference)
    np.testing.assert_allclose(np.asarray(store.acts), reference.acts, atol=1e-5)
    for name in ("token_ids", "doc_ids", "positions"):
        assert np.array_equal(np.asarray(getattr(store, name)), getattr(reference, name)), name


@pytest.fixture(scope="module")
def reference(tiny_gemma):
    return harvest(tiny_gemma, TEXTS, layer=1, context_len=16, progress=False)


def test_store_holds_exactly_the_rows_of_an_in_memory_harvest(tiny_gemma, reference, tmp_path):
    store = harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS)
    assert len(store.shard_sizes()) > 3, "the corpus is split over several shards"
    assert_same_rows(store, reference)
    assert store.site == reference.site and store.layer == 1 and store.model_name == tiny_gemma.name


def test_manifest_records_what_was_harvested(tiny_gemma, tmp_path):
    store = harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    for key in ("model", "site", "layer", "d_model", "dtype", "corpus_fingerprint", "settings", "shards"):
        assert key in manifest
    assert manifest["complete"] and manifest["d_model"] == tiny_gemma.d_model
    assert sum(s["rows"] for s in manifest["shards"]) == len(store) == manifest["n_rows"]
    assert manifest["settings"]["context_len"] == 16


def test_store_duck_types_as_activations(tiny_gemma, reference, tmp_path):
    store = harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS)
    rows = np.array([90, 3, 41, 3, len(store) - 1])
    np.testing.assert_allclose(store.torch(rows).numpy(), reference.acts[rows], atol=1e-5)
    np.testing.assert_allclose(store.acts[-1], reference.acts[-1], atol=1e-5)
    assert store.d_model == reference.d_model
    for row in (0, 39, 40, 41, len(store) - 1):  # rows at shard edges
        assert np.array_equal(store.context(row, 5, 3), reference.context(row, 5, 3))
    mask = np.asarray(store.doc_ids) == 2
    np.testing.assert_allclose(store.acts[mask], reference.acts[mask], atol=1e-5)


def test_feature_stats_read_a_store_like_activations(tiny_gemma, reference, tmp_path):
    import torch

    from saewidgets.analysis import feature_stats
    from saewidgets.sae import SAE, SAEConfig

    cfg = SAEConfig(d_in=tiny_gemma.d_model, n_features=32, architecture="relu", layer=1)
    sae = SAE(cfg, torch.Generator().manual_seed(0))
    store = harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS)
    from_store = feature_stats(tiny_gemma, sae, store, batch_size=37, progress=False)
    from_ram = feature_stats(tiny_gemma, sae, reference, batch_size=37, progress=False)
    np.testing.assert_allclose(from_store.max_act, from_ram.max_act, atol=1e-5)


def test_harvest_interrupted_by_an_exception_resumes_without_duplicate_or_missing_rows(
    tiny_gemma, reference, tmp_path, monkeypatch
):
    import saewidgets.activations as activations

    real, calls = activations._trace_batch, []

    def dies_midway(*args):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(activations, "_trace_batch", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert not manifest["complete"] and len(manifest["shards"]) >= 1
    with pytest.raises(ValueError, match="incomplete"):
        ActivationStore(tmp_path / "s")
    monkeypatch.setattr(activations, "_trace_batch", real)

    traced = []
    monkeypatch.setattr(activations, "_trace_batch", lambda *a: traced.append(len(a[2])) or real(*a))
    store = harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS)
    assert_same_rows(store, reference)
    n_windows = sum(s["n_windows"] for s in store.manifest["shards"])
    skipped = sum(s["n_windows"] for s in manifest["shards"])
    assert sum(traced) == n_windows - skipped, "resume traces only the windows not yet stored"
    assert not list((tmp_path / "s" / "shards").glob(".*")), "no temporary shard left behind"


def test_harvest_killed_with_sigkill_resumes_to_the_same_rows(tiny_gemma, reference, tmp_path):
    folder = tmp_path / "s"
    script = textwrap.dedent(f"""
        import os, signal
        import saewidgets.activations as activations
        from saewidgets.models import tiny_model
        from saewidgets.store import harvest_to_store
        real, calls = activations._trace_batch, []
        def killed(*args):
            calls.append(1)
            if len(calls) == 6:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args)
        activations._trace_batch = killed
        harvest_to_store(tiny_model("gemma"), {TEXTS!r}, {str(folder)!r}, **{SETTINGS!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not json.loads((folder / "manifest.json").read_text())["complete"]
    store = harvest_to_store(tiny_gemma, TEXTS, folder, **SETTINGS)
    assert_same_rows(store, reference)


def test_resuming_with_other_settings_is_refused(tiny_gemma, tmp_path):
    harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS)
    with pytest.raises(ValueError, match="corpus_fingerprint"):
        harvest_to_store(tiny_gemma, TEXTS[:-1], tmp_path / "s", **SETTINGS)
    restarted = harvest_to_store(tiny_gemma, TEXTS[:-1], tmp_path / "s", **{**SETTINGS, "resume": False})
    assert restarted.manifest["n_documents"] == len(TEXTS) - 1


def test_a_folder_that_is_not_a_store_is_left_alone(tiny_gemma, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no activation store"):
        harvest_to_store(tiny_gemma, TEXTS, tmp_path, **{**SETTINGS, "resume": False})
    with pytest.raises(FileNotFoundError, match="not an activation store"):
        ActivationStore(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_float16_store_halves_the_disk_and_stays_close(tiny_gemma, reference, tmp_path):
    store = harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS, dtype="float16")
    assert store.acts.dtype == np.float16
    np.testing.assert_allclose(store.torch().numpy(), reference.acts, rtol=2e-3, atol=2e-3)


def test_shuffled_batches_cover_every_row_once_and_mix_shards(tiny_gemma, tmp_path):
    store = harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS)
    batches = list(store.batches(16, seed=1, buffer_shards=2))
    rows = np.concatenate([b.numpy() for b in batches])
    assert len(rows) == len(store) and all(len(b) == 16 for b in batches[:-1])
    key = lambda a: np.lexsort(a.T[::-1])  # noqa: E731 - sort rows to compare as multisets
    all_rows = np.asarray(store.acts)
    np.testing.assert_array_equal(rows[key(rows)], all_rows[key(all_rows)])
    first = batches[0].numpy()
    shard_of = [
        int(np.searchsorted(store.acts.starts, np.flatnonzero((all_rows == r).all(1))[0], side="right")) for r in first
    ]
    assert len(set(shard_of)) > 1, "a batch draws rows from more than one shard"
    again = next(store.batches(16, seed=1, buffer_shards=2))
    other = next(store.batches(16, seed=1, epoch=1, buffer_shards=2))
    assert np.array_equal(again.numpy(), first) and not np.array_equal(other.numpy(), first)


def test_sharded_rows_index_like_one_array():
    parts = [np.arange(12).reshape(4, 3), np.arange(12, 18).reshape(2, 3), np.arange(18, 27).reshape(3, 3)]
    whole, rows = np.concatenate(parts), ShardedRows(parts)
    keys = (
        slice(None),
        slice(2, 7),
        slice(1, 9, 3),
        np.array([8, 0, 5, 5, -1]),
        whole[:, 0] % 2 == 0,
        (slice(3, 6), 1),
        (5, 2),
    )
    for key in keys:
        assert np.array_equal(rows[key], whole[key]), key
    assert rows.shape == (9, 3) and np.array_equal(rows[4], whole[4]) and np.array_equal(np.asarray(rows), whole)
    with pytest.raises(IndexError):
        rows[9]


def test_train_sae_reads_a_store_like_the_same_rows_in_memory(tmp_path):
    from saewidgets import harvest
    from saewidgets.models import tiny_model
    from saewidgets.sae import train_sae
    from saewidgets.store import harvest_to_store

    model = tiny_model("gpt2")
    texts = ["The Golden Gate Bridge is red and tall. " * 12] * 12
    store = harvest_to_store(model, texts, tmp_path / "s", layer=1, shard_tokens=300, progress=False)
    in_memory = harvest(model, texts, layer=1, progress=False)
    options = dict(n_features=32, k=4, n_steps=8, batch_size=64, seed=3, progress=False)
    a, b = train_sae(store, **options), train_sae(in_memory, **options)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name))


def test_a_stopped_harvest_keeps_only_committed_shards_and_resumes_to_the_same_rows(tiny_gemma, reference, tmp_path):
    import threading

    from saewidgets.cancel import Cancelled
    from saewidgets.progress import reporting

    stop, reports = threading.Event(), []

    def stop_after_five_batches(report):
        reports.append(report)
        if report.n > 0 and len(reports) >= 6:
            stop.set()

    with reporting(stop_after_five_batches), pytest.raises(Cancelled, match="harvest"):
        harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", cancel=stop, **SETTINGS)
    assert reports[0].unit == "tok" and 0 < reports[-1].n < len(reference), "progress came through progress_bar"
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert not manifest["complete"] and 1 <= len(manifest["shards"]) < manifest["n_shards"]
    on_disk = sorted(p.name for p in (tmp_path / "s" / "shards").iterdir())
    assert on_disk == [s["name"] for s in manifest["shards"]], "only the shards the manifest lists are kept"
    store = harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", cancel=threading.Event(), **SETTINGS)
    assert_same_rows(store, reference)


def test_a_bf16_store_holds_the_rows_of_a_bf16_harvest_and_resumes_only_in_bf16(tiny_gemma, tmp_path):
    store = harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS, precision="bf16")
    in_memory = harvest(tiny_gemma, TEXTS, layer=1, context_len=16, batch_size=4, progress=False, precision="bf16")
    assert store.acts.dtype == np.float32 and store.manifest["settings"]["precision"] == "bf16"
    error = np.linalg.norm(np.asarray(store.acts) - in_memory.acts, axis=1) / np.linalg.norm(in_memory.acts, axis=1)
    assert error.max() < 0.02, "the same rows (shards batch windows differently, so bf16 rounds a little apart)"
    fp32 = harvest_to_store(tiny_gemma, TEXTS, tmp_path / "f", **SETTINGS)
    assert "precision" not in fp32.manifest["settings"], "fp32 stores keep the manifest stores had before"
    assert not np.allclose(np.asarray(store.acts), np.asarray(fp32.acts), rtol=0, atol=1e-6), "bf16 ran"
    with pytest.raises(ValueError, match="harvested differently.*settings"):
        harvest_to_store(tiny_gemma, TEXTS, tmp_path / "s", **SETTINGS)  # an fp32 resume of the bf16 store
