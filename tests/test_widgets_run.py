"""RunView: one long call (statistics, a harvest, the demo pipeline) run off the kernel's thread on a tiny model,
with its progress as the call counts it, a Stop that leaves no result, errors in one line, one run at a time.

A stop "mid-way" is pressed from the view's own progress: once the statistics have reported a few batches done, so
the call has done work and has work left when it stops."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from test_cancel import TEXTS, model_is_clean

from saewidgets import analysis, harvest
from saewidgets.models import tiny_model
from saewidgets.progress import Progress, progress_bar, progress_iter, reporting
from saewidgets.sae import SAE
from saewidgets.widgets import RunView
from saewidgets.widgets import run_view
from tiny_sae import tiny_topk_sae

BATCH = 16  # tokens per statistics batch: the tiny corpus gives ~20 batches
MORE_TEXTS = [f"{text} ({j})" for j in range(4) for text in TEXTS]  # 48 documents: 3 harvest batches of 16


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("gpt2", seed=3)
    sae = tiny_topk_sae(model)
    acts = harvest(model, TEXTS, layer=1, progress=False)
    return model, sae, acts


def assert_same_stats(a, b) -> None:
    """Every field of two `FeatureStats` is equal (tensors exactly)."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=f.name)  # empty band slots are NaN
        elif f.compare:
            assert x == y, f.name


def stats_view(setup, **kwargs) -> RunView:
    model, sae, acts = setup
    return RunView(analysis.feature_stats, args=(model, sae, acts), kwargs=dict(top_k=3, batch_size=BATCH), **kwargs)


def stop_after(view: RunView, tokens: int) -> list[int]:
    """Press Stop once the view shows at least ``tokens`` done; returns the counts the view showed."""
    shown: list[int] = []

    def seen(change) -> None:
        shown.append(change.new)
        if change.new >= tokens:
            view.stop()

    view.observe(seen, names="done")
    return shown


def test_stop_mid_way_through_statistics_leaves_no_result_and_a_rerun_equals_an_uninterrupted_run(setup, monkeypatch):
    model, sae, acts = setup
    monkeypatch.setattr(run_view, "REPORT_EVERY_S", 0.0)  # every batch reaches the view
    uninterrupted = analysis.feature_stats(model, sae, acts, top_k=3, batch_size=BATCH, progress=False)
    view = stats_view(setup)
    shown = stop_after(view, 3 * BATCH)
    assert view.start()
    view.wait(60)
    assert view.state == "stopped" and view.result is None
    assert "no result" in view.message
    assert view.stage == "feature stats" and view.total == len(acts)
    assert 3 * BATCH <= view.done < len(acts), "the stop was not mid-way"
    assert shown[-1] == view.done and shown == sorted(shown)
    assert model_is_clean(model)

    view.unobserve_all("done")
    assert view.start(wait=True)
    assert view.state == "done" and view.done == view.total == len(acts)
    assert view.message.startswith("done in ")
    assert_same_stats(view.result, uninterrupted)


def test_stop_inside_the_harvest_of_a_corpus_then_the_statistics_run_to_the_end(setup, monkeypatch):
    """feature_stats of texts harvests first: the view shows each of the call's bars in turn."""
    model, sae, _ = setup
    monkeypatch.setattr(run_view, "REPORT_EVERY_S", 0.0)
    view = RunView(analysis.feature_stats, args=(model, sae, MORE_TEXTS), kwargs=dict(top_k=3, batch_size=BATCH))
    stages: list[str] = []
    view.observe(lambda c: stages.append(c.new), names="stage")
    stop_after(view, 1)  # the harvest's first batch
    view.start()
    view.wait(60)
    assert view.state == "stopped" and view.result is None and stages == ["harvest layer 1"]
    assert 0 < view.done < view.total
    view.unobserve_all("done")
    view.start(wait=True)
    assert view.state == "done" and stages[1:] == ["", "harvest layer 1", "feature stats"]  # "": a new run
    direct = analysis.feature_stats(model, sae, MORE_TEXTS, top_k=3, batch_size=BATCH, progress=False)
    assert_same_stats(view.result, direct)


def test_errors_are_reported_in_one_line_with_no_result(setup):
    model, sae, acts = setup
    other_layer = SAE(dataclasses.replace(sae.cfg, layer=0), torch.Generator().manual_seed(0))
    view = RunView(analysis.feature_stats, args=(model, other_layer, acts), background=False)
    view.start()
    assert view.state == "error" and view.result is None
    assert "\n" not in view.message and "SAEMismatchError: These activations were read at layer 1" in view.message
    assert model_is_clean(model)
    # The same view runs the next call normally once its arguments are right.
    view.args = (model, sae, acts)
    view.start()
    assert view.state == "done" and view.result is not None and view.message.startswith("done")


