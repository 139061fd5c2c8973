"""Untrusted files: a pickle that would run code is refused by every loader and never runs; names read from files
(config fields, manifest entries) never make saewidgets read or write outside the folder it was given.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from saewidgets.activations import Activations
from saewidgets.analysis import FeatureStats, feature_stats
from saewidgets.sae import SAE, SAEConfig, load_sae, save_sae, train_sae
from saewidgets.sae.checkpoint import load_checkpoint


class Evil:
    """Unpickling this creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').close()",))


def tiny_sae(**cfg) -> SAE:
    return SAE(
        SAEConfig(**{"d_in": 64, "n_features": 16, "architecture": "topk", "k": 2, "layer": 1, **cfg}),
        torch.Generator().manual_seed(0),
    )


def test_the_evil_pickle_does_run_code_when_unpickled(tmp_path):
    """Control: the payload used below really executes if anything unpickles it."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.exists()


def plant(kind: str, folder: Path, marker: Path) -> tuple[Path, object]:
    """Write a file of ``kind`` that runs code when unpickled; return (path, loader)."""
    evil = Evil(marker)
    folder.mkdir(parents=True, exist_ok=True)
    if kind in ("sae.pkl", "sae.pickle"):
        path = folder / kind
        path.write_bytes(pickle.dumps({"W_enc": evil}))
        return path, load_sae
    if kind in ("sae.pt", "sae.pth", "sae.bin", "sae.ckpt"):
        path = folder / kind
        torch.save({"W_enc": evil}, path)
        return path, load_sae
    if kind == "native folder, sae.safetensors is a pickle":
        save_sae(tiny_sae(), folder / "sae")
        (folder / "sae" / "sae.safetensors").write_bytes(pickle.dumps({"W_enc": evil}))
        return folder / "sae", load_sae
    if kind == "saelens folder, weights are a pickle":
        save_sae(tiny_sae(), folder / "lens", format="saelens")
        (folder / "lens" / "sae_weights.safetensors").write_bytes(pickle.dumps({"W_enc": evil}))
        return folder / "lens", load_sae
    if kind == "params.npz with an object array":
        path = folder / "params.npz"
        np.savez(path, W_enc=np.array([evil], dtype=object))
        return path, load_sae
    if kind == "params.npy with an object array":
        path = folder / "params.npy"
        np.save(path, np.array([evil], dtype=object), allow_pickle=True)
        return path, load_sae
    if kind == "checkpoint.pt":
        path = folder / "checkpoint.pt"
        torch.save({"format": "saewidgets.sae.checkpoint/1", "step": evil}, path)
        return path, load_checkpoint
    if kind == "acts.npy with an object array":
        acts = Activations(np.zeros((2, 4), np.float32), *(np.zeros(2, np.int32) for _ in range(3)))
        acts.save(folder / "acts")
        np.save(folder / "acts" / "acts.npy", np.array([evil], dtype=object), allow_pickle=True)
        return folder / "acts", lambda p: Activations.load(p, mmap=False)
    if kind == "tokens.npz with an object array":
        acts = Activations(np.zeros((2, 4), np.float32), *(np.zeros(2, np.int32) for _ in range(3)))
        acts.save(folder / "acts")
        np.savez(
            folder / "acts" / "tokens.npz",
            token_ids=np.array([evil], dtype=object),
            doc_ids=np.zeros(2, np.int32),
            positions=np.zeros(2, np.int32),
        )
        return folder / "acts", lambda p: Activations.load(p, mmap=False)
    if kind == "feature_stats.safetensors is a pickle":
        folder.joinpath("stats").mkdir()
        (folder / "stats" / "feature_stats.json").write_text(json.dumps({"format_version": 1}))
        (folder / "stats" / "feature_stats.safetensors").write_bytes(pickle.dumps({"density": evil}))
        return folder / "stats", FeatureStats.load
    if kind == "store shard with an object array":
        from saewidgets.store import ActivationStore

        store = folder / "store"
        (store / "shards" / "00000").mkdir(parents=True)
        np.save(store / "shards" / "00000" / "acts.npy", np.array([evil], dtype=object), allow_pickle=True)
        np.save(store / "shards" / "00000" / "index.npy", np.array([evil], dtype=object), allow_pickle=True)
        (store / "manifest.json").write_text(json.dumps(_manifest([{"name": "00000", "rows": 1}])))
        return store, ActivationStore
    raise ValueError(kind)


def _manifest(shards: list[dict]) -> dict:
    from saewidgets.store import STORE_FORMAT

    return {
        "format": STORE_FORMAT,
        "model": "m",
        "site": "s",
        "layer": 0,
        "d_model": 4,
        "dtype": "float32",
        "corpus_fingerprint": "x",
        "settings": {},
        "n_rows": sum(s["rows"] for s in shards),
        "n_shards": len(shards),
        "complete": True,
        "shards": shards,
    }


KINDS = [
    "sae.pkl",
    "sae.pickle",
    "sae.pt",
    "sae.pth",
    "sae.bin",
    "sae.ckpt",
    "native folder, sae.safetensors is a pickle",
    "saelens folder, weights are a pickle",
    "params.npz with an object array",
    "params.npy with an object array",
    "checkpoint.pt",
    "acts.npy with an object array",
    "tokens.npz with an object array",
    "feature_stats.safetensors is a pickle",
    "store shard with an object array",
]


@pytest.mark.parametrize("kind", KINDS)
def test_a_pickle_that_runs_code_is_refused_and_never_runs(kind, tmp_path):
    marker = tmp_path / "PWNED"
    path, loader = plant(kind, tmp_path / "files", marker)
    with pytest.raises(ValueError) as info:
        loader(path)
    assert not marker.exists(), "loading ran the pickle's code"
    assert path.name in str(info.value) or str(path) in str(info.value), (
        f"the error does not name the file: {info.value}"
    )


# -- names from files never become paths outside the folder ----------------------------------------------------------

HOSTILE_NAMES = ["../../outside", "/etc/passwd", "..", "~/x", "a/../../../b", "C:\\Windows\\x", "\x00"]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_names_inside_sae_configs_never_choose_where_files_go(name, tmp_path, monkeypatch):
    """model_name / site / hook_name from a (SAELens or native) config travel as data only: loading, saving,
    training and statistics write only inside the folders passed in."""
    sandbox = tmp_path / "sandbox"
    work = sandbox / "deep" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("SAEWIDGETS_CACHE", str(sandbox / "cache"))
    outside_before = files_under(tmp_path) - files_under(sandbox)

    lens = save_sae(tiny_sae(), sandbox / "in" / "lens", format="saelens")
    cfg = json.loads((lens / "cfg.json").read_text())
    cfg["metadata"].update(model_name=name, hook_name=name)
    cfg["metadata"]["saewidgets"].update(model_name=name, site=name)
    (lens / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(lens)
    assert sae.cfg.model_name == name and sae.cfg.site == name

    save_sae(sae, sandbox / "out" / "native")
    save_sae(sae, sandbox / "out" / "lens", format="saelens")
    assert load_sae(sandbox / "out" / "native").cfg.model_name == name
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    acts = Activations(
        x.numpy(),
        np.zeros(64, np.int32),
        np.zeros(64, np.int32),
        np.arange(64, dtype=np.int32),
        model_name=name,
        layer=1,
        site=name,
    )
    acts.save(sandbox / "out" / "acts")
    trained = train_sae(
        acts,
        "topk",
        8,
        2,
        batch_size=16,
        n_steps=2,
        checkpoint_dir=sandbox / "out" / "ckpt",
        checkpoint_every=1,
        progress=False,
    )
    assert trained.cfg.model_name == name

    written = {p.relative_to(sandbox).parts[0] for p in files_under(sandbox)}
    assert written <= {"in", "out", "deep", "cache"}
    assert not any(files_under(sandbox / "deep" / "work")), "something was written in the working directory"
    assert files_under(tmp_path) - files_under(sandbox) == outside_before, "something was written outside"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_statistics_with_hostile_model_names_and_token_strings_save_inside_their_folder(name, tmp_path):
    from saewidgets.models import tiny_model

    model = tiny_model("gpt2")
    texts = ["The Golden Gate Bridge is a suspension bridge.", "Le pont est rouge."]
    from saewidgets import harvest

    acts = harvest(model, texts, layer=1, progress=False)
    acts.model_name = name
    stats = feature_stats(model, tiny_sae(), acts, top_k=2, progress=False, check_provenance=False)  # name is hostile
    stats.token_strings = {k: name for k in stats.token_strings}
    target = tmp_path / "box" / "stats"
    stats.save(target)
    assert {p.relative_to(tmp_path) for p in files_under(tmp_path)} == {
        Path("box"),
        Path("box/stats"),
        Path("box/stats/feature_stats.json"),
        Path("box/stats/feature_stats.safetensors"),
        Path("box/stats/.saewidgets-files.json"),
    }
    back = FeatureStats.load(target)
    assert back.model_name == name and set(back.token_strings.values()) == {name}


@pytest.mark.parametrize("name", ["../outside", "../../outside", "/ABS/outside", "00000/../../outside", "..", ""])
def test_a_store_manifest_cannot_point_a_shard_outside_the_store(name, tmp_path):
    """Shard names come from manifest.json; a name that climbs out of shards/ (or is absolute) is refused, never
    read."""
    from saewidgets.store import ActivationStore

    store = tmp_path / "store"
    # A perfectly valid shard OUTSIDE the store, where a traversal would land.
    name = name.replace("/ABS", str(tmp_path))
    landing = (store / "shards" / name).resolve() if not name.startswith("/") else Path(name)
    landing.mkdir(parents=True, exist_ok=True)
    np.save(landing / "acts.npy", np.ones((2, 4), np.float32))
    np.save(landing / "index.npy", np.zeros((2, 3), np.int32))
    (store / "shards").mkdir(parents=True, exist_ok=True)
    (store / "manifest.json").write_text(json.dumps(_manifest([{"name": name, "rows": 2}])))
    with pytest.raises(ValueError, match="manifest"):
        ActivationStore(store)
