"""The remote (NDIF) path, offline through nnsight's ``remote="local"`` simulation: harvesting, steering with small
requests, attribution, and clear errors that never show the API key."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from saewidgets import load_model
from saewidgets.activations import harvest
from saewidgets.remote import FeatureEdit, RemoteModelError, steered_generate
from saewidgets.sae import SAE, SAEConfig

SECRET = "ndif-test-key-0123456789"
PROMPTS = ["The bridge in the fog", "Paris is"]


class _NoSaewidgets:
    """A module finder that, like an NDIF server, has no saewidgets to import."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "saewidgets" or name.startswith("saewidgets."):
            raise ModuleNotFoundError(f"No module named {name!r} (NDIF has no saewidgets)", name=name)
        return None


@pytest.fixture(autouse=True)
def server_without_saewidgets(monkeypatch):
    """nnsight's simulation hides modules that are not installed while it deserializes a request; saewidgets is
    installed here, so it also hides saewidgets, as a real NDIF server lacks it: a trace that referred to
    saewidgets' code instead of shipping it would fail here as it would there."""
    from nnsight.intervention.backends.local import LocalSimulationBackend

    hide, restore = LocalSimulationBackend._hide_local_modules, LocalSimulationBackend._restore

    def hide_saewidgets_too(self):
        hidden = hide(self)
        sys.meta_path.insert(0, _NoSaewidgets)
        return hidden

    def restore_saewidgets(self, hidden):
        sys.meta_path.remove(_NoSaewidgets)
        restore(self, hidden)

    monkeypatch.setattr(LocalSimulationBackend, "_hide_local_modules", hide_saewidgets_too)
    monkeypatch.setattr(LocalSimulationBackend, "_restore", restore_saewidgets)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """The tiny Gemma saved as a checkpoint folder: what nnsight loads by 'repo id' (here a path, offline)."""
    from saewidgets.models.tiny import tiny_hf_model

    folder = tmp_path_factory.mktemp("tiny-gemma")
    model, tokenizer = tiny_hf_model("gemma")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def remote(tiny_folder):
    return load_model(str(tiny_folder), remote="local")


@pytest.fixture(scope="module")
def local(tiny_folder):
    return load_model(str(tiny_folder))


def make_sae(arch: str, n_features: int = 4096, d: int = 64) -> SAE:
    k = 8 if arch in ("topk", "batchtopk") else None
    sae = SAE(
        SAEConfig(d_in=d, n_features=n_features, architecture=arch, k=k, layer=1, input_scale=0.7),
        torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
        if arch == "jumprelu":
            sae.threshold.fill_(0.2)
    return sae.eval()


def batch(model, prompts):
    ids = [model.encode(p) for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), model.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, r in enumerate(ids):
        input_ids[row, width - len(r) :], mask[row, width - len(r) :] = torch.tensor(r), 1
    return input_ids, mask


@pytest.fixture
def payloads(monkeypatch):
    """Sizes in bytes of every request serialized for NDIF (as nnsight's remote backends would send them)."""
    from nnsight.schema.request import RequestModel

    sizes: list[int] = []
    real = RequestModel.serialize.__func__

    def recording(cls, tracer, compress=False):
        blob = real(cls, tracer, compress)
        sizes.append(len(blob))
        return blob

    monkeypatch.setattr(RequestModel, "serialize", classmethod(recording))
    return sizes


def test_remote_harvest_equals_local_harvest(remote, local, payloads):
    assert "NDIF" in repr(remote) and remote.remote == "local"
    far = harvest(remote, PROMPTS, layer=1, progress=False)
    near = harvest(local, PROMPTS, layer=1, progress=False)
    assert payloads, "the harvest went through the serialized remote path"
    np.testing.assert_allclose(far.acts, near.acts, atol=1e-5)


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "batchtopk"])
def test_feature_edit_equals_the_full_sae_clamp(arch):
    sae = make_sae(arch)
    hidden = torch.randn(2, 5, 64) * 3
    values = {7: 4.0, 123: 0.0, 4000: 2.5}
    f = sae.encode(hidden)
    clamped = f.clone()
    clamped[..., list(values)] = torch.tensor(list(values.values()))
    expected = sae.decode(clamped) - sae.decode(f)
    torch.testing.assert_close(FeatureEdit.of(sae, values)(hidden), expected, atol=1e-4, rtol=1e-4)
    added = FeatureEdit.of(sae, values, mode="add")(hidden)
    expected_add = sum(v * sae.W_dec[i] for i, v in values.items()) / 0.7
    torch.testing.assert_close(added[0, 0], expected_add, atol=1e-5, rtol=1e-5)


