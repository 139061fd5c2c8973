"""Special-token strings inside untrusted text stay text ("<bos>" is five characters), unless the caller says
the text carries special tokens on purpose (``split_special_tokens=False``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saewidgets import harvest, token_activations
from saewidgets.models import tiny_model
from saewidgets.sae import SAE, SAEConfig
from saewidgets.store import ActivationStore, harvest_to_store

TEXT = "hi <bos> there <eos> and <|endoftext|>"


@pytest.fixture(scope="module")
def gemma():
    return tiny_model("gemma")


def special_ids(model) -> set[int]:
    return set(model.tokenizer.all_special_ids)


def test_harvest_keeps_special_token_strings_as_text_by_default(gemma):
    rows = harvest(gemma, [TEXT], layer=1, progress=False)
    assert not special_ids(gemma) & set(rows.token_ids.tolist()), "a special token came out of plain text"
    assert gemma.bos_id not in rows.token_ids  # no BOS residual (a huge outlier) slipped into the training data
    on_purpose = harvest(gemma, [TEXT], layer=1, progress=False, split_special_tokens=False)
    assert gemma.bos_id in on_purpose.token_ids and len(on_purpose) < len(rows)


def test_token_activations_shows_the_characters_instead_of_dropping_the_token(gemma):
    sae = SAE(
        SAEConfig(d_in=gemma.d_model, n_features=8, k=2, model_name="tiny-gemma", layer=1),
        torch.Generator().manual_seed(0),
    )
    shown = "".join(token_activations(gemma, sae, TEXT, [0]).tokens)
    assert shown == TEXT
    parsed = "".join(token_activations(gemma, sae, TEXT, [0], split_special_tokens=False).tokens)
    assert "<bos>" not in parsed  # parsed into BOS, which analyses leave out


def test_the_store_harvests_like_harvest_and_records_the_choice(gemma, tmp_path):
    store = harvest_to_store(gemma, [TEXT, "plain text"], tmp_path / "store", layer=1, progress=False)
    reference = harvest(gemma, [TEXT, "plain text"], layer=1, progress=False)
    np.testing.assert_array_equal(np.asarray(store.token_ids), reference.token_ids)
    assert ActivationStore(tmp_path / "store").manifest["settings"]["split_special_tokens"] is True
