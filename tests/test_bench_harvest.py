"""The harvest benchmark's drift measure, on arrays whose drift is known."""

import numpy as np
import pytest

from benchmarks.bench_harvest import relative_drift


def test_drift_is_each_rows_move_as_a_fraction_of_its_norm():
    rows = np.array([[3.0, 4.0], [0.0, 2.0]])
    assert relative_drift(rows, rows) == 0.0
    moved = rows + np.array([[0.5, 0.0], [0.0, 0.0]])  # row 0 moves 0.5 of its 5.0, row 1 stays
    assert relative_drift(rows, moved) == pytest.approx(0.05)
    assert relative_drift(rows, 1.01 * rows) == pytest.approx(0.01)


def test_harvests_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match=r"differ in shape: \(2, 2\) against \(3, 2\)"):
        relative_drift(np.ones((2, 2)), np.ones((3, 2)))
