"""The verdict rules, on synthetic statistics: every outcome must be reachable."""

import math

import pytest

from replica.verdicts import judge, mean_ci

MANIFEST = {
    "slug": "demo",
    "checks": [
        {"name": "a", "statistic": "s_a", "op": ">=", "threshold": 0.9, "what": "a"},
        {"name": "b", "statistic": "s_b", "op": "<", "threshold": 0.1, "what": "b"},
    ],
    "controls": [
        {"name": "c", "statistic": "s_c", "op": "<=", "threshold": 0.5, "what": "c"},
    ],
    "key_statistic": {"measured": "s_a", "theory": "s_theory", "label": "a"},
}


def test_all_pass_and_control_discriminates_is_replicated():
    v = judge(MANIFEST, {"s_a": 0.95, "s_b": 0.05, "s_c": 0.2, "s_theory": 1.0})
    assert v["status"] == "replicated"
    assert [r["passed"] for r in v["checks"]] == [True, True]
    assert v["controls"][0]["discriminates"] is True
    assert v["key"] == {"label": "a", "measured": 0.95, "ci": None, "n": None, "theory": 1.0}


def test_no_check_passes_is_not_replicated():
    v = judge(MANIFEST, {"s_a": 0.5, "s_b": 0.5, "s_c": 0.2})
    assert v["status"] == "not-replicated"
    assert "a, b" in v["reason"]


def test_some_checks_fail_is_partial():
    v = judge(MANIFEST, {"s_a": 0.95, "s_b": 0.5, "s_c": 0.2})
    assert v["status"] == "partial"
    assert "checks failing: b" in v["reason"]


def test_control_that_does_not_discriminate_blocks_replicated():
    v = judge(MANIFEST, {"s_a": 0.95, "s_b": 0.05, "s_c": 0.9})
    assert v["status"] == "partial"
    assert v["controls"][0]["discriminates"] is False
    assert "controls not discriminating: c" in v["reason"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_non_finite_or_missing_statistic_is_error(bad):
    v = judge(MANIFEST, {"s_a": bad, "s_b": 0.05, "s_c": 0.2})
    assert v["status"] == "error"
    assert "s_a" in v["reason"]


def test_missing_statistic_is_error():
    assert judge(MANIFEST, {"s_a": 0.95, "s_c": 0.2})["status"] == "error"


def test_thresholds_are_strict_where_the_op_is():
    at = judge(MANIFEST, {"s_a": 0.9, "s_b": 0.1, "s_c": 0.5})
    assert [r["passed"] for r in at["checks"]] == [True, False]  # >= includes, < excludes
    assert at["controls"][0]["discriminates"] is True  # <= includes


def test_mean_ci_statistic_carries_seeds_and_interval():
    stat = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert stat["value"] == pytest.approx(2.5)
    assert stat["n"] == 4
    half = 1.96 * math.sqrt(5 / 3) / 2
    assert stat["ci"] == pytest.approx([2.5 - half, 2.5 + half])
    v = judge(MANIFEST, {"s_a": mean_ci([0.9, 1.0]), "s_b": 0.0, "s_c": 0.0})
    assert v["checks"][0]["n"] == 2
    assert v["status"] == "replicated"