def test_a_second_start_is_refused_while_a_run_is_in_flight():
    calls: list[int] = []

    def until_stopped(cancel: threading.Event) -> str:
        calls.append(1)
        if not cancel.wait(30):
            raise RuntimeError("never stopped")
        return "late"  # returned after the stop: dropped, not shown as a result

    view = RunView(until_stopped, title="waits for Stop")
    assert view.start() and view.running and view.state == "running"
    assert not view.start()  # from Python
    view._on_frontend_msg(view, {"event": "run"}, [])  # from the Run button
    assert view.running and view.state == "running"
    view._on_frontend_msg(view, {"event": "stop"}, [])  # the Stop button
    view.wait(30)
    assert calls == [1] and view.state == "stopped" and view.result is None
    assert not view.stop(), "Stop with nothing running"


def test_harvest_runs_in_the_view_with_its_token_count_and_equals_a_direct_harvest(setup):
    model, _, acts = setup
    view = RunView(harvest, args=(model, TEXTS), kwargs=dict(layer=1), start=True)
    view.wait(60)
    assert view.state == "done" and view.stage == "harvest layer 1" and view.unit == "tok"
    assert view.done == view.total == len(acts) and view.stage_closed
    np.testing.assert_array_equal(np.asarray(view.result.acts), np.asarray(acts.acts))


def test_the_demo_pipeline_reports_each_stage_and_stops_in_training(setup, tmp_path, monkeypatch):
    from saewidgets.demo import demo_sae
    from saewidgets.demo.settings import DemoSettings

    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path))
    monkeypatch.setattr(run_view, "REPORT_EVERY_S", 0.0)
    model = setup[0]
    settings = DemoSettings(
        model="tiny-gpt2", layer=1, n_tokens=3000, context_len=32, n_features=64, k=4, n_steps=50, batch_size=64
    )
    view = RunView(demo_sae, args=(settings,), kwargs=dict(model=model), title="demo SAE")
    stages: list[str] = []

    def watch(change) -> None:
        stages.append(change.new)

    def stop_in_training(change) -> None:
        if view.stage.startswith("train") and change.new >= 10:
            view.stop()

    view.observe(watch, names="stage")
    view.observe(stop_in_training, names="done")
    view.start()
    view.wait(120)
    assert view.state == "stopped" and view.result is None
    assert stages == ["harvest layer 1", "train topk SAE"] and view.unit == "step" and 10 <= view.done < 50
    view.unobserve(stop_in_training, names="done")
    stages.clear()
    view.start(wait=True)  # the harvest was kept (a finished stage); training starts over, then statistics
    assert view.state == "done", view.message
    assert stages == ["", "train topk SAE", "feature stats"] and view.result.sae is not None


def test_calls_that_cannot_be_stopped_are_refused():
    with pytest.raises(TypeError, match="no cancel= parameter"):
        RunView(sorted, args=([3, 1],))
    with pytest.raises(TypeError, match="leave cancel out"):
        RunView(harvest, kwargs=dict(cancel=threading.Event()))


def test_progress_bars_report_only_to_their_own_threads_listener():
    here: list[Progress] = []

    def other_thread() -> None:
        with progress_bar(5, desc="other", unit="tok", disable=True) as bar:
            bar.update(5)

    with reporting(here.append):
        with progress_bar(10, desc="mine", unit="tok", disable=True) as bar:
            worker = threading.Thread(target=other_thread)
            worker.start()
            worker.join()
            bar.update(4)
            bar.update(6)
        assert [item for item in progress_iter(["a", "b"], desc="items", unit="item", disable=True)] == ["a", "b"]
    with progress_bar(3, desc="after", unit="tok", disable=True) as bar:
        bar.update(3)
    assert [(p.desc, p.n, p.total, p.closed) for p in here] == [
        ("mine", 0, 10, False),
        ("mine", 4, 10, False),
        ("mine", 10, 10, False),
        ("mine", 10, 10, True),
        ("items", 0, 2, False),
        ("items", 1, 2, False),
        ("items", 2, 2, False),
        ("items", 2, 2, True),
    ]  # nothing of the other thread's bar, nor of the bar made after the listener was gone


def test_the_fallback_page_escapes_the_title(setup):
    view = RunView(harvest, title="<img src=x onerror=alert(1)>")
    assert "<img" not in view._fallback_html() and "&lt;img" in view._fallback_html()
    assert "saew-fallback" in view.to_html()
