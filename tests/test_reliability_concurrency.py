"""Concurrency: widget callbacks fired at once never trace the model concurrently and never deadlock; a generation
interrupted from inside (KeyboardInterrupt, an exception) leaves the model usable and giving the same results.

The tiny model's first decoder block is instrumented: a forward pre-hook records which thread is inside, sleeps a
little (widening the window in which an unguarded second trace would be seen), and the forward hook clears it.
A control test shows the instrument does see overlap when the lock is bypassed.

nnsight parses and compiles a trace site's source the first time it is entered, and CPython 3.11's AST converter
keeps its recursion depth in interpreter-wide state: two threads converting ASTs at once fail with "SystemError: AST
constructor recursion depth mismatch" (seen in about 1 run in 10). `AstOverlapDetector` makes that race
deterministic to test: it wraps ``ast.parse`` and ``compile`` with a dwell and counts entries while another thread
is inside, with nnsight's per-site caches emptied so every trace site is entered cold.
"""

from __future__ import annotations

import ast
import builtins
import threading
import time

import numpy as np
import pytest
import torch

from saewidgets import analysis
from saewidgets.models import tiny_model
from saewidgets.widgets import Explorer
from tiny_sae import tiny_topk_sae
import synthetic_results as syn

PROMPT = "The Golden Gate Bridge is in"
TIMEOUT = 120  # seconds before a thread that has not finished counts as deadlocked


class OverlapDetector:
    """Hooks on block 0: ``overlaps`` counts times a thread entered while another was inside."""

    def __init__(self, block: torch.nn.Module, dwell: float = 0.003) -> None:
        self.inside: int | None = None
        self.overlaps = 0
        self.entries = 0
        self.dwell = dwell
        self._guard = threading.Lock()
        self.handles = [block.register_forward_pre_hook(self.enter), block.register_forward_hook(self.leave)]

    def enter(self, module, args):
        with self._guard:
            self.entries += 1
            if self.inside is not None and self.inside != threading.get_ident():
                self.overlaps += 1
            self.inside = threading.get_ident()
        time.sleep(self.dwell)

    def leave(self, module, args, output):
        with self._guard:
            if self.inside == threading.get_ident():
                self.inside = None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class AstOverlapDetector:
    """While active, ``ast.parse`` and ``compile`` dwell a little and ``overlaps`` counts entries made while another
    thread is inside either (what CPython 3.11's AST converter cannot survive)."""

    def __init__(self, dwell: float = 0.002) -> None:
        self.inside: dict[int, str] = {}
        self.overlaps: list[tuple[str, str]] = []
        self.entries = 0
        self.dwell = dwell
        self._guard = threading.Lock()
        self._real = {"parse": ast.parse, "compile": builtins.compile}

    def _wrap(self, name):
        real = self._real[name]

        def wrapped(*args, **kwargs):
            me = threading.get_ident()
            with self._guard:
                self.entries += 1
                self.overlaps += [(name, other) for t, other in self.inside.items() if t != me]
                self.inside[me] = name
            try:
                time.sleep(self.dwell)
                return real(*args, **kwargs)
            finally:
                with self._guard:
                    self.inside.pop(me, None)

        return wrapped

    def __enter__(self) -> "AstOverlapDetector":
        from nnsight.tracing import globals as nnsight_caches

        nnsight_caches.BLOCKS.clear()  # every trace site is parsed and compiled again: the cold path
        nnsight_caches.SOURCES.clear()
        ast.parse, builtins.compile = self._wrap("parse"), self._wrap("compile")
        return self

    def __exit__(self, *exc) -> None:
        ast.parse, builtins.compile = self._real["parse"], self._real["compile"]


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("gpt2", seed=7)
    sae = tiny_topk_sae(model, n_features=48)
    texts = ["The Golden Gate Bridge is a suspension bridge in San Francisco.", "The Eiffel Tower is in Paris."]
    stats = analysis.feature_stats(model, sae, texts, top_k=3, progress=False)
    geometry = syn.geometry(48)
    geometry.fingerprint = stats.fingerprint
    return model, sae, stats, geometry