def test_topk_feature_edit_is_exact_where_the_feature_is_in_the_top_k():
    sae = make_sae("topk")
    hidden = torch.randn(64, 64) * 3
    f = sae.encode(hidden)
    feature = int(f.count_nonzero(0).argmax())
    active = f[:, feature] > 0
    edit = FeatureEdit.of(sae, {feature: 5.0})
    torch.testing.assert_close(edit.activations(hidden)[active, 0], f[active, feature])


def test_remote_steering_ships_only_the_steered_features_and_matches_local(remote, local, payloads):
    sae = make_sae("relu")
    sae_bytes = sum(p.numel() * p.element_size() for p in sae.parameters())
    edit = FeatureEdit.of(sae, {7: 6.0, 99: 3.0})
    ids, mask = batch(remote, PROMPTS)
    far = steered_generate(
        remote, 1, edit, ids, mask, max_new_tokens=4, do_sample=False, pad_token_id=remote.tokenizer.pad_token_id
    )
    near = steered_generate(
        local, 1, edit, ids, mask, max_new_tokens=4, do_sample=False, pad_token_id=local.tokenizer.pad_token_id
    )
    assert torch.equal(far, near), "the remote path generates what the local one does"
    request = payloads[-1]
    assert request < 64_000 and request < sae_bytes / 20, f"request {request:,} B vs SAE {sae_bytes:,} B"

    def whole_sae_edit(hidden):  # what shipping the SAE would cost: the measurement must see it
        return sae.decode(sae.encode(hidden)) - sae.decode(sae.encode(hidden))

    steered_generate(
        remote,
        1,
        whole_sae_edit,
        ids,
        mask,
        max_new_tokens=1,
        do_sample=False,
        pad_token_id=remote.tokenizer.pad_token_id,
    )
    assert payloads[-1] > sae_bytes


def test_steering_edit_leaves_unsteered_rows_and_masked_prompt_positions_alone(local):
    sae = make_sae("relu")
    ids, mask = batch(local, PROMPTS)
    plain = steered_generate(
        local,
        1,
        lambda h: torch.zeros_like(h),
        ids,
        mask,
        max_new_tokens=3,
        do_sample=False,
        pad_token_id=local.tokenizer.pad_token_id,
    )
    edit = FeatureEdit.of(sae, {7: 50.0}, mode="add")
    both = steered_generate(
        local,
        1,
        edit,
        torch.cat([ids, ids]),
        torch.cat([mask, mask]),
        max_new_tokens=3,
        first=2,
        prompt_mask=mask[:, :, None],
        do_sample=False,
        pad_token_id=local.tokenizer.pad_token_id,
    )
    assert torch.equal(both[:2], plain), "rows before `first` are the default continuation"


def test_attribution_runs_through_the_remote_path(remote, local, payloads):
    from saewidgets.analysis import attribute

    sae = make_sae("relu")
    far = attribute(remote, sae, PROMPTS[0], n_ablate=2)
    near = attribute(local, sae, PROMPTS[0], n_ablate=2)
    torch.testing.assert_close(far.scores, near.scores, atol=1e-4, rtol=1e-4)
    assert max(payloads) < sum(p.numel() * p.element_size() for p in sae.parameters()), "the SAE stays local"


