"""The optional extras as users install them: ``datasets`` (a streamed dataset feeds a disk-backed harvest) and
``wandb`` (training logs, in wandb's offline mode). Nothing here touches the network."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from saewidgets.activations import harvest
from saewidgets.corpus import load_corpus
from saewidgets.store import harvest_to_store

N_DOCS = 120


def _local_stream(tmp_path, monkeypatch, read: list[int]):
    """A local JSON-lines file opened with ``datasets.load_dataset(..., streaming=True)``; ``read`` counts the rows
    the stream actually yields."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(
                {
                    "text": f"Document {i}: the fog rolled over the bay near bridge {i}.",
                    "topic": "bridges" if i % 2 else "fog",
                }
            )
            for i in range(N_DOCS)
        )
    )
    stream = datasets.load_dataset("json", data_files=str(path), split="train", streaming=True)
    assert isinstance(stream, datasets.IterableDataset)

    def count(row):
        read.append(1)
        return row

    return stream.map(count)


def test_a_streamed_dataset_feeds_harvest_to_store_without_being_read_whole(tiny_gemma, tmp_path, monkeypatch):
    read: list[int] = []
    stream = _local_stream(tmp_path, monkeypatch, read)
    store = harvest_to_store(
        tiny_gemma, stream, tmp_path / "store", layer=1, n_tokens=300, context_len=16, shard_tokens=64, progress=False
    )
    assert len(store) == 300
    assert 0 < len(read) < N_DOCS / 2, f"the stream was read {len(read)} rows deep for 300 tokens"
    leading = [f"Document {i}: the fog rolled over the bay near bridge {i}." for i in range(len(read))]
    reference = harvest(tiny_gemma, leading, layer=1, n_tokens=300, context_len=16, progress=False)
    np.testing.assert_allclose(np.asarray(store.acts), reference.acts, atol=1e-5)
    assert np.array_equal(np.asarray(store.doc_ids), reference.doc_ids)


def test_a_stream_without_n_tokens_is_refused_before_reading_it(tiny_gemma, tmp_path, monkeypatch):
    read: list[int] = []
    stream = _local_stream(tmp_path, monkeypatch, read)
    with pytest.raises(ValueError, match="n_tokens"):
        harvest_to_store(tiny_gemma, stream, tmp_path / "store", layer=1, progress=False)
    assert not read and not (tmp_path / "store").exists()


def test_load_corpus_reads_the_first_rows_of_a_stream_with_their_metadata(tmp_path, monkeypatch):
    read: list[int] = []
    corpus = load_corpus(_local_stream(tmp_path, monkeypatch, read), n_docs=10)
    assert len(corpus) == 10 and len(read) == 10
    assert corpus[3].startswith("Document 3:") and corpus.topics[:2] == ["fog", "bridges"]


def test_a_stream_row_without_the_text_field_names_the_field():
    with pytest.raises(ValueError, match="no field 'body'.*text_field"):
        load_corpus(iter([{"text": "x"}]), text_field="body")


def _wandb_records(run_dir, still_written: bool = False) -> list:
    """The records of an offline run's ``run-*.wandb`` file, read the way ``wandb sync`` reads them (a LevelDB-style
    log of 32 KiB blocks, each record a protobuf ``Record``), so the test checks what was written to disk.

    ``still_written``: wandb's service process may be half-way through a record when the file is read; the records
    up to the torn one are returned. Otherwise every record must be whole and parse."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data, records, pos, partial = path.read_bytes(), [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if still_written and pos + 7 + length > len(data):
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):
            record = pb.Record()
            try:
                record.ParseFromString(partial)
            except DecodeError:
                if still_written:
                    break
                raise
            records.append(record)
    return records


def test_wandb_logger_writes_training_curves_and_metrics_offline(tiny_gemma, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from saewidgets.sae import WandbLogger, evaluate_sae, train_sae

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    acts = harvest(tiny_gemma, ["The fog rolled over the Golden Gate Bridge again."] * 20, layer=1, progress=False)
    with WandbLogger(project="saewidgets-test", config={"arch": "topk"}, every=5) as log:
        sae = train_sae(acts, arch="topk", n_features=64, k=4, n_steps=20, batch_size=32, progress=False, callback=log)
        log.log_metrics(evaluate_sae(sae, acts))
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    # wandb's service process writes the file after finish() returns: wait for its exit record, then for the file to
    # stop growing, before reading it strictly.
    deadline, size = time.monotonic() + 60, -1
    while not any(r.WhichOneof("record_type") == "exit" for r in _wandb_records(run_dir, still_written=True)) or (
        size != (size := next(run_dir.glob("run-*.wandb")).stat().st_size)
    ):
        assert time.monotonic() < deadline, "wandb never finished writing the run's file"
        time.sleep(0.5)
    history, summary = {}, {}
    for record in _wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            history[row["_step"]] = row
        elif kind == "summary":
            summary.update({"/".join(u.nested_key) or u.key: u.value_json for u in record.summary.update})
    assert sorted(history) == [5, 10, 15, 20]
    logged = {step: sae.history[i] for i, step in enumerate(h["step"] for h in sae.history)}
    for step in (10, 20):
        assert history[step]["train/l0"] == pytest.approx(logged[step]["l0"])
        assert history[step]["train/fve"] == pytest.approx(logged[step]["fve"])
    assert "train/loss" in history[20] and "train/dead" in history[20]
    assert 0 < float(summary["eval/fve"]) <= 1 and float(summary["eval/l0"]) == pytest.approx(4)