def run_threads(jobs, timeout=TIMEOUT):
    """Start every job on its own thread at once; return (errors, threads still alive after ``timeout``)."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def wrap(job):
        def run():
            barrier.wait()
            try:
                job()
            except BaseException as err:  # noqa: BLE001 - collected and asserted on
                errors.append(err)

        return run

    threads = [threading.Thread(target=wrap(job), daemon=True) for job in jobs]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return errors, [t for t in threads if t.is_alive()]


def test_the_overlap_detector_sees_unguarded_concurrent_forwards(setup):
    model = setup[0]
    detector = OverlapDetector(model.hf.transformer.h[0], dwell=0.01)
    ids = torch.tensor([model.encode(PROMPT)])
    try:
        errors, alive = run_threads([lambda: model.hf(ids) for _ in range(6)])
    finally:
        detector.remove()
    assert not errors and not alive
    assert detector.overlaps > 0, "control failed: the instrument cannot see overlapping forwards"


def test_many_widget_callbacks_at_once_never_trace_concurrently_or_deadlock(setup):
    model, sae, stats, geometry = setup
    ex = Explorer(model, sae, stats, geometry, text=PROMPT, prompt=PROMPT, background=True)
    ex.steering.multiple = 1.0
    detector = OverlapDetector(model.hf.transformer.h[0])
    jobs = [
        ex.refresh_heatmap,
        lambda: ex.attribution.attribute(" Paris"),
        ex.steering.generate,
        lambda: ex.select(5),
        lambda: ex.select(9),
        lambda: analysis.token_activations(model, sae, PROMPT, [1, 2]),
        lambda: analysis.attribute(model, sae, PROMPT, target=" Paris", n_ablate=3),
        lambda: analysis.steer(model, sae, PROMPT, {3: 2.0}, stats=stats, max_new_tokens=4),
        lambda: analysis.token_activations(model, sae, "Le pont est rouge.", [0]),
        lambda: analysis.attribute(model, sae, "The Eiffel Tower", target=None, n_ablate=2),
    ]
    try:
        errors, alive = run_threads(jobs)
        ex.steering.wait(TIMEOUT)
        ex.attribution._jobs.join(TIMEOUT)
    finally:
        detector.remove()
    assert not alive, "deadlock: callbacks still running after the timeout"
    assert detector.overlaps == 0, "two threads were inside the model at once"
    assert lock_is_free(model), "the model lock is still held"
    assert not errors, errors
    assert detector.entries >= len(jobs), "the callbacks did not all run the model"
    assert ex.steering.error == "" and ex.attribution.error == "" and ex.heatmap_error == ""
    assert ex.steering.steered_texts and ex.attribution.rows and ex.heatmap.tokens


def test_the_ast_overlap_detector_sees_unguarded_concurrent_parsing():
    with AstOverlapDetector(dwell=0.01) as detector:
        errors, alive = run_threads([lambda: ast.parse("x = 1") for _ in range(4)])
    assert not errors and not alive
    assert detector.overlaps, "control failed: the instrument cannot see concurrent parsing"


def test_callbacks_entering_trace_sites_cold_never_parse_source_concurrently(setup):
    """nnsight's source parsing (first entry of every trace site, and every plain ``Tensor.backward()`` call site,
    which nnsight patches) never runs in two threads at once: the AST race cannot occur."""
    model, sae, stats, geometry = setup
    ex = Explorer(model, sae, stats, geometry, text=PROMPT, prompt=PROMPT, background=False)
    ex.steering.multiple = 1.0
    jobs = [
        ex.refresh_heatmap,
        lambda: ex.attribution.attribute(" Paris"),
        ex.steering.generate,
        lambda: analysis.token_activations(model, sae, PROMPT, [1, 2]),
        lambda: analysis.attribute(model, sae, PROMPT, target=" Paris", n_ablate=3),
        lambda: analysis.steer(model, sae, PROMPT, {3: 2.0}, stats=stats, max_new_tokens=4),
    ]
    for _ in range(3):
        with AstOverlapDetector() as detector:
            errors, alive = run_threads(jobs)
        assert not errors and not alive, (errors, alive)
        assert detector.entries > 0, "nothing was parsed: the caches were not cold"
        assert not detector.overlaps, f"source parsed/compiled in two threads at once: {detector.overlaps[:5]}"
    assert ex.steering.error == "" and ex.attribution.error == "" and ex.heatmap_error == ""


def baseline(model, sae):
    acts = analysis.token_activations(model, sae, PROMPT, [0, 1, 2, 3])
    steered = analysis.steer(model, sae, PROMPT, {2: 5.0}, units="activation", max_new_tokens=5)
    return acts.acts.copy(), steered.default, steered.steered


def lock_is_free(model) -> bool:
    """Whether another thread can take the model's lock (an RLock: it must release it itself)."""
    got = []

    def probe():
        ok = model.lock.acquire(timeout=5)
        got.append(ok)
        if ok:
            model.lock.release()

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return got[0]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_generation_interrupted_from_inside_leaves_the_model_usable_and_unchanged(setup, interrupt):
    model, sae, _, _ = setup
    before = baseline(model, sae)
    calls = {"n": 0}
    real_encode = sae.encode

    def encode_then_interrupt(x):
        calls["n"] += 1
        if calls["n"] == 3:  # mid-generation: the prompt pass and one new token are done
            raise interrupt("user pressed stop")
        return real_encode(x)

    sae.encode = encode_then_interrupt
    try:
        with pytest.raises(BaseException) as info:
            analysis.steer(model, sae, PROMPT, {2: 5.0}, units="activation", max_new_tokens=8)
    finally:
        del sae.encode
    assert calls["n"] >= 3
    assert isinstance(info.value, interrupt) or interrupt.__name__ in repr(info.value), repr(info.value)
    assert lock_is_free(model)
    after = baseline(model, sae)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1:] == before[1:]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.hf.modules()), "hooks left behind"


def test_failing_generation_in_the_panel_is_reported_and_the_next_one_works(setup):
    model, sae, stats, geometry = setup
    fail = {"on": True}

    def steer_fn(prompt, feature, multiple):
        if fail["on"]:

            def boom(x):
                raise RuntimeError("generation cancelled")

            sae.encode = boom
            try:
                return analysis.steer(model, sae, prompt, {feature: multiple}, stats=stats, max_new_tokens=4)
            finally:
                del sae.encode
        return analysis.steer(model, sae, prompt, {feature: multiple}, stats=stats, max_new_tokens=4)

    from saewidgets.widgets import SteeringPanel

    panel = SteeringPanel(steer_fn, feature=3, multiple=1.0, prompt=PROMPT, background=True)
    assert panel.generate()
    panel.wait(TIMEOUT)
    assert "generation cancelled" in panel.error and not panel.busy
    fail["on"] = False
    assert panel.generate()
    panel.wait(TIMEOUT)
    assert panel.error == "" and panel.steered_texts and not panel.busy
