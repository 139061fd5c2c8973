"""Soak: hundreds of rapid interactions with the live Explorer (select, steer, attribute, heatmap, search, and their
Stop buttons) from several threads at once, on a tiny model with the real analysis behind every view.

It must end with no error shown or raised, no deadlock, the model lock free and no hook left behind, every view
usable afterwards, and no growth in memory: the heap in use (glibc's count of bytes malloc has handed out and not
got back) and the number of live Python objects after the soak are compared with a warm-up of the same mix, so
first-use caches (nnsight's parsed trace sites, tokenizer caches) are not counted as growth.
"""

from __future__ import annotations

import ctypes
import gc
import random
import threading
import time

import pytest

from saewidgets import analysis
from saewidgets.models import tiny_model
from saewidgets.widgets import Explorer
from tiny_sae import tiny_topk_sae
import synthetic_results as syn

PROMPT = "The Golden Gate Bridge is in"
TEXT = "The fog rolls over the Golden Gate Bridge in San Francisco every morning."
N_THREADS = 4
N_INTERACTIONS = 200
TIMEOUT = 120
# Allowed growth from the end of the warm-up to the end of the soak. A view keeping each result it showed, or a
# trace leaving its saved values behind, grows both by far more over 200 interactions.
HEAP_GROWTH_MB = 24
OBJECT_GROWTH = 3000


def heap_mb() -> float:
    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        ]

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc's mallinfo2 (Linux, glibc >= 2.33) to count the heap in use")
    mallinfo2.restype = Mallinfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def footprint() -> tuple[float, int]:
    gc.collect()
    return heap_mb(), len(gc.get_objects())


@pytest.fixture(scope="module")
def explorer():
    model = tiny_model("gpt2", seed=11)
    sae = tiny_topk_sae(model, n_features=48)
    texts = [
        "The Golden Gate Bridge is a suspension bridge in San Francisco.",
        "The Eiffel Tower is in Paris.",
        "Fog rolls in over the bay at dawn.",
    ]
    stats = analysis.feature_stats(model, sae, texts, top_k=3, progress=False)
    geometry = syn.geometry(48)
    geometry.fingerprint = stats.fingerprint
    ex = Explorer(model, sae, stats, geometry, text=TEXT, prompt=PROMPT, background=True)
    return ex, model


def interactions(ex: Explorer, rng: random.Random):
    """One user action at random, as the frontend sends it (or, for selection, as a click sets it). Some actions
    then wait for their view's job, as a user reading the result would; the others are fired and forgotten."""

    def message(view, event, **extra):
        return lambda: ex._on_frontend_msg(ex, {"view": view, "msg": {"event": event, **extra}}, [])

    def then_wait(action, jobs):
        def run():
            action()
            if rng.random() < 0.5:
                jobs.join(TIMEOUT)

        return run

    # Features that fired: steering one that never fired is refused with its own message (tested below), which
    # would stay shown whenever the soak's last generation happened to land on one (a timing-dependent failure).
    fired = [f for f in range(48) if float(ex.stats.max_act[f]) > 0]
    actions = [
        lambda: ex.select(rng.choice(fired)),
        then_wait(message("steering", "generate"), ex.steering._jobs),
        message("steering", "stop"),
        then_wait(message("attribution", "attribute", target=rng.choice([" Paris", " the", ""])), ex.attribution._jobs),
        message("attribution", "stop"),
        then_wait(
            lambda: ex._on_frontend_msg(ex, {"event": "heatmap", "text": rng.choice([TEXT, PROMPT])}, []),
            ex._heatmap_jobs,
        ),
        lambda: ex._on_frontend_msg(ex, {"event": "heatmap_stop"}, []),
        message("map", "search", query=rng.choice(["bridge", "Paris", "fog", "zzz"])),
    ]
    weights = [4, 3, 1, 3, 1, 3, 1, 2]
    return rng.choices(actions, weights)[0]


