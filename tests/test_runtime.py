"""Progress lines and the divergence check shared by every step."""

import numpy as np
import pytest

from replica import runtime


@pytest.mark.parametrize("total", [1, 7, 15, 1000])
def test_progress_writes_at_most_about_ten_lines_and_always_the_last(total, capsys):
    tick = runtime.Progress(total, "train demo")
    for step in range(total):
        tick(step, loss=1.0 / (step + 1), step=step)  # "step" may also be a reported value
    lines = capsys.readouterr().out.splitlines()
    assert 1 <= len(lines) <= 11
    assert lines[-1].startswith(f"[progress] train demo {total}/{total} (100%)")
    assert all(line.startswith("[progress] train demo ") for line in lines)


def test_require_finite_names_every_bad_array():
    good = {"w": np.ones(3), "steps": np.arange(3), "flag": np.array([True])}
    runtime.require_finite(good, "train x")
    bad = dict(good, loss=np.array([1.0, np.nan]), grad=np.array([np.inf]))
    with pytest.raises(runtime.NonFiniteResult, match=r"train x: NaN/inf in loss \(1 of 2"):
        runtime.require_finite(bad, "train x")
    with pytest.raises(runtime.NonFiniteResult, match="grad"):
        runtime.require_finite(bad, "train x")


def test_log_spaced_steps_are_distinct_integers_covering_the_run():
    np.testing.assert_array_equal(runtime.log_spaced_steps(100, 5), [1, 3, 10, 32, 100])
    np.testing.assert_array_equal(
        runtime.log_spaced_steps(100, 5, with_zero=True), [0, 1, 3, 10, 32, 100]
    )
    # more points than steps: rounding merges duplicates, every step is kept once
    np.testing.assert_array_equal(runtime.log_spaced_steps(6, 50), np.arange(1, 7))
    assert runtime.log_spaced_steps(1, 10).tolist() == [1]
