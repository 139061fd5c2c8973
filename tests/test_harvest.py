"""Harvesting: batched equals solo, early stop equals a full forward, bookkeeping, windows, memmap spill, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from saewidgets.activations import Activations, full_forward_residual, harvest

TEXTS = [
    "The Golden Gate Bridge is a suspension bridge.",
    "Paris",
    "I went for a walk and saw the fog roll over the bay, and then the ferries crossed to Sausalito again.",
    "def add(a, b): return a + b",
]


def test_batched_left_padded_harvest_equals_solo_runs(tiny):
    batched = harvest(tiny, TEXTS, layer=1, batch_size=4, progress=False)
    for doc, text in enumerate(TEXTS):
        solo = harvest(tiny, [text], layer=1, batch_size=1, progress=False)
        np.testing.assert_allclose(batched.acts[batched.doc_ids == doc], solo.acts, atol=1e-4)


def test_stopping_after_the_layer_equals_reading_it_in_a_full_forward(tiny):
    acts = harvest(tiny, TEXTS[:1], layer=0, progress=False)
    full = full_forward_residual(tiny, TEXTS[0], layer=0)
    skip = 1 if tiny.bos_id is not None else 0
    np.testing.assert_allclose(acts.acts, full[skip:].numpy(), atol=1e-5)


def test_rows_keep_token_document_and_position(tiny):
    acts = harvest(tiny, TEXTS, layer=1, progress=False)
    for doc, text in enumerate(TEXTS):
        ids = tiny.encode(text, add_bos=False)
        rows = acts.doc_ids == doc
        assert acts.token_ids[rows].tolist() == ids
        assert acts.positions[rows].tolist() == list(range(len(ids)))
    assert np.all(np.diff(acts.doc_ids) >= 0), "rows are ordered by document"


def test_bos_rows_are_kept_when_asked(tiny_gemma):
    acts = harvest(tiny_gemma, TEXTS[:2], layer=1, drop_bos=False, progress=False)
    first = acts.doc_ids == 0
    assert acts.token_ids[first][0] == tiny_gemma.bos_id
    assert acts.positions[first][0] == -1


def test_long_documents_are_split_into_windows_not_truncated(tiny):
    text = " ".join(["the bridge in the fog"] * 40)
    n = len(tiny.encode(text, add_bos=False))
    acts = harvest(tiny, [text], layer=1, context_len=16, progress=False)
    assert len(acts) == n
    assert acts.positions.tolist() == list(range(n))


def test_windows_restart_context_with_bos(tiny_gemma):
    from saewidgets.activations import _trace_batch

    text = " ".join(["the bridge in the fog"] * 10)
    windowed = harvest(tiny_gemma, [text], layer=1, context_len=9, progress=False)
    second = tuple(windowed.token_ids[8:16].tolist())  # the second window: 8 tokens after its BOS
    alone = _trace_batch(tiny_gemma, 1, [(tiny_gemma.bos_id, *second)])[0, 1:]
    np.testing.assert_allclose(windowed.acts[8:16], alone.numpy(), atol=1e-4)


def test_n_tokens_stops_exactly_and_is_deterministic(tiny):
    a = harvest(tiny, TEXTS, layer=1, n_tokens=20, progress=False)
    b = harvest(tiny, TEXTS, layer=1, n_tokens=20, batch_size=1, progress=False)
    assert len(a) == 20
    np.testing.assert_allclose(a.acts, b.acts, atol=1e-4)
    assert np.array_equal(a.token_ids, b.token_ids)


def test_memmap_spill_gives_the_same_rows_as_in_memory(tiny, tmp_path):
    ram = harvest(tiny, TEXTS, layer=1, progress=False)
    disk = harvest(tiny, TEXTS, layer=1, ram_budget=0, memmap_dir=tmp_path, progress=False)
    assert isinstance(disk.acts, np.memmap)
    assert disk.path is not None and disk.path.parent == tmp_path
    np.testing.assert_allclose(ram.acts, disk.acts, atol=1e-5)
    path = disk.path
    del disk
    import gc

    gc.collect()
    assert not path.exists(), "an unsaved spill file is removed with its Activations"


def test_save_and_load_round_trip(tiny, tmp_path):
    acts = harvest(tiny, TEXTS, layer=1, progress=False)
    loaded = Activations.load(acts.save(tmp_path / "h"))
    np.testing.assert_array_equal(loaded.acts, acts.acts)
    assert loaded.site == acts.site and loaded.layer == 1
    assert [p.name for p in tmp_path.iterdir()] == ["h"], "no temporary folder left behind"


def _resident_kb(path) -> int:
    """Resident kB of this process's mappings of ``path`` (``/proc/self/smaps``)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_dropping_resident_pages_of_mapped_activations_keeps_their_values(tmp_path):
    rows = np.random.default_rng(0).standard_normal((8192, 256)).astype(np.float32)  # 8 MB
    Activations(rows, *(np.zeros(len(rows), np.int32) for _ in range(3))).save(tmp_path / "acts")
    loaded = Activations.load(tmp_path / "acts")
    file = (tmp_path / "acts" / "acts.npy").resolve()
    assert float(loaded.acts.sum()) == pytest.approx(float(rows.sum()), rel=1e-4)  # every page read
    before = _resident_kb(file)
    loaded.drop_resident_pages()
    after = _resident_kb(file)
    assert before > 7000 and after < 100, (before, after)
    np.testing.assert_array_equal(loaded.acts, rows)  # read again from the file
    Activations(rows, *(np.zeros(len(rows), np.int32) for _ in range(3))).drop_resident_pages()  # in memory: no-op


