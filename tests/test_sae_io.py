"""SAE files: native and SAELens round trips (through the sae_lens package itself), Gemma Scope parameters, and a
clear refusal for every kind of broken file."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch

from saewidgets.sae import SAE, SAEConfig, SAEFileError, check_compatible, load_sae, save_sae

ARCHS = ["relu", "topk", "batchtopk", "jumprelu"]


def random_sae(arch: str, d_in: int = 16, n_features: int = 48, seed: int = 0) -> SAE:
    cfg = SAEConfig(
        d_in=d_in,
        n_features=n_features,
        architecture=arch,
        k=5 if "topk" in arch else None,
        input_scale=0.37,
        model_name="tiny-gemma",
        layer=1,
        site="model.layers.1",
        provenance={"steps": 10, "seed": seed},
    )
    sae = SAE(cfg, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + 1))
        sae.b_dec.normal_(0, 1, generator=torch.Generator().manual_seed(seed + 2))
        if hasattr(sae, "threshold"):
            sae.threshold.uniform_(0.05, 0.5, generator=torch.Generator().manual_seed(seed + 3))
    return sae.eval()


def inputs(d_in: int = 16) -> torch.Tensor:
    return torch.randn(64, d_in, generator=torch.Generator().manual_seed(9)) * 3


@pytest.mark.parametrize("arch", ARCHS)
def test_native_round_trip_is_exact(tmp_path, arch):
    sae = random_sae(arch)
    path = save_sae(sae, tmp_path / "sae")
    assert sorted(p.name for p in path.iterdir()) == [".saewidgets-files.json", "config.json", "sae.safetensors"]
    back = load_sae(path)
    assert back.cfg == sae.cfg
    assert back.fingerprint() == sae.fingerprint()
    for name, tensor in sae.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_saving_over_an_sae_replaces_it_whole(tmp_path):
    save_sae(random_sae("topk", seed=0), tmp_path / "sae")
    newer = random_sae("topk", seed=1)
    save_sae(newer, tmp_path / "sae")
    assert load_sae(tmp_path / "sae").fingerprint() == newer.fingerprint()
    assert [p.name for p in tmp_path.iterdir()] == ["sae"], "temporary folders were left behind"
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == [
        ".saewidgets-files.json",
        "config.json",
        "sae.safetensors",
    ]


def test_a_failed_save_leaves_the_previous_sae_untouched(tmp_path, monkeypatch):
    old = random_sae("relu", seed=0)
    save_sae(old, tmp_path / "sae")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_sae(random_sae("relu", seed=1), tmp_path / "sae")
    assert load_sae(tmp_path / "sae").fingerprint() == old.fingerprint()
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == [
        ".saewidgets-files.json",
        "config.json",
        "sae.safetensors",
    ]


def test_fingerprint_changes_with_the_weights():
    sae = random_sae("topk")
    before = sae.fingerprint()
    with torch.no_grad():
        sae.W_dec[3, 2] += 1e-3
    assert sae.fingerprint() != before and len(before) == 16


@pytest.mark.parametrize("arch", ARCHS)
def test_saelens_export_loads_in_sae_lens_and_encodes_the_same(tmp_path, arch):
    from sae_lens import SAE as LensSAE

    sae, x = random_sae(arch), inputs()
    save_sae(sae, tmp_path / "lens", format="saelens")
    cfg = json.loads((tmp_path / "lens" / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard", "batchtopk": "jumprelu"}.get(arch, arch)
    lens = LensSAE.load_from_disk(tmp_path / "lens")
    with torch.no_grad():
        torch.testing.assert_close(lens.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lens(x), sae(x), rtol=1e-5, atol=1e-4)
    back = load_sae(tmp_path / "lens")  # and back again, with saewidgets' own fields restored
    assert (back.cfg.architecture, back.cfg.k, back.cfg.layer, back.cfg.model_name) == (
        arch,
        sae.cfg.k,
        1,
        "tiny-gemma",
    )
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lens_arch", ["standard", "topk", "jumprelu"])
def test_an_sae_saved_by_sae_lens_loads_and_encodes_the_same(tmp_path, lens_arch):
    from sae_lens import SAE as LensSAE

    config = {
        "architecture": lens_arch,
        "d_in": 16,
        "d_sae": 40,
        "dtype": "float32",
        "device": "cpu",
        "metadata": {"model_name": "gpt2", "hook_name": "blocks.3.hook_resid_post"},
    }
    if lens_arch == "topk":
        config["k"] = 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lens = LensSAE.from_dict(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in lens.parameters():
            p.normal_(0, 0.3)
        if lens_arch == "jumprelu":
            lens.threshold.abs_()
    lens.save_model(tmp_path / "from_lens")
    sae, x = load_sae(tmp_path / "from_lens"), inputs()
    assert sae.cfg.architecture == {"standard": "relu"}.get(lens_arch, lens_arch)
    assert (sae.cfg.layer, sae.cfg.model_name, sae.cfg.site) == (3, "gpt2", "blocks.3.hook_resid_post")
    with torch.no_grad():
        assert (lens.encode(x) != 0).any()
        torch.testing.assert_close(sae.encode(x), lens.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(x), lens(x), rtol=1e-5, atol=1e-5)


def gemma_scope_params(d_in: int = 16, n_features: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "W_enc": rng.normal(size=(d_in, n_features)).astype(np.float32),
        "W_dec": rng.normal(size=(n_features, d_in)).astype(np.float32),
        "b_enc": rng.normal(size=n_features).astype(np.float32),
        "b_dec": rng.normal(size=d_in).astype(np.float32),
        "threshold": rng.uniform(0.5, 2, size=n_features).astype(np.float32),
    }


def test_gemma_scope_npz_loads_as_jumprelu_and_encodes_like_the_reference(tmp_path):
    p = gemma_scope_params()
    np.savez(tmp_path / "params.npz", **p)
    sae = load_sae(tmp_path)  # the folder, as downloaded
    assert sae.cfg.architecture == "jumprelu" and not sae.cfg.apply_b_dec_to_input
    x = inputs().numpy()
    pre = x @ p["W_enc"] + p["b_enc"]  # Gemma Scope's published JumpReLU forward
    reference = np.maximum(pre, 0) * (pre > p["threshold"])
    with torch.no_grad():
        np.testing.assert_allclose(sae.encode(torch.from_numpy(x)).numpy(), reference, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            sae.decode(torch.from_numpy(reference)).numpy(), reference @ p["W_dec"] + p["b_dec"], rtol=1e-5, atol=1e-4
        )


def test_gemma_scope_2_safetensors_with_lowercase_keys_loads(tmp_path):
    from safetensors.numpy import save_file

    p = gemma_scope_params()
    save_file({k.lower(): v for k, v in p.items()}, str(tmp_path / "params.safetensors"))
    sae = load_sae(tmp_path / "params.safetensors")
    assert torch.equal(sae.threshold, torch.from_numpy(p["threshold"]))


# -- broken files -------------------------------------------------------------------------------------------------


def test_truncated_weights_name_the_file(tmp_path):
    path = save_sae(random_sae("topk"), tmp_path / "sae")
    weights = path / "sae.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(SAEFileError, match=r"sae\.safetensors could not be read.*truncated or corrupt"):
        load_sae(path)


def test_corrupt_config_names_the_file(tmp_path):
    path = save_sae(random_sae("topk"), tmp_path / "sae")
    (path / "config.json").write_text('{"format": "saewidgets.sae/1", "d_in": 1')
    with pytest.raises(SAEFileError, match=r"config\.json is not valid JSON"):
        load_sae(path)


def test_missing_tensors_are_named(tmp_path):
    p = gemma_scope_params()
    del p["b_dec"]
    np.savez(tmp_path / "params.npz", **p)
    with pytest.raises(SAEFileError, match=r"params\.npz lacks b_dec"):
        load_sae(tmp_path / "params.npz")


def test_wrong_shapes_are_named(tmp_path):
    from safetensors.torch import save_file

    path = save_sae(random_sae("topk"), tmp_path / "sae")
    save_file({**random_sae("topk", n_features=50).state_dict()}, str(path / "sae.safetensors"))
    with pytest.raises(SAEFileError, match=r"W_enc has shape \(16, 50\) but the config .* needs \(16, 48\)"):
        load_sae(path)


def test_missing_config_field_is_named(tmp_path):
    path = save_sae(random_sae("relu"), tmp_path / "sae")
    config = json.loads((path / "config.json").read_text())
    del config["n_features"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SAEFileError, match=r"config is invalid.*n_features"):
        load_sae(path)


class _NotWeights:
    pass


@pytest.mark.parametrize("name", ["sae.pt", "sae.pkl"])
def test_a_pickle_is_refused_not_executed(tmp_path, name):
    (tmp_path / name).write_bytes(pickle.dumps({"W_enc": _NotWeights()}))
    with pytest.raises(SAEFileError, match=r"pickled Python objects.*refuses"):
        load_sae(tmp_path / name)


def test_an_npz_of_object_arrays_is_refused(tmp_path):
    np.savez(tmp_path / "params.npz", W_enc=np.array([_NotWeights()], dtype=object))
    with pytest.raises(SAEFileError, match="pickled Python objects"):
        load_sae(tmp_path / "params.npz")


def test_a_weights_only_torch_state_dict_loads(tmp_path):
    torch.save({k: torch.from_numpy(v) for k, v in gemma_scope_params().items()}, tmp_path / "sae.pt")
    assert load_sae(tmp_path / "sae.pt").cfg.architecture == "jumprelu"


def test_a_folder_without_an_sae_says_what_was_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SAEFileError, match=r"no SAE saewidgets can read.*cfg\.json.*params\.npz.*notes\.txt"):
        load_sae(tmp_path)


def test_an_unknown_path_is_not_found():
    with pytest.raises(FileNotFoundError, match="No SAE at"):
        load_sae("/no/such/sae")


def test_saelens_folder_without_weights_is_named(tmp_path):
    save_sae(random_sae("topk"), tmp_path / "lens", format="saelens")
    (tmp_path / "lens" / "sae_weights.safetensors").unlink()
    with pytest.raises(SAEFileError, match=r"has cfg\.json but no sae_weights\.safetensors"):
        load_sae(tmp_path / "lens")


def test_sae_for_another_model_width_names_both_numbers(tiny_gemma):
    sae = random_sae("topk", d_in=640)
    with pytest.raises(
        ValueError, match=rf"reads 640-wide activations but tiny-gemma has d_model={tiny_gemma.d_model}"
    ):
        check_compatible(sae, tiny_gemma, layer=1)
