"""Resource bounds: a 1M-token harvest and its feature statistics stay within a memory budget, and prompts longer
than the model's context are handled (windowed by harvest, cut to their last tokens with a warning elsewhere).

The memory test measures the working set of `harvest` and `feature_stats` themselves, not the process's RSS (which
also counts allocator slack and the page cache of the memory-mapped file, and varied by 100+ MiB between runs):

- Python objects and numpy buffers with `tracemalloc` (numpy reports its data buffers to it): the peak of what the
  call allocated, exact and repeatable;
- torch's CPU tensors with the profiler's memory events (``profile_memory=True``: every allocation and free of
  torch's CPU allocator, with its size): the peak of their running total.

It runs in a child process on a 1-layer tiny model with a 1 MB ``ram_budget``, so the 1M x 128 float32 activations
(488 MiB) must spill to a memory-mapped file. The bounds are what the code is meant to hold (a few bytes of token
bookkeeping per token, plus one batch's working set that does not grow with the corpus), and the same child run
with leaks injected (every batch's tensors kept) trips them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

N_TOKENS = 1_000_000
D_MODEL = 128
MATRIX_MB = N_TOKENS * D_MODEL * 4 / 2**20  # 488 MiB of activations
# Bounds on what each call may hold, in MiB, as (bytes per token, fixed). Measured here (100k, 400k, 1M tokens):
# - harvest, numpy/Python: 17 B/token (int32 token ids of every document and of every window, int32 token, document
#   and position rows) and no fixed part; torch: 92-100 MiB, the tiny model's forward pass on one batch of 16 x 256
#   tokens (attention scores, MLP), whatever the corpus size; once 130 MiB, in a full CI run on a loaded machine
#   (89 MiB on the same commit idle, with any hash seed), so the fixed part has room for a second batch's scores.
# - feature_stats, numpy/Python: 8 B/token (int64 document ids of every row) plus 4.8 MiB (one 4,096-row block of
#   activations, copied out of the memory map, and its codes); torch: 8.7 MiB, the encoder on one block.
BOUNDS = {
    "harvest": {"numpy": (24, 8), "torch": (0, 176)},
    "feature_stats": {"numpy": (16, 8), "torch": (0, 32)},
}

CHILD = """
    import json, sys, time, tracemalloc
    import torch
    from torch.profiler import ProfilerActivity, profile
    torch.set_num_threads(2)
    import saewidgets.activations
    from saewidgets import harvest
    from saewidgets.analysis import feature_stats
    from saewidgets.models import tiny_model
    from saewidgets.sae import SAE, SAEConfig

    n_tokens, d_model, spill, leak = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

    def working_set(call):
        \"\"\"Run ``call``; return its result and the peaks (MiB) of what it allocated in numpy/Python and in torch.\"\"\"
        tracemalloc.start()
        t = time.time()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = call()
        numpy_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        held = torch_peak = 0
        for event in sorted(events, key=lambda e: e.start_ns()):
            held += event.nbytes()  # negative for a free
            torch_peak = max(torch_peak, held)
        return result, {"s": time.time() - t, "numpy": numpy_peak / 2**20, "torch": torch_peak / 2**20}

    kept = []  # where an injected leak keeps what it should have let go
    if "harvest-residuals" in leak:  # every batch's residual tensor kept (torch memory)
        trace = saewidgets.activations._trace_batch
        saewidgets.activations._trace_batch = lambda *a: kept.append(trace(*a)) or kept[-1]
    if "stats-blocks" in leak:  # every block of activations feature_stats reads kept (numpy memory)
        read = saewidgets.activations.Activations.torch
        saewidgets.activations.Activations.torch = lambda self, rows=None: kept.append(read(self, rows)) or kept[-1]

    model = tiny_model("gpt2", n_layers=1, d_model=d_model)
    sae = SAE(SAEConfig(d_in=d_model, n_features=64, architecture="topk", k=4, layer=0))
    text = " ".join(["The Golden Gate Bridge is a suspension bridge in San Francisco."] * 1000)
    texts = [text] * (n_tokens // 12_000 + 1)
    options = dict(layer=0, context_len=256, batch_size=16, ram_budget=2**20, memmap_dir=spill, progress=False)
    warm = harvest(model, texts[:1], n_tokens=8192, **options)  # torch/nnsight set-up is a fixed cost, not the call's
    feature_stats(model, sae, warm, progress=False, batch_size=4096)
    del warm
    kept.clear()
    acts, out = working_set(lambda: harvest(model, texts, n_tokens=n_tokens, **options))
    out = {"harvest": out, "spilled": type(acts.acts).__name__, "rows": len(acts)}
    stats, out["feature_stats"] = working_set(lambda: feature_stats(model, sae, acts, progress=False, batch_size=4096))
    out["stats_tokens"] = stats.n_tokens
    print(json.dumps(out))
"""


def measure_working_sets(n_tokens: int, spill, leak: str = "none") -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(n_tokens), str(D_MODEL), str(spill), leak],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    assert m["rows"] == n_tokens and m["stats_tokens"] == n_tokens
    return m


def over_bounds(m: dict, n_tokens: int) -> list[str]:
    """The bounds a measurement exceeds, each as 'call numpy/torch: measured > bound MiB'."""
    over = []
    for call, kinds in BOUNDS.items():
        for kind, (per_token, fixed) in kinds.items():
            bound = per_token * n_tokens / 2**20 + fixed
            if m[call][kind] > bound:
                over.append(f"{call} {kind}: {m[call][kind]:.1f} > {bound:.1f} MiB")
    return over


def report(m: dict, n_tokens: int) -> str:
    return f"{n_tokens:,} tokens: " + "; ".join(
        f"{call} {m[call]['s']:.1f} s, numpy/Python {m[call]['numpy']:.1f} MiB, torch {m[call]['torch']:.1f} MiB"
        for call in BOUNDS
    )


@pytest.mark.slow
def test_million_token_harvest_and_statistics_stay_within_the_memory_budget(tmp_path):
    m = measure_working_sets(N_TOKENS, tmp_path)
    print(f"\n{report(m, N_TOKENS)} (activations {MATRIX_MB:.0f} MiB)")
    assert m["spilled"] == "memmap", "the activations stayed in RAM despite ram_budget"
    for kinds in BOUNDS.values():  # each bound can tell a spilled harvest from one held in memory
        assert sum(per_token * N_TOKENS / 2**20 + fixed for per_token, fixed in kinds.values()) < 0.5 * MATRIX_MB
    assert over_bounds(m, N_TOKENS) == []


@pytest.mark.slow
def test_the_memory_bounds_trip_on_injected_leaks(tmp_path):
    """A test-only run that keeps every batch's tensors must go over the bounds the real run keeps: harvest keeps
    each batch's residuals (torch memory), feature_stats each block of activations it reads (numpy memory).

    250k tokens: each leak (122 MiB of activations) is then about as large as a batch's working set, so a leak of a
    quarter of the 1M-token run's activations would trip the bounds too. The bounds the leaks do not touch still
    hold, so a tripped bound says where the leak is."""
    n_tokens = 250_000
    m = measure_working_sets(n_tokens, tmp_path, leak="harvest-residuals,stats-blocks")
    print(f"\nwith the leaks, {report(m, n_tokens)}")
    assert [o.split(":")[0] for o in over_bounds(m, n_tokens)] == ["harvest torch", "feature_stats numpy"]


# -- prompts longer than the model's context -----------------------------------------------------------------------

LONG = "the bridge " * 400  # ~800 tokens; the tiny models read 256


@pytest.fixture(scope="module", params=["gpt2", "gemma"])
def model_and_sae(request):
    from saewidgets.models import tiny_model
    from tiny_sae import tiny_topk_sae

    model = tiny_model(request.param)
    return model, tiny_topk_sae(model)


def test_harvest_windows_a_text_longer_than_the_context_and_keeps_every_token(model_and_sae):
    from saewidgets import harvest

    model, _ = model_and_sae
    n = len(model.encode(LONG, add_bos=False))
    assert n > model.max_context
    acts = harvest(model, [LONG], layer=1, context_len=model.max_context, progress=False)
    assert len(acts) == n
    np.testing.assert_array_equal(acts.positions, np.arange(n))


@pytest.mark.parametrize("call", ["token_activations", "attribute", "steer"])
def test_analysis_of_a_prompt_longer_than_the_context_uses_its_end_and_warns(model_and_sae, call):
    from saewidgets import analysis

    model, sae = model_and_sae
    with pytest.warns(UserWarning, match=r"tokens but tiny-\w+ reads at most 256.*only its last \d+ tokens"):
        if call == "token_activations":
            result = analysis.token_activations(model, sae, LONG, [0, 1])
            assert len(result.tokens) <= model.max_context
        elif call == "attribute":
            result = analysis.attribute(model, sae, LONG, target=" bridge", n_ablate=2)
        else:
            result = analysis.steer(model, sae, LONG, {0: 1.0}, units="activation", max_new_tokens=3)
            assert len(result.steered) == 1


def test_the_end_of_a_long_prompt_gives_the_same_result_as_the_end_alone(model_and_sae):
    """Cutting keeps exactly the last tokens: a long prompt's activations equal those of its tail by itself."""
    from saewidgets import analysis

    model, sae = model_and_sae
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        long = analysis.token_activations(model, sae, LONG, [0, 1, 2])
    ids = model.encode(LONG, add_bos=False)
    tail = model.tokenizer.decode(ids[len(ids) - len(long.tokens) :])
    short = analysis.token_activations(model, sae, tail, [0, 1, 2])
    assert short.tokens == long.tokens
    np.testing.assert_allclose(short.acts, long.acts, rtol=1e-5, atol=1e-5)