def test_corrupt_saved_activations_are_named(tiny, tmp_path):
    acts = harvest(tiny, TEXTS, layer=1, progress=False)
    folder = acts.save(tmp_path / "h")
    (folder / "acts.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        Activations.load(folder)
    with pytest.raises(FileNotFoundError, match="no saved activations"):
        Activations.load(tmp_path)


def test_split_by_document_is_disjoint(tiny):
    acts = harvest(tiny, TEXTS, layer=1, progress=False)
    train, held = acts.split(0.25, seed=0)
    assert set(train.doc_ids) & set(held.doc_ids) == set()
    assert len(train) + len(held) == len(acts)


def test_context_stays_inside_the_document(tiny):
    acts = harvest(tiny, TEXTS, layer=1, progress=False)
    first_of_doc2 = int(np.flatnonzero(acts.doc_ids == 2)[0])
    rows = acts.context(first_of_doc2, before=5, after=2)
    assert rows[0] == first_of_doc2 and len(rows) == 3


@pytest.mark.parametrize(
    "texts, error, message",
    [([], ValueError, "no texts"), (["ok", 3], TypeError, "Text 1 is a int"), ([""], ValueError, "no tokens")],
)
def test_bad_texts_get_clear_errors(tiny_gpt2, texts, error, message):
    with pytest.raises(error, match=message):
        harvest(tiny_gpt2, texts, layer=1, progress=False)


def test_too_many_tokens_says_how_many_there_are(tiny_gpt2):
    n = len(harvest(tiny_gpt2, TEXTS, layer=1, progress=False))
    with pytest.raises(ValueError, match=f"{n:,} tokens"):
        harvest(tiny_gpt2, TEXTS, layer=1, n_tokens=n + 1, progress=False)


def test_layer_out_of_range_in_harvest(tiny_gpt2):
    with pytest.raises(ValueError, match="out of range"):
        harvest(tiny_gpt2, TEXTS, layer=7, progress=False)


def test_failed_spill_leaves_nothing_on_disk(tiny_gpt2, tmp_path, monkeypatch):
    import saewidgets.activations as activations

    calls = []

    def failing_trace(*args):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(activations, "_trace_batch", failing_trace)
    with pytest.raises(KeyboardInterrupt):
        harvest(tiny_gpt2, TEXTS, layer=1, ram_budget=0, memmap_dir=tmp_path, progress=False)
    assert calls and list(tmp_path.iterdir()) == []


def test_bf16_harvest_autocasts_the_model_and_stores_float32(tiny):
    exact = harvest(tiny, TEXTS, layer=1, progress=False)
    fast = harvest(tiny, TEXTS, layer=1, progress=False, precision="bf16")
    assert fast.acts.dtype == np.float32 and fast.acts.shape == exact.acts.shape
    np.testing.assert_array_equal(fast.token_ids, exact.token_ids)
    error = np.linalg.norm(fast.acts - exact.acts, axis=1) / np.linalg.norm(exact.acts, axis=1)
    assert error.max() > 0, "the products ran in bf16 (an fp32 run would match exactly)"
    assert error.mean() < 0.02, f"bf16 residuals within 2% of float32's (mean relative error {error.mean():.4f})"


def test_a_harvest_precision_must_be_one_it_knows(tiny_gpt2):
    with pytest.raises(ValueError, match=r"precision='bfloat16' is not a precision: pass one of 'fp32', 'bf16'"):
        harvest(tiny_gpt2, TEXTS, layer=1, progress=False, precision="bfloat16")  # type: ignore[arg-type]


def test_a_remote_model_is_not_harvested_in_a_local_precision(tiny_gpt2, monkeypatch):
    monkeypatch.setattr(tiny_gpt2, "remote", True)  # refused before any request would be sent
    with pytest.raises(ValueError, match="NDIF runs a remote model in its own dtype"):
        harvest(tiny_gpt2, TEXTS, layer=1, progress=False, precision="bf16")


def test_bf16_on_hardware_that_emulates_it_says_so(tiny_gpt2, monkeypatch):
    import saewidgets.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": False)
    with pytest.warns(RuntimeWarning, match="no bf16 instructions, so autocast emulates them"):
        harvest(tiny_gpt2, TEXTS[:1], layer=1, progress=False, precision="bf16")
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        harvest(tiny_gpt2, TEXTS[:1], layer=1, progress=False, precision="bf16")
