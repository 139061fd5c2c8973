"""Faithful loading of SAELens SAEs, checked against the sae_lens package's own classes and files: the ids and
settings SAELens configs carry (hf_hook_name, neuronpedia_id, normalize_activations), fold_W_dec_norm, and a
clear refusal, with the reason, for the architectures saewidgets' SAE cannot hold."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from saewidgets.sae import SAEFileError, load_sae, save_sae
from saewidgets.sae.io import from_saelens

sae_lens = pytest.importorskip("sae_lens")

NP_ID = "gemma-2-2b/12-gemmascope-res-16k"


def lens_sae(architecture: str, *, d_in: int = 16, d_sae: int = 40, seed: int = 0, **extra):
    """A sae_lens SAE of ``architecture`` with random weights (thresholds positive), as sae_lens builds it."""
    config = {
        "architecture": architecture,
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "metadata": {
            "model_name": "gemma-2-2b",
            "hook_name": "blocks.12.hook_resid_post",
            "hf_hook_name": "model.layers.12",
            "neuronpedia_id": NP_ID,
        },
        **extra,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lens = sae_lens.SAE.from_dict(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        if hasattr(lens, "threshold"):
            lens.threshold.abs_()
        lens.W_dec.mul_(torch.rand(d_sae, 1, generator=gen) * 3 + 0.2)  # decoder rows of unequal norms
    return lens.eval()


def inputs(d_in: int = 16) -> torch.Tensor:
    return torch.randn(64, d_in, generator=torch.Generator().manual_seed(9)) * 3


def saved(lens, path):
    lens.save_model(path)
    return path


def test_hf_hook_name_and_neuronpedia_id_are_kept_and_written_back(tmp_path):
    sae = load_sae(saved(lens_sae("jumprelu"), tmp_path / "lens"))
    assert (sae.cfg.site, sae.cfg.layer, sae.cfg.neuronpedia_id) == ("model.layers.12", 12, NP_ID)
    assert sae.cfg.provenance["saelens_hook_name"] == "blocks.12.hook_resid_post"
    save_sae(sae, tmp_path / "back", format="saelens")
    meta = json.loads((tmp_path / "back" / "cfg.json").read_text())["metadata"]
    assert (meta["hook_name"], meta["hf_hook_name"], meta["neuronpedia_id"]) == (
        "blocks.12.hook_resid_post",
        "model.layers.12",
        NP_ID,
    )
    again = sae_lens.SAE.load_from_disk(tmp_path / "back")
    assert again.cfg.metadata.neuronpedia_id == NP_ID and again.cfg.metadata.hf_hook_name == "model.layers.12"
    assert load_sae(tmp_path / "back").cfg.neuronpedia_id == NP_ID  # and in the native format too
    save_sae(sae, tmp_path / "native")
    assert load_sae(tmp_path / "native").cfg == sae.cfg


def test_a_release_config_from_sae_lens_keeps_its_ids():
    """What `load_sae(release, sae_id)` does once sae_lens has downloaded the SAE (no network here)."""
    lens = lens_sae("standard")
    sae = from_saelens(lens.cfg.to_dict(), dict(lens.state_dict()), "gemma-scope-2b-pt-res/layer_12/width_16k")
    assert (sae.cfg.neuronpedia_id, sae.cfg.site) == (NP_ID, "model.layers.12")
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), lens.encode(x), rtol=1e-5, atol=1e-5)


def test_expected_average_only_in_without_a_factor_reads_inputs_raw_as_sae_lens_does(tmp_path):
    lens = lens_sae("standard", normalize_activations="expected_average_only_in")
    with pytest.warns(UserWarning, match="norm_scaling_factor"):
        sae = load_sae(saved(lens, tmp_path / "lens"))
    assert sae.cfg.normalize_activations == "expected_average_only_in" and sae.cfg.input_scale == 1.0
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), lens.encode(x), rtol=1e-5, atol=1e-5)


def test_expected_average_only_in_with_its_factor_encodes_like_sae_lens_after_folding_it(tmp_path):
    lens = lens_sae("jumprelu", normalize_activations="expected_average_only_in")
    config, state = lens.cfg.to_dict(), {k: v.clone() for k, v in lens.state_dict().items()}
    sae = from_saelens({**config, "norm_scaling_factor": 0.25}, state, "release/with-factor")
    assert sae.cfg.input_scale == 0.25
    lens.fold_activation_norm_scaling_factor(0.25)  # what sae_lens.SAE.from_pretrained does with the factor
    x = inputs()
    with torch.no_grad():
        assert (lens.encode(x) != 0).any()
        torch.testing.assert_close(sae.encode(x), lens.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(x), lens(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("normalize", ["constant_norm_rescale", "layer_norm"])
def test_per_token_normalisations_are_refused_with_the_reason(tmp_path, normalize):
    path = saved(lens_sae("standard", normalize_activations=normalize), tmp_path / "lens")
    with pytest.raises(SAEFileError, match=f"{normalize}.*every token by its own norm"):
        load_sae(path)


@pytest.mark.parametrize("architecture", ["standard", "jumprelu"])
def test_fold_W_dec_norm_matches_sae_lens_and_keeps_the_reconstruction(tmp_path, architecture):
    lens = lens_sae(architecture)
    path = saved(lens, tmp_path / "lens")
    plain, folded = load_sae(path), load_sae(path, fold_W_dec_norm=True)
    torch.testing.assert_close(folded.W_dec.norm(dim=1), torch.ones(40))
    assert folded.cfg.provenance["W_dec_norm_folded"] and folded.fingerprint() != plain.fingerprint()
    lens.fold_W_dec_norm()
    x = inputs()
    with torch.no_grad():
        assert (lens.encode(x) != 0).any()
        torch.testing.assert_close(folded.encode(x), lens.encode(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(folded(x), plain(x), rtol=1e-4, atol=1e-4)


def test_fold_W_dec_norm_is_refused_for_topk_whose_selection_it_would_change(tmp_path):
    path = saved(lens_sae("topk", k=6), tmp_path / "lens")
    with pytest.raises(SAEFileError, match="which latents a TopK SAE selects"):
        load_sae(path, fold_W_dec_norm=True)
    assert load_sae(path).cfg.architecture == "topk"


@pytest.mark.parametrize(
    "architecture, extra, reason",
    [
        ("gated", {}, "gating path"),
        ("transcoder", {"d_out": 16, "apply_b_dec_to_input": False}, "reads one site and writes another"),
        ("jumprelu_skip_transcoder", {"d_out": 16, "apply_b_dec_to_input": False}, "skip path"),
    ],
)
def test_unsupported_saelens_architectures_say_which_and_why(tmp_path, architecture, extra, reason):
    config = {
        "architecture": architecture,
        "d_in": 16,
        "d_sae": 40,
        "dtype": "float32",
        "device": "cpu",
        "metadata": {
            "model_name": "gpt2",
            "hook_name": "blocks.3.ln2.hook_normalized",
            "hook_name_out": "blocks.3.hook_mlp_out",
        },
        **extra,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lens = sae_lens.SAE.from_dict(config)
    path = saved(lens, tmp_path / architecture)
    with pytest.raises(SAEFileError, match=f"{architecture!r} is not supported by saewidgets yet: .*{reason}"):
        load_sae(path)
