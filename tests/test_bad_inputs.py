"""Every bad input we know users hit, what they get back, and the table in docs/bad_inputs.md that lists them.

Each `Case` builds one bad input in a temporary folder, makes the call a user would make, and pins the error type
and the gist of the message (a regex). `test_docs_table_is_current` renders all cases (type and the exact message,
with the temporary folder shown as ``<tmp>``) and checks docs/bad_inputs.md says the same; after changing a message,
regenerate the table with ``python tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad_inputs.md"


# -- small, deterministic ingredients ----------------------------------------------------------------------------


@lru_cache(maxsize=None)
def tiny():
    from saewidgets.models import tiny_model

    return tiny_model("gpt2")


def tiny_sae(arch: str = "topk", d: int = 64, n: int = 32, layer: int = 1, model_name: str = "tiny-gpt2"):
    from saewidgets.sae import SAE, SAEConfig

    return SAE(
        SAEConfig(
            d_in=d, n_features=n, architecture=arch, k=4 if "topk" in arch else None, layer=layer, model_name=model_name
        ),
        torch.Generator().manual_seed(0),
    )


TEXTS = ["The Golden Gate Bridge is a suspension bridge in San Francisco.", "Le pont est rouge. Die Brücke ist rot."]


@lru_cache(maxsize=None)
def tiny_acts():
    from saewidgets import harvest

    return harvest(tiny(), TEXTS, layer=1, progress=False)


@lru_cache(maxsize=None)
def tiny_stats():
    from saewidgets.analysis import feature_stats

    return feature_stats(tiny(), tiny_sae(), tiny_acts(), top_k=2, context=(2, 1), progress=False)


def saved_sae(tmp: Path) -> Path:
    from saewidgets.sae import save_sae

    return save_sae(tiny_sae(), tmp / "sae")


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


class Evil:
    """Unpickling this runs code: it creates ``MARKER`` in the current folder."""

    def __reduce__(self):
        return (exec, ("open('PWNED_MARKER', 'w').close()",))


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@dataclass
class Case:
    input: str
    where: str
    run: Callable[[Path, pytest.MonkeyPatch], Any]
    error: type[BaseException]
    says: str  # regex the message must match

    @property
    def id(self) -> str:
        return re.sub(r"\W+", "-", f"{self.where} {self.input}").strip("-")[:80]


# -- the cases ---------------------------------------------------------------------------------------------------


def _sae_wrong_shape(tmp, mp):
    from safetensors.torch import load_file, save_file

    folder = saved_sae(tmp)
    tensors = load_file(str(folder / "sae.safetensors"))
    tensors["W_enc"] = tensors["W_enc"][:, :10].contiguous()
    save_file(tensors, str(folder / "sae.safetensors"))
    return load(folder)


def _sae_missing_tensor(tmp, mp):
    from safetensors.torch import load_file, save_file

    folder = saved_sae(tmp)
    tensors = load_file(str(folder / "sae.safetensors"))
    del tensors["b_dec"]
    save_file(tensors, str(folder / "sae.safetensors"))
    return load(folder)


def _edit_config(tmp, **changes):
    folder = saved_sae(tmp)
    cfg = json.loads((folder / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (folder / "config.json").write_text(json.dumps(cfg))
    return load(folder)


def _config_text_edit(tmp, key, raw):
    """Set ``key`` of a saved config.json to the JSON text ``raw`` (as a hand edit would), then load."""
    folder = saved_sae(tmp)
    text = re.sub(rf'"{key}": [^,\n}}]+', f'"{key}": {raw}', (folder / "config.json").read_text())
    (folder / "config.json").write_text(text)
    return load(folder)


def load(path):
    from saewidgets.sae import load_sae

    return load_sae(path)


def _sae_inf(tmp, mp):
    from saewidgets.sae import save_sae

    sae = tiny_sae()
    with torch.no_grad():
        sae.W_dec[3, 5] = float("inf")
    return load(save_sae(sae, tmp / "sae"))


def _npz_object_array(tmp, mp):
    path = tmp / "params.npz"
    np.savez(path, W_enc=np.array([Evil()], dtype=object), W_dec=np.zeros((2, 2)))
    return load(path)


def _torch_pickle(tmp, mp):
    path = tmp / "sae.pt"
    torch.save({"W_enc": Evil()}, path)
    return load(path)


def _pkl(tmp, mp):
    path = tmp / "sae.pkl"
    path.write_bytes(pickle.dumps({"W_enc": Evil()}))
    return load(path)


def _safetensors_that_is_a_pickle(tmp, mp):
    folder = saved_sae(tmp)
    (folder / "sae.safetensors").write_bytes(pickle.dumps({"W_enc": Evil()}))
    return load(folder)


def _missing_relative(tmp, mp):
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.chdir(tmp)
    return load("my_sae")


def _gemma_truncated(tmp, mp):
    sae = tiny_sae("jumprelu")
    path = tmp / "params.npz"
    np.savez(
        path,
        W_enc=sae.W_enc.detach().numpy(),
        W_dec=sae.W_dec.detach().numpy(),
        b_enc=sae.b_enc.detach().numpy(),
        b_dec=sae.b_dec.detach().numpy(),
        threshold=sae.threshold.detach().numpy(),
    )
    return load(truncate(path))


def _checkpoint(tmp):
    from saewidgets.sae import train_sae

    folder = tmp / "ckpt"
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    train_sae(x, "topk", 16, 2, batch_size=32, n_steps=2, checkpoint_dir=folder, checkpoint_every=1, progress=False)
    return x, folder


def _checkpoint_truncated(tmp, mp):
    from saewidgets.sae import train_sae

    x, folder = _checkpoint(tmp)
    truncate(folder / "checkpoint.pt")
    return train_sae(x, "topk", 16, 2, batch_size=32, n_steps=4, checkpoint_dir=folder, progress=False)


def _checkpoint_evil(tmp, mp):
    from saewidgets.sae import train_sae

    x, folder = _checkpoint(tmp)
    torch.save({"format": "saewidgets.sae.checkpoint/1", "evil": Evil()}, folder / "checkpoint.pt")
    return train_sae(x, "topk", 16, 2, batch_size=32, n_steps=2, checkpoint_dir=folder, progress=False)


def _checkpoint_other_run(tmp, mp):
    from saewidgets.sae import train_sae

    x, folder = _checkpoint(tmp)
    return train_sae(x, "topk", 16, 2, batch_size=32, n_steps=2, lr=1e-2, checkpoint_dir=folder, progress=False)


def _saved_acts(tmp):
    return tiny_acts().save(tmp / "acts")


def _damaged_acts(damage):
    """A case that saves activations, applies ``damage(folder)`` and loads them back."""

    def run(tmp, mp):
        from saewidgets.activations import Activations

        folder = _saved_acts(tmp)
        damage(folder)
        return Activations.load(folder)

    return run


def _write_object_array(path):
    np.save(path, np.array([Evil()], dtype=object), allow_pickle=True)


def _store_traversal(tmp, mp):
    from saewidgets.store import STORE_FORMAT, ActivationStore

    store = tmp / "store"
    (store / "shards").mkdir(parents=True)
    manifest = {
        "format": STORE_FORMAT,
        "model": "m",
        "site": "s",
        "layer": 0,
        "d_model": 4,
        "dtype": "float32",
        "corpus_fingerprint": "x",
        "settings": {},
        "n_rows": 2,
        "n_shards": 1,
        "complete": True,
        "shards": [{"name": "../../elsewhere", "rows": 2}],
    }
    (store / "manifest.json").write_text(json.dumps(manifest))
    return ActivationStore(store)


def _stats_folder(tmp):
    return tiny_stats().save(tmp / "stats")


def _damaged_stats(damage):
    """A case that saves feature statistics, applies ``damage(folder)`` and loads them back."""

    def run(tmp, mp):
        from saewidgets.analysis import FeatureStats

        folder = _stats_folder(tmp)
        damage(folder)
        return FeatureStats.load(folder)

    return run


def _drop_tensor(path, name):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    del tensors[name]
    save_file(tensors, str(path))


def _stats_other_sae(tmp, mp):
    from saewidgets.analysis import FeatureStats

    return FeatureStats.load(_stats_folder(tmp), sae=_other_sae())


def _other_sae():
    sae = tiny_sae()
    with torch.no_grad():
        sae.W_enc.mul_(2)
    return sae


def _nan_model_harvest(tmp, mp):
    from saewidgets import harvest
    from saewidgets.models import tiny_model

    model = tiny_model("gpt2", seed=1)
    with torch.no_grad():
        model.hf.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    return harvest(model, TEXTS, layer=1, progress=False)


def _train_nan(tmp, mp):
    from saewidgets.sae import train_sae

    x = torch.randn(128, 8)
    x[17, 3] = float("nan")
    return train_sae(x, "topk", 16, 2, batch_size=32, n_steps=1, progress=False)


def _train_inf_memmap(tmp, mp):
    from saewidgets.sae import train_sae

    x = np.lib.format.open_memmap(tmp / "x.npy", mode="w+", dtype=np.float32, shape=(70_000, 4))
    x[:] = 1.0
    x[69_999, 2] = -np.inf
    return train_sae(x, "topk", 8, 2, batch_size=32, n_steps=1, progress=False)


def _stats_nan_acts(tmp, mp):
    from saewidgets.analysis import feature_stats

    acts = tiny_acts().subset(slice(None))
    acts.acts[4, 7] = np.nan
    return feature_stats(tiny(), tiny_sae(), acts, progress=False)


def _save_into_user_folder(tmp, mp):
    from saewidgets.sae import save_sae

    (tmp / "proj" / "src").mkdir(parents=True)
    (tmp / "proj" / "notes.txt").write_text("work")
    return save_sae(tiny_sae(), tmp / "proj")


def _save_onto_file(tmp, mp):
    from saewidgets.sae import save_sae

    (tmp / "sae.bin").write_bytes(b"precious")
    return save_sae(tiny_sae(), tmp / "sae.bin")


def _save_to_empty_path(tmp, mp):
    from saewidgets.sae import save_sae

    return save_sae(tiny_sae(), "")


def _enospc_save_sae(tmp, mp):
    import safetensors.torch

    from saewidgets.sae import save_sae

    folder = saved_sae(tmp)
    mp.setattr(safetensors.torch, "save_file", disk_full)
    return save_sae(tiny_sae(), folder)


def _enospc_stats(tmp, mp):
    import saewidgets.analysis.stats as stats_module

    folder = _stats_folder(tmp)
    mp.setattr(stats_module, "save_file", disk_full)
    return tiny_stats().save(folder)


def _enospc_acts(tmp, mp):
    folder = _saved_acts(tmp)
    mp.setattr(np, "save", disk_full)
    return tiny_acts().save(folder)


def _enospc_checkpoint(tmp, mp):
    from saewidgets.sae import train_sae

    x, folder = _checkpoint(tmp)
    mp.setattr(os, "fsync", disk_full)
    return train_sae(
        x,
        "topk",
        16,
        2,
        batch_size=32,
        n_steps=4,
        checkpoint_dir=folder,
        checkpoint_every=1,
        resume=False,
        progress=False,
    )


def _long_prompt(what):
    def run(tmp, mp):
        from saewidgets import analysis

        text = "the bridge " * 400  # ~800 tokens; the tiny GPT-2 has 256 positions
        sae = tiny_sae()
        if what == "token_activations":
            return analysis.token_activations(tiny(), sae, text, [0, 1])
        return analysis.attribute(tiny(), sae, text, target=" bridge")

    return run


def _harvest(**kwargs):
    def run(tmp, mp):
        from saewidgets import harvest

        options = {"layer": 1, "progress": False, **kwargs}
        texts = options.pop("texts", TEXTS)
        return harvest(tiny(), texts, **options)

    return run


def _train(x, **kwargs):
    def run(tmp, mp):
        from saewidgets.sae import train_sae

        return train_sae(x() if callable(x) else x, **{"batch_size": 8, "n_steps": 1, "progress": False, **kwargs})

    return run


def _steer_nan(tmp, mp):
    from saewidgets.analysis import steer

    return steer(tiny(), tiny_sae(), "The bridge", {0: float("nan")}, units="activation")


def _steering_search(**kwargs):
    def run(tmp, mp):
        from saewidgets.analysis import steering_search

        options = {"query": "the", "progress": False, **kwargs}
        return steering_search(tiny(), tiny_sae(), tiny_stats(), **options)

    return run


def _output_score_out_of_range(tmp, mp):
    from saewidgets.analysis import output_scores

    return output_scores(tiny(), tiny_sae(), tiny_stats(), [40], "bridge", progress=False)


def _token_activations(text, features=(0,), **kwargs):
    def run(tmp, mp):
        from saewidgets.analysis import token_activations

        return token_activations(tiny(), tiny_sae(), text, features, **kwargs)

    return run


def _sae_other_model(tmp, mp):
    from saewidgets.analysis import token_activations

    return token_activations(tiny(), tiny_sae(d=32), "The bridge", [0])


def _store_float16_overflow(tmp, mp):
    from saewidgets.models import tiny_model
    from saewidgets.store import harvest_to_store

    model = tiny_model("gpt2", seed=2)
    with torch.no_grad():
        model.hf.transformer.wte.weight.mul_(1e6)  # residuals far beyond float16's 65,504 (fine in float32)
    return harvest_to_store(model, TEXTS, tmp / "store", layer=0, dtype="float16", progress=False)


def _analysis(name, *args, **kwargs):
    """A case calling ``saewidgets.<name>(tiny model, tiny SAE, *args, **kwargs)``."""

    def run(tmp, mp):
        import saewidgets

        return getattr(saewidgets, name)(tiny(), tiny_sae(), *args, **kwargs)

    return run


def _search_contexts(query, **kwargs):
    def run(tmp, mp):
        from saewidgets import search_contexts

        return search_contexts(tiny_stats(), query, **kwargs)

    return run


def _evaluate_one_row(tmp, mp):
    from saewidgets.sae import evaluate_sae

    return evaluate_sae(tiny_sae(), tiny_acts().acts[:1])


def _geometry_of_three(tmp, mp):
    from saewidgets.analysis import feature_geometry

    return feature_geometry(tiny_sae(n=3, arch="relu"), cache_dir=None)


def _store_into(path):
    def run(tmp, mp):
        from saewidgets.store import harvest_to_store

        (tmp / "afile").write_text("x")
        return harvest_to_store(tiny(), TEXTS, tmp / path, layer=1, progress=False)

    return run


def _checkpoint_below_a_file(tmp, mp):
    from saewidgets.sae import train_sae

    (tmp / "afile").write_text("x")
    calls = []
    mp.setattr("saewidgets.sae.train.make_trainer", lambda *a, **k: calls.append(a))  # must never be reached
    x = torch.randn(64, 8)
    return train_sae(x, "topk", 16, 2, n_steps=4, checkpoint_dir=tmp / "afile" / "ckpt", progress=False)


def _sae_of_another_model_same_width(where):
    def run(tmp, mp):
        from saewidgets import analysis

        sae = tiny_sae(model_name="tiny-gemma")  # same d_model as tiny-gpt2: only the recorded name tells
        if where == "steer":
            return analysis.steer(tiny(), sae, "The bridge", {0: 1.0}, units="activation", max_new_tokens=2)
        return analysis.token_activations(tiny(), sae, "The bridge", [0])

    return run


def _sae_at_another_layer(tmp, mp):
    from saewidgets.analysis import attribute

    return attribute(tiny(), tiny_sae(layer=1), "The bridge", layer=0)


def _evaluate_other_layer(tmp, mp):
    from saewidgets import harvest
    from saewidgets.sae import evaluate_sae

    return evaluate_sae(tiny_sae(layer=1), harvest(tiny(), TEXTS, layer=0, progress=False))


CASES = [
    # files
    Case(
        "sae.safetensors cut off halfway",
        "load_sae",
        lambda t, m: load(truncate(saved_sae(t) / "sae.safetensors")),
        ValueError,
        r"sae\.safetensors could not be read .*truncated or corrupt",
    ),
    Case(
        "config.json cut off halfway",
        "load_sae",
        lambda t, m: load(truncate(saved_sae(t) / "config.json")),
        ValueError,
        r"config\.json is not valid JSON",
    ),
    Case(
        "config.json without n_features",
        "load_sae",
        lambda t, m: _edit_config(t, n_features=None),
        ValueError,
        r"config\.json: the SAE config is invalid .*n_features",
    ),
    Case(
        'config.json with architecture "evil"',
        "load_sae",
        lambda t, m: _edit_config(t, architecture="evil"),
        ValueError,
        r"config\.json: the SAE config is invalid .*architecture",
    ),
    Case(
        "config.json that is a JSON list",
        "load_sae",
        lambda t, m: (saved_sae(t) / "config.json").write_text("[1, 2]") and load(t / "sae"),
        ValueError,
        r"config\.json should hold a JSON object",
    ),
    Case(
        "config.json with input_scale: 1e400 (inf)",
        "load_sae",
        lambda t, m: _config_text_edit(t, "input_scale", "1e400"),
        ValueError,
        r"config\.json: the SAE config is invalid \(input_scale must be a finite positive number between .*got inf",
    ),
    Case(
        'config.json with apply_b_dec_to_input: "false" (a string)',
        "load_sae",
        lambda t, m: _config_text_edit(t, "apply_b_dec_to_input", '"false"'),
        ValueError,
        r"apply_b_dec_to_input must be true or false \(a JSON boolean\), got 'false'",
    ),
    Case(
        "config.json with n_features: 2.5",
        "load_sae",
        lambda t, m: _config_text_edit(t, "n_features", "2.5"),
        ValueError,
        r"n_features=2\.5 is not a whole number",
    ),
    Case(
        "W_enc of the wrong shape",
        "load_sae",
        _sae_wrong_shape,
        ValueError,
        r"sae\.safetensors: W_enc has shape \(64, 10\) but the config .* needs \(64, 32\)",
    ),
    Case("weights file without b_dec", "load_sae", _sae_missing_tensor, ValueError, r"sae\.safetensors lacks b_dec"),
    Case(
        "Gemma Scope params.npz cut off halfway",
        "load_sae",
        _gemma_truncated,
        ValueError,
        r"params\.npz could not be read",
    ),
    Case(
        "a path that does not exist (relative, offline)",
        "load_sae",
        _missing_relative,
        (FileNotFoundError, ValueError, OSError),
        r"my_sae",
    ),
    Case(
        "checkpoint.pt cut off halfway",
        "train_sae (resume)",
        _checkpoint_truncated,
        ValueError,
        r"checkpoint\.pt is not a readable saewidgets checkpoint",
    ),
    Case(
        "checkpoint from a run with other settings",
        "train_sae (resume)",
        _checkpoint_other_run,
        ValueError,
        r"different run \(lr: checkpoint .*resume=False",
    ),
    Case(
        "acts.npy cut off halfway",
        "Activations.load",
        _damaged_acts(lambda f: truncate(f / "acts.npy")),
        ValueError,
        r"acts.* corrupt or incomplete",
    ),
    Case(
        "tokens.npz cut off halfway",
        "Activations.load",
        _damaged_acts(lambda f: truncate(f / "tokens.npz")),
        ValueError,
        r"acts.* corrupt or incomplete",
    ),
    Case(
        "activations.json cut off",
        "Activations.load",
        _damaged_acts(lambda f: (f / "activations.json").write_text('{"model_name": "tiny", "lay')),
        ValueError,
        r"acts.* corrupt or incomplete",
    ),
    Case(
        "acts.npy with fewer rows than activations.json says",
        "Activations.load",
        _damaged_acts(lambda f: np.save(f / "acts.npy", np.zeros((3, 64), dtype=np.float32))),
        ValueError,
        r"acts\.npy has shape \(3, 64\) but activations\.json says",
    ),
    Case(
        "feature_stats.safetensors cut off halfway",
        "FeatureStats.load",
        _damaged_stats(lambda f: truncate(f / "feature_stats.safetensors")),
        ValueError,
        r"feature statistics in .*stats are corrupt",
    ),
    Case(
        "feature_stats.json cut off halfway",
        "FeatureStats.load",
        _damaged_stats(lambda f: truncate(f / "feature_stats.json")),
        ValueError,
        r"feature statistics in .*stats are corrupt",
    ),
    Case(
        "feature_stats.safetensors without max_act",
        "FeatureStats.load",
        _damaged_stats(lambda f: _drop_tensor(f / "feature_stats.safetensors", "max_act")),
        ValueError,
        r"stats.*max_act",
    ),
    Case(
        "statistics of another SAE",
        "FeatureStats.load(sae=...)",
        _stats_other_sae,
        ValueError,
        r"computed for SAE \w+, but this SAE is \w+",
    ),
    Case(
        'manifest.json naming a shard "../../elsewhere"',
        "ActivationStore",
        _store_traversal,
        ValueError,
        r"manifest\.json lists a shard named '\.\./\.\./elsewhere'",
    ),
    # code in files
    Case("a pickle (.pkl) whose unpickling runs code", "load_sae", _pkl, ValueError, r"refuses to unpickle"),
    Case(
        "torch.save file (.pt) holding an object that runs code",
        "load_sae",
        _torch_pickle,
        ValueError,
        r"refuses to unpickle",
    ),
    Case(
        "sae.safetensors that is really a pickle",
        "load_sae",
        _safetensors_that_is_a_pickle,
        ValueError,
        r"sae\.safetensors could not be read",
    ),
    Case(
        "params.npz holding a pickled object array",
        "load_sae",
        _npz_object_array,
        ValueError,
        r"params\.npz .*(pickle|could not be read)",
    ),
    Case(
        "checkpoint.pt holding an object that runs code",
        "train_sae (resume)",
        _checkpoint_evil,
        ValueError,
        r"checkpoint\.pt is not a readable saewidgets checkpoint",
    ),
    Case(
        "acts.npy holding a pickled object array",
        "Activations.load",
        _damaged_acts(lambda f: _write_object_array(f / "acts.npy")),
        ValueError,
        r"acts.* corrupt or incomplete .*Python objects",
    ),
    # numbers
    Case("activations with a NaN", "train_sae", _train_nan, FloatingPointError, r"contain nan at row 17, column 3"),
    Case(
        "memory-mapped activations with -inf in the last row",
        "train_sae",
        _train_inf_memmap,
        FloatingPointError,
        r"contain -inf at row 69,?999, column 2",
    ),
    Case("weights with an inf", "load_sae", _sae_inf, ValueError, r"sae\.safetensors.*W_dec.*(inf|finite)"),
    Case(
        "a model with a NaN weight",
        "harvest",
        _nan_model_harvest,
        FloatingPointError,
        r"NaN/inf activations at layer 1",
    ),
    Case("activations with a NaN", "feature_stats", _stats_nan_acts, FloatingPointError, r"(NaN|nan).*row 4"),
    Case("a NaN clamp strength", "steer", _steer_nan, ValueError, r"strength of feature 0 must be a finite number"),
    # arguments
    Case("layer=99 on a 2-layer model", "harvest", _harvest(layer=99), ValueError, r"layer=99 is out of range"),
    Case("an empty list of texts", "harvest", _harvest(texts=[]), ValueError, r"got no texts"),
    Case("a list holding a non-string", "harvest", _harvest(texts=["ok", 3]), TypeError, r"Text 1 is a int"),
    Case(
        'a dict {"text": ...} instead of a list of texts',
        "harvest",
        _harvest(texts={"text": "The bridge"}),
        TypeError,
        r"got a dict \(keys \['text'\]\), not texts: pass a list of strings",
    ),
    Case(
        "a text with a lone surrogate ('\\ud800')",
        "harvest",
        _harvest(texts=["ok", "a\ud800b"]),
        ValueError,
        r"Text 1 holds a lone surrogate .*not valid Unicode",
    ),
    Case(
        "a text with a lone surrogate ('\\udc80')",
        "token_activations",
        _token_activations("a\udc80b"),
        ValueError,
        r"The text holds a lone surrogate",
    ),
    Case(
        "context_len longer than the model's context",
        "harvest",
        _harvest(context_len=10_000),
        ValueError,
        r"context_len=10000 must be between 2 and the model's context, 256",
    ),
    Case(
        "n_tokens beyond the corpus",
        "harvest",
        _harvest(n_tokens=10**6),
        ValueError,
        r"n_tokens=1,000,000 is more than the \d+ tokens",
    ),
    Case("1-D activations", "train_sae", _train(torch.zeros(10)), ValueError, r"shape \[n_tokens, d_model\]"),
    Case(
        "integer activations",
        "train_sae",
        _train(torch.zeros(10, 4, dtype=torch.int64)),
        TypeError,
        r"floating-point activations",
    ),
    Case(
        "all-zero activations",
        "train_sae",
        _train(torch.zeros(10, 4), arch="relu", n_features=8),
        ValueError,
        r"Every sampled activation row is zero",
    ),
    Case(
        "an unknown option", "train_sae", _train(torch.randn(10, 4), bogus=1), TypeError, r"unknown options \['bogus'\]"
    ),
    Case(
        "l1=-5 (a penalty that rewards density)",
        "train_sae",
        _train(torch.randn(10, 4), arch="relu", l1=-5),
        ValueError,
        r"l1=-5 is out of range: pass a number in \[0, inf\)",
    ),
    Case(
        "n_steps=2.5",
        "train_sae",
        _train(torch.randn(10, 4), n_steps=2.5),
        ValueError,
        r"n_steps=2\.5 is not a whole number: pass one such as n_steps=2",
    ),
    Case(
        "checkpoint_every=-1",
        "train_sae",
        _train(torch.randn(10, 4), checkpoint_every=-1),
        ValueError,
        r"checkpoint_every=-1 is too small",
    ),
    Case(
        "lr=1e6 (the run explodes)",
        "train_sae",
        _train(lambda: torch.randn(300, 8), n_features=16, k=2, n_steps=5, batch_size=64, lr=1e6),
        FloatingPointError,
        r"diverged at step \d+.*Lower the learning rate \(lr=1e\+06; try 100000\)",
    ),
    Case(
        "feature 99 of a 32-feature SAE",
        "token_activations",
        _token_activations("The bridge", [99]),
        IndexError,
        r"feature 99 is out of range: this SAE has 32 features",
    ),
    Case("a blank text", "token_activations", _token_activations("   "), ValueError, r"is empty"),
    Case(
        "terms that are all blank",
        "steering_search",
        _steering_search(terms=["", "  "]),
        ValueError,
        r"No terms to score: pass what the steered text should say",
    ),
    Case("an empty query", "steering_search", _steering_search(query=""), ValueError, r"needs a non-empty query"),
    Case(
        "feature 40 of a 32-feature SAE",
        "output_scores",
        _output_score_out_of_range,
        IndexError,
        r"feature 40 is out of range: this SAE has 32 features",
    ),
    Case(
        "an SAE trained on another model (d_in 32 vs 64)",
        "token_activations",
        _sae_other_model,
        ValueError,
        r"reads 32-wide activations but tiny-gpt2 has d_model=64",
    ),
    Case(
        "an SAE trained on tiny-gemma (same width) used on tiny-gpt2",
        "token_activations",
        _sae_of_another_model_same_width("token_activations"),
        ValueError,
        r"trained on 'tiny-gemma' but the model in use is 'tiny-gpt2'.*check_provenance=False",
    ),
    Case(
        "an SAE trained on tiny-gemma (same width) used on tiny-gpt2",
        "steer",
        _sae_of_another_model_same_width("steer"),
        ValueError,
        r"trained on 'tiny-gemma' but the model in use",
    ),
    Case(
        "an SAE trained on layer 1 used at layer=0",
        "attribute",
        _sae_at_another_layer,
        ValueError,
        r"trained on layer 1 but layer=0 reads layer 0 of tiny-gpt2.*check_provenance=False",
    ),
    Case(
        "activations of layer 0 for an SAE of layer 1",
        "evaluate_sae",
        _evaluate_other_layer,
        ValueError,
        r"read at layer 0 but the SAE reads layer 1",
    ),
    Case(
        "residuals beyond float16's range stored as float16",
        "harvest_to_store",
        _store_float16_overflow,
        ValueError,
        r"dtype='float16' cannot hold tiny-gpt2's residuals at layer 0: [\d,]+ of [\d,]+ values .*"
        r"exceed 65,504.*Use dtype='float32'",
    ),
    Case(
        "'/dev/zero' (a device)",
        "load_sae",
        lambda t, m: load("/dev/zero"),
        ValueError,
        r"/dev/zero is not a regular file",
    ),
    Case("an empty path ''", "load_sae", lambda t, m: load(""), FileNotFoundError, r"load_sae\(''\) got an empty path"),
    Case("n_tokens=2.5", "harvest", _harvest(n_tokens=2.5), ValueError, r"n_tokens=2\.5 is not a whole number"),
    Case(
        "max_new_tokens=2.5",
        "steer",
        _analysis("steer", "The bridge", {0: 1.0}, units="activation", max_new_tokens=2.5),
        ValueError,
        r"max_new_tokens=2\.5 is not a whole number: pass one such as max_new_tokens=2",
    ),
    Case(
        "top_k=2.5",
        "feature_stats",
        _analysis("feature_stats", TEXTS, top_k=2.5, progress=False),
        ValueError,
        r"top_k=2\.5 is not a whole number",
    ),
    Case(
        "k=0",
        "logit_effects",
        _analysis("logit_effects", k=0, progress=False),
        ValueError,
        r"k=0 is too small: it must be at least 1",
    ),
    Case(
        "n=2.5",
        "token_activations",
        _token_activations("The bridge", n=2.5),
        ValueError,
        r"n=2\.5 is not a whole number",
    ),
    Case(
        "features='5' (a string)",
        "token_activations",
        _token_activations("The bridge", "5"),
        TypeError,
        r"features must be feature ids, e.g. \[3, 17\]",
    ),
    Case(
        "a number as the query (123)",
        "search_contexts",
        _search_contexts(123),
        TypeError,
        r"query must be a string, got int \(123\)",
    ),
    Case("n=-1", "search_contexts", _search_contexts("bridge", n=-1), ValueError, r"n=-1 is too small"),
    Case("one row of activations", "evaluate_sae", _evaluate_one_row, ValueError, r"got 1 row .*at least 2"),
    Case(
        "an SAE with 3 features",
        "feature_geometry",
        _geometry_of_three,
        ValueError,
        r"needs at least 4 features; this SAE has 3",
    ),
    Case(
        "a store folder that is a file",
        "harvest_to_store",
        _store_into("afile"),
        NotADirectoryError,
        r"directory='.*afile' is a file, not a folder",
    ),
    Case(
        "a store folder below a file",
        "harvest_to_store",
        _store_into("afile/store"),
        NotADirectoryError,
        r"directory='.*afile/store' is below .*afile, which is a file",
    ),
    Case(
        "a checkpoint_dir below a file (found before training starts)",
        "train_sae",
        _checkpoint_below_a_file,
        NotADirectoryError,
        r"checkpoint_dir='.*afile/ckpt' is below .*afile, which is a file",
    ),
    Case(
        "a memmap_dir below a file",
        "harvest",
        _harvest(memmap_dir="/etc/hostname/spill", ram_budget=1),
        NotADirectoryError,
        r"memmap_dir='/etc/hostname/spill' is below /etc/hostname",
    ),
    # where results go
    Case(
        "a folder holding the user's own files (notes.txt, src/)",
        "save_sae",
        _save_into_user_folder,
        FileExistsError,
        r"already holds files that saewidgets did not write \(notes\.txt, src\).*overwrite=True",
    ),
    Case(
        "the path of an existing file",
        "save_sae",
        _save_onto_file,
        NotADirectoryError,
        r"sae\.bin is a file, not a folder",
    ),
    Case("an empty path ''", "save_sae", _save_to_empty_path, ValueError, r"empty \(''\)"),
    # disk full
    Case("disk full while writing", "save_sae", _enospc_save_sae, OSError, r"disk is full"),
    Case("disk full while writing", "FeatureStats.save", _enospc_stats, OSError, r"disk is full"),
    Case("disk full while writing", "Activations.save", _enospc_acts, OSError, r"disk is full"),
    Case("disk full while writing a checkpoint", "train_sae", _enospc_checkpoint, OSError, r"disk is full"),
]


# Inputs that work with a warning (the call returns; the warning says what was done).
WARNING_CASES = [
    Case(
        "a text longer than the model's context (~800 tokens, the model reads 256)",
        "token_activations",
        _long_prompt("token_activations"),
        UserWarning,
        r"only its last 256 tokens are used",
    ),
    Case(
        "a prompt longer than the model's context",
        "attribute",
        _long_prompt("attribute"),
        UserWarning,
        r"only its last 256 tokens are used",
    ),
]


@dataclass
class Accepted:
    """An input that once failed deep inside a library and now does what was meant."""

    input: str
    where: str
    run: Callable[[Path, pytest.MonkeyPatch], Any]
    result: str  # what the user gets, for the table
    check: Callable[[Any], bool]

    @property
    def id(self) -> str:
        return re.sub(r"\W+", "-", f"{self.where} {self.input}").strip("-")[:80]


def _heatmap_bf16(tmp, mp):
    from saewidgets.widgets import TokenHeatmap

    return TokenHeatmap(tokens=["a", "b"], acts=torch.tensor([1.0, 2.0], dtype=torch.bfloat16)).values


ACCEPTED = [
    Accepted(
        "features=5 (one id, not a list)",
        "token_activations",
        _token_activations("The bridge", 5),
        "the activations of feature 5",
        lambda r: r.features == [5],
    ),
    Accepted(
        "layer=np.int64(1)",
        "attribute",
        _analysis("attribute", "The bridge", layer=np.int64(1)),
        "the attribution at layer 1",
        lambda r: torch.equal(r.scores, _analysis("attribute", "The bridge", layer=1)(None, None).scores),
    ),
    Accepted(
        "target=np.int64(5) (a token id from numpy)",
        "attribute",
        _analysis("attribute", "The bridge", target=np.int64(5)),
        "the attribution of token 5",
        lambda r: r.target_ids == (5,),
    ),
    Accepted(
        "a bfloat16 tensor of activations",
        "TokenHeatmap",
        _heatmap_bf16,
        "shown (cast to float32)",
        lambda r: r.dtype == np.float32 and r[:, 0].tolist() == [1.0, 2.0],
    ),
    Accepted(
        "batch_size=2.0 (a whole float, as JSON gives)",
        "harvest",
        _harvest(batch_size=2.0),
        "the same rows as batch_size=2",
        lambda r: len(r) == len(tiny_acts()),
    ),
]


# -- the tests ---------------------------------------------------------------------------------------------------


def run_case(case: Case, tmp: Path, mp: pytest.MonkeyPatch) -> BaseException:
    mp.chdir(tmp)  # a pickle that ran would drop its marker here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BaseException) as info:
            case.run(tmp, mp)
    assert not (tmp / "PWNED_MARKER").exists(), "unpickling ran code"
    return info.value


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error(case, tmp_path, monkeypatch):
    err = run_case(case, tmp_path, monkeypatch)
    assert isinstance(err, case.error), f"{type(err).__name__}: {err}"
    assert re.search(case.says, str(err), re.S), str(err)


def run_warning_case(case: Case, tmp: Path, mp: pytest.MonkeyPatch) -> Warning:
    mp.chdir(tmp)
    with pytest.warns(case.error) as record:
        case.run(tmp, mp)
    return next(w.message for w in record if isinstance(w.message, case.error))


@pytest.mark.parametrize("case", WARNING_CASES, ids=[c.id for c in WARNING_CASES])
def test_input_handled_with_a_warning(case, tmp_path, monkeypatch):
    message = run_warning_case(case, tmp_path, monkeypatch)
    assert re.search(case.says, str(message)), str(message)


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.id for c in ACCEPTED])
def test_input_accepted_as_meant(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert case.check(case.run(tmp_path, monkeypatch))


def test_disk_full_leaves_the_previous_files_intact(tmp_path, monkeypatch):
    """After each failed save above the previous version still loads, and no temporary file is left beside it."""
    from saewidgets.activations import Activations
    from saewidgets.analysis import FeatureStats
    from saewidgets.sae import load_sae

    for case, loader, name in (
        (_enospc_save_sae, load_sae, "sae"),
        (_enospc_stats, FeatureStats.load, "stats"),
        (_enospc_acts, Activations.load, "acts"),
    ):
        tmp = tmp_path / name
        tmp.mkdir()
        with monkeypatch.context() as mp:
            with pytest.raises(OSError):
                case(tmp, mp)
        loader(tmp / name)
        assert sorted(p.name for p in tmp.iterdir()) == [name], "a temporary file or folder was left behind"
        assert not [p.name for p in (tmp / name).iterdir() if p.name.startswith(".saewidgets-staged")]
    from saewidgets.sae.checkpoint import load_checkpoint

    tmp = tmp_path / "checkpoint"
    tmp.mkdir()
    with monkeypatch.context() as mp:
        with pytest.raises(OSError, match="disk is full"):
            _enospc_checkpoint(tmp, mp)
    assert load_checkpoint(tmp / "ckpt")["step"] == 2  # the checkpoint of the earlier, finished run
    assert sorted(p.name for p in (tmp / "ckpt").iterdir()) == ["checkpoint.pt"]


def render_table() -> str:
    """The markdown table: every case with the error users see (temporary paths shown as <tmp>)."""
    import tempfile

    lines = [
        "# Bad inputs and what they get",
        "",
        "Generated by `python tests/test_bad_inputs.py` from the cases in `tests/test_bad_inputs.py`, which also",
        "pin each error (`pytest tests/test_bad_inputs.py`); a test fails when this table and the code disagree.",
        "Faults (SIGKILL during training or a save, full disk, threads) are covered by `tests/test_reliability_*.py`",
        "and `tests/test_atomic_write.py` (saves keep the user's files; killed saves; a real full tmpfs), untrusted",
        "text and files by `tests/test_security_*.py`.",
        "",
        "| input | where | error | message |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
            tmp = Path(d).resolve()
            err = run_case(case, tmp, mp)
            message = str(err).replace(str(tmp), "<tmp>")
        message = re.sub(r"[\d,.]+ MiB free", "<n> MiB free", message)  # the machine's free space
        message = re.sub(r"\x1b\[[0-9;]*m", "", message)  # terminal bold in torch's messages
        message = re.sub(r"\s+", " ", message).replace("|", "\\|")
        lines.append(f"| {case.input} | `{case.where}` | `{type(err).__name__}` | {message} |")
    lines += ["", "## Handled with a warning", "", "| input | where | warning | message |", "|---|---|---|---|"]
    for case in WARNING_CASES:
        with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
            message = str(run_warning_case(case, Path(d).resolve(), mp))
        lines.append(f"| {case.input} | `{case.where}` | `{case.error.__name__}` | {message} |")
    lines += ["", "## Accepted as meant", "", "| input | where | result |", "|---|---|---|"]
    lines += [f"| {case.input} | `{case.where}` | {case.result} |" for case in ACCEPTED]
    return "\n".join(lines) + "\n"


def test_docs_table_is_current():
    assert DOC.exists(), "docs/bad_inputs.md is missing: run python tests/test_bad_inputs.py"
    assert DOC.read_text(encoding="utf-8") == render_table(), (
        "docs/bad_inputs.md is out of date: run python tests/test_bad_inputs.py"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render_table(), encoding="utf-8")
    print(f"wrote {DOC}")
