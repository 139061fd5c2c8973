"""`ActivationSource`: what `Activations` and `ActivationStore` both offer, and what only `Activations` adds."""

from __future__ import annotations

import numpy as np

from saewidgets.activation_source import ActivationSource, RowSource, is_activation_source
from saewidgets.activations import Activations, harvest
from saewidgets.store import ActivationStore, harvest_to_store

TEXTS = ["The Golden Gate Bridge is in San Francisco.", "Paris has the Eiffel Tower.", "def f(x): return x"]


def test_activations_and_the_disk_store_are_both_activation_sources(tiny_gpt2, tmp_path):
    in_memory = harvest(tiny_gpt2, TEXTS, 1, progress=False)
    store = harvest_to_store(tiny_gpt2, TEXTS, tmp_path / "store", 1, shard_tokens=8, progress=False)
    for source in (in_memory, store):
        assert isinstance(source, ActivationSource) and is_activation_source(source)
        assert len(source) == len(in_memory) and source.d_model == tiny_gpt2.d_model
        rows = source.subset(np.arange(3, 9))
        assert isinstance(rows, Activations)
        np.testing.assert_array_equal(rows.token_ids, in_memory.token_ids[3:9])
        np.testing.assert_allclose(rows.acts, in_memory.acts[3:9], atol=1e-5)  # harvested in other batches
        np.testing.assert_array_equal(source.context(5, 2, 1), in_memory.context(5, 2, 1))
        assert source.torch(slice(0, 4)).shape == (4, tiny_gpt2.d_model)
    # What only the in-memory kind has (the README says so): split by document, save and load.
    assert all(name in vars(Activations) for name in ("split", "save", "load"))
    assert not any(name in vars(ActivationStore) for name in ("split", "save", "load"))


def test_texts_and_bare_matrices_are_not_activation_sources():
    assert not is_activation_source(TEXTS) and not is_activation_source(np.zeros((3, 4)))
    assert not isinstance(np.zeros((3, 4)), RowSource)
