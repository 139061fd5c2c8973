"""The demo memory benchmark's recorder: each outermost stage's peak RSS is its own, measured by the kernel."""

from __future__ import annotations

import mmap
import sys

import pytest

from benchmarks.demo_profile import StageRecorder

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")


def test_each_stage_records_its_own_peak_and_nested_stages_fold_into_the_outer_one():
    recorder = StageRecorder()

    def allocate(mb: int) -> int:
        # A new anonymous mapping, every page written: resident memory the process did not have before. (An array
        # from malloc can reuse heap that earlier tests freed but the process kept resident, so late in a long test
        # run its pages raised the peak by 47 MB instead of 300, and this test failed in CI.)
        with mmap.mmap(-1, mb * 2**20) as block:
            for page in range(0, len(block), mmap.PAGESIZE):
                block[page] = 1
            return block[-mmap.PAGESIZE]

    big = recorder.wrap("big", allocate)
    small = recorder.wrap("small", allocate)
    outer = recorder.wrap("outer", lambda: small(20) + big(300))
    big(300)
    small(20)
    outer()
    stages = {s["stage"]: s for s in recorder.stages}
    assert [s["stage"] for s in recorder.stages] == ["big", "small", "outer"]  # nested calls are not stages
    assert stages["big"]["peak_rss_mb"] - stages["big"]["rss_start_mb"] > 250
    if recorder.exact:  # the kernel's peak counter was reset at the stage's start
        assert stages["small"]["peak_rss_mb"] - stages["small"]["rss_start_mb"] < 150
    assert stages["outer"]["peak_rss_mb"] - stages["outer"]["rss_start_mb"] > 250
    assert recorder.peak_mb() >= stages["big"]["peak_rss_mb"]
    assert all(s["seconds"] >= 0 and s["peak_anon_mb"] > 0 for s in recorder.stages)