def test_missing_api_key_says_how_to_set_one(monkeypatch):
    from nnsight import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    with pytest.raises(RemoteModelError, match="NDIF_API_KEY"):
        load_model("google/gemma-2-2b", remote=True)


def test_unknown_model_is_named_without_the_key(monkeypatch, tmp_path):
    monkeypatch.setenv("NDIF_API_KEY", SECRET)
    with pytest.raises(RemoteModelError, match="Could not find the model") as info:
        load_model(str(tmp_path / "no-such-model"), remote=True)
    assert SECRET not in str(info.value)


def test_queue_timeout_gets_a_clear_message_without_the_key(remote, monkeypatch):
    import httpx
    from nnsight.intervention.backends.local import LocalSimulationBackend

    def times_out(self, tracer):
        raise httpx.ReadTimeout(f"timed out waiting in the queue (key {SECRET})")

    monkeypatch.setenv("NDIF_API_KEY", SECRET)
    monkeypatch.setattr(LocalSimulationBackend, "__call__", times_out)
    with pytest.raises(RemoteModelError, match="in time") as info:
        harvest(remote, PROMPTS, layer=1, progress=False)
    assert SECRET not in str(info.value) and info.value.__cause__ is None
    assert SECRET not in repr(remote)


@pytest.mark.parametrize(
    "status, message",
    [(401, "refused the API key"), (404, "does not host"), (500, "failed")],
)
def test_server_answers_become_readable_errors(status, message, monkeypatch):
    import httpx

    from saewidgets.remote import translate_error

    monkeypatch.setenv("NDIF_API_KEY", SECRET)
    response = httpx.Response(status, request=httpx.Request("POST", "https://ndif.example/request"))
    error = httpx.HTTPStatusError(f"HTTP {status} for key {SECRET}", request=response.request, response=response)
    readable = translate_error(error, "google/gemma-2-2b")
    assert message in str(readable) and SECRET not in str(readable)
    assert translate_error(ValueError("a bug in my own code"), "m") is None, "user errors pass through unchanged"


def test_steer_runs_remotely_with_only_the_steered_rows_in_the_request(remote, local, payloads):
    from saewidgets.analysis import steer

    sae = make_sae("relu")
    payloads.clear()
    far = steer(remote, sae, PROMPTS[0], {3: 4.0}, units="activation", max_new_tokens=3)
    near = steer(local, sae, PROMPTS[0], {3: 4.0}, units="activation", max_new_tokens=3)
    assert (far.default, far.steered) == (near.default, near.steered)
    assert payloads and max(payloads) < sum(p.numel() * p.element_size() for p in sae.parameters())


def test_steering_search_on_a_remote_model_searches_context_hits_only_and_says_so(remote, local):
    """Promoters read the unembedding, which stays on NDIF: the search warns and does what promoters=0 does."""
    from saewidgets.analysis import feature_stats, promoting_features, steering_search

    sae = make_sae("topk", n_features=64)
    stats = feature_stats(local, sae, harvest(local, PROMPTS * 3, layer=1, progress=False), progress=False)
    options = dict(terms="bridge", candidates=4, shortlist=2, prompts=PROMPTS[:1], max_new_tokens=3, progress=False)
    with pytest.warns(UserWarning) as far:
        assert steering_search(remote, sae, stats, "the", **options) == []
    with pytest.warns(UserWarning) as near:
        assert steering_search(local, sae, stats, "the", promoters=0, **options) == []
    said = [str(w.message) for w in far]
    assert "remote model keeps on NDIF: searching the context hits only" in said[0]
    # the same shortlist, scores and trial text as the local search without promoters (no trial steered here)
    assert said[1:] == [str(w.message) for w in near] and "feature" in said[1]
    with pytest.raises(ValueError, match="a remote model keeps them on NDIF"):
        promoting_features(remote, sae, "bridge")