def soak(ex: Explorer, n: int, seed: int) -> tuple[list[BaseException], list[threading.Thread]]:
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        rng = random.Random(seed * 100 + k)
        try:
            for _ in range(n // N_THREADS):
                interactions(ex, rng)()
                time.sleep(rng.uniform(0, 0.03))
        except BaseException as err:  # noqa: BLE001 - collected and asserted on
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    ex.wait(max(1.0, deadline - time.monotonic()))
    return errors, [t for t in threads if t.is_alive()]


def model_is_clean(model) -> bool:
    got = []
    probe = threading.Thread(target=lambda: got.append(model.lock.acquire(timeout=5) and (model.lock.release() or 1)))
    probe.start()
    probe.join()
    return bool(got and got[0]) and not any(m._forward_hooks or m._forward_pre_hooks for m in model.hf.modules())


def shown_errors(ex: Explorer) -> list[str]:
    """Errors the views show, other than a Stop the soak itself pressed."""
    return [e for e in (ex.steering.error, ex.attribution.error, ex.heatmap_error) if e not in ("", "stopped")]


@pytest.mark.slow
def test_two_hundred_rapid_interactions_from_several_threads(explorer):
    ex, model = explorer
    errors, alive = soak(ex, 48, seed=1)  # warm-up: first-use caches fill here
    assert not errors and not alive and not shown_errors(ex), (errors, alive, shown_errors(ex))
    heap0, objects0 = footprint()

    passes = []
    handle = model.hf.transformer.h[0].register_forward_hook(lambda *_: passes.append(1))
    started = time.monotonic()
    try:
        errors, alive = soak(ex, N_INTERACTIONS, seed=2)
    finally:
        handle.remove()
    elapsed = time.monotonic() - started
    assert not alive, "deadlock: interactions still running after the timeout"
    assert not errors, errors[:3]
    assert not shown_errors(ex), shown_errors(ex)
    assert not (ex.steering.busy or ex.attribution.busy), "a view still says it is busy"
    assert model_is_clean(model), "the model lock is held or a hook was left behind"

    heap1, objects1 = footprint()
    print(
        f"\nsoak: {N_INTERACTIONS} interactions on {N_THREADS} threads in {elapsed:.1f} s, {len(passes)} model "
        f"passes; heap {heap1 - heap0:+.1f} MiB, {objects1 - objects0:+d} live objects"
    )
    assert len(passes) > 200, "the soak hardly ran the model"
    assert heap1 - heap0 < HEAP_GROWTH_MB
    assert objects1 - objects0 < OBJECT_GROWTH

    # every view still works, and shows a complete result
    ex.select(7)
    assert ex.steering.generate(wait=True) and ex.steering.error == "" and ex.steering.steered_texts
    assert ex.attribution.attribute(" Paris", wait=True) and ex.attribution.error == "" and ex.attribution.rows
    assert ex.refresh_heatmap(wait=True) and ex.heatmap_error == "" and ex.heatmap.tokens


def test_steering_a_feature_that_never_fired_says_so_and_the_panel_keeps_working(explorer):
    """A feature with no activations in the statistics has no max to take a multiple of: Generate shows why (not a
    crash, not an empty result), and the next feature that fired steers as usual."""
    ex, _ = explorer
    max_act = [float(ex.stats.max_act[f]) for f in range(48)]
    never = next(f for f, m in enumerate(max_act) if m <= 0)
    fired = next(f for f, m in enumerate(max_act) if m > 0)
    ex.select(never)
    ex._on_frontend_msg(ex, {"view": "steering", "msg": {"event": "generate"}}, [])
    ex.wait(TIMEOUT)
    assert f"Feature {never} never fired" in ex.steering.error, ex.steering.error
    assert "select a feature that fired" in ex.steering.error and "units=" not in ex.steering.error  # a widget's advice
    ex.select(fired)
    ex._on_frontend_msg(ex, {"view": "steering", "msg": {"event": "generate"}}, [])
    ex.wait(TIMEOUT)
    assert ex.steering.error == "" and ex.steering.steered_feature == fired, ex.steering.error
