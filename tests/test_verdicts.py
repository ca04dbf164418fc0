"""The verdict rules on synthetic statistics: every gate both ways, every status reachable."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from replica import verdicts
from replica.report import findings, gate_text, t95, verdict_html
from replica.verdicts import aggregate, gate_outcome, judge


def manifest(checks, controls=None, preconditions=None):
    return {
        "slug": "demo",
        "checks": checks,
        "controls": controls
        or [{"name": "abl", "statistic": "s_abl", "op": "<=", "threshold": 0.5, "what": "c"}],
        "preconditions": preconditions or [],
        "key_statistic": {"measured": "s_a", "theory": "s_theory", "label": "a"},
    }


PRIMARY = {"name": "a", "statistic": "s_a", "op": ">=", "threshold": 0.9, "what": "a"}
SECOND = {"name": "b", "statistic": "s_b", "op": "<", "threshold": 0.1, "what": "b"}
M = manifest([{**PRIMARY, "primary": True}, SECOND])
GOOD = {"s_a": [0.95, 0.96, 0.97, 0.95], "s_b": 0.05, "s_abl": [0.1, 0.2, 0.1, 0.15]}
GOOD["s_theory"] = 1.0


def test_every_check_passes_and_ablation_discriminates_is_replicated():
    v = judge(M, GOOD, n_seeds=4)
    assert v["status"] == "replicated"
    assert [r["outcome"] for r in v["checks"]] == ["pass", "pass"]
    assert v["controls"][0]["outcome"] == "pass"
    assert v["primary"] == "a"
    assert v["counts"]["checks"] == {"pass": 2, "fail": 0, "inconclusive": 0}
    assert v["checks"][0]["per_seed"] == [0.95, 0.96, 0.97, 0.95]
    assert v["key"]["theory"] == 1.0 and v["key"]["n"] == 4


def test_primary_failing_decisively_is_not_replicated():
    v = judge(M, {**GOOD, "s_a": [0.5, 0.52, 0.49, 0.51]})
    assert v["status"] == "not-replicated"
    assert v["checks"][0]["outcome"] == "fail"
    assert "primary check a fails" in v["reason"]


def test_primary_straddling_its_threshold_is_inconclusive():
    v = judge(M, {**GOOD, "s_a": [0.8, 1.0, 0.85, 0.99]})
    assert v["checks"][0]["outcome"] == "inconclusive"
    assert v["status"] == "inconclusive"


def test_other_check_failing_is_partial():
    v = judge(M, {**GOOD, "s_b": 0.5})
    assert v["status"] == "partial"
    assert "checks failing: b" in v["reason"]


def test_ablation_that_does_not_discriminate_blocks_replicated():
    v = judge(M, {**GOOD, "s_abl": [0.8, 0.9, 0.85, 0.9]})
    assert v["status"] == "partial"
    assert v["controls"][0]["outcome"] == "fail"
    assert "ablations not discriminating: abl" in v["reason"]


def test_inconclusive_ablation_blocks_replicated():
    v = judge(M, {**GOOD, "s_abl": [0.1, 0.9, 0.2, 0.8]})
    assert v["controls"][0]["outcome"] == "inconclusive"
    assert v["status"] == "partial"


def test_preconditions_are_shown_and_never_counted():
    pre = {"name": "p", "statistic": "s_p", "op": ">", "threshold": 0, "what": "p"}
    m = manifest([{**PRIMARY, "primary": True}], preconditions=[pre])
    v = judge(m, {**GOOD, "s_p": -1.0})
    assert v["preconditions"][0]["outcome"] == "fail"
    assert v["status"] == "replicated"
    assert v["counts"]["preconditions"]["fail"] == 1


def test_student_t_interval_not_normal():
    x = [1.0, 2.0, 3.0, 4.0]
    stat = aggregate(x)
    half = scipy_stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2
    assert stat["ci"] == pytest.approx([2.5 - half, 2.5 + half])
    assert stat["n"] == 4 and stat["value"] == 2.5
    assert half > 1.96 * np.std(x, ddof=1) / 2 * 1.5  # much wider than z = 1.96 at 4 seeds


def test_bootstrap_interval_where_asked():
    x = np.linspace(0, 1, 10)
    stat = aggregate(x, "bootstrap")
    assert stat["ci"][0] < 0.5 < stat["ci"][1]
    assert stat == aggregate(x, "bootstrap")  # fixed resampling seed: a pure function


def test_mean_gate_ignores_the_interval():
    spec = {**PRIMARY, "gate": "mean", "gate_reason": "r"}
    stat = aggregate([0.8, 1.05, 0.85, 1.1])
    assert gate_outcome(spec, stat) == "pass"
    assert gate_outcome({**spec, "threshold": 1.0}, stat) == "fail"
    assert gate_outcome(PRIMARY, stat) == "inconclusive"


def test_interval_gate_both_directions():
    lo_spec = {**SECOND, "op": "<=", "threshold": 0.0}
    assert gate_outcome(lo_spec, aggregate([-1.0, -1.1, -0.9])) == "pass"
    assert gate_outcome(lo_spec, aggregate([1.0, 1.1, 0.9])) == "fail"
    assert gate_outcome(lo_spec, aggregate([-1.0, 1.0, 0.1])) == "inconclusive"


def test_seeds_gate_judges_each_seed():
    spec = {**PRIMARY, "gate": "seeds", "min_fraction": 0.8}
    bimodal = aggregate([0.99, 0.99, 0.99, 0.99, 0.2])
    assert gate_outcome(spec, bimodal) == "pass"  # 4 of 5 seeds
    assert gate_outcome({**spec, "min_fraction": 0.9}, bimodal) == "fail"
    v = judge(manifest([{**spec, "primary": True}]), {**GOOD, "s_a": [0.99] * 4 + [0.2]})
    assert v["checks"][0]["seed_fraction"] == pytest.approx(0.8)


def test_a_bimodal_control_cannot_pass_on_its_mean():
    """The opposing_signals defect: per-seed values from -0.9 to +0.99, mean near 0."""
    spec = {"name": "c", "statistic": "s", "op": ">", "threshold": -0.5, "what": "c"}
    bimodal = aggregate([-0.9, -0.8, -0.85, 0.99, 0.95, 0.9])
    assert gate_outcome({**spec, "gate": "mean", "gate_reason": "r"}, bimodal) == "pass"
    assert gate_outcome(spec, bimodal) == "inconclusive"
    assert gate_outcome({**spec, "gate": "seeds", "min_fraction": 5 / 6}, bimodal) == "fail"


def test_band_gate_for_point_predictions():
    spec = {"name": "s", "statistic": "x", "what": "w", "gate": "band", "band": [0.5, 1.5]}
    band = [0.5, 1.5]
    assert gate_outcome(spec, aggregate([1.0, 1.1, 0.9]), band) == "pass"
    assert gate_outcome(spec, aggregate([1.6, 1.7, 1.65]), band) == "fail"  # too large fails too
    assert gate_outcome(spec, aggregate([0.3, 0.35, 0.4]), band) == "fail"
    assert gate_outcome(spec, aggregate([1.4, 1.6, 1.5]), band) == "inconclusive"


@pytest.mark.parametrize(
    ("extra", "band"),
    [
        ({"tolerance": 0.1}, [1.8, 2.2]),
        ({"abs_tolerance": 0.5}, [1.5, 2.5]),
        ({"factor": 2.0}, [1.0, 4.0]),
    ],
)
def test_band_relative_to_a_theory_statistic(extra, band):
    spec = {"name": "r", "statistic": "s_a", "what": "w", "gate": "band", "relative_to": "s_th"}
    spec.update(extra, primary=True)
    m = manifest([spec])
    v = judge(m, {**GOOD, "s_th": 2.0, "s_a": [2.0, 2.01, 1.99]})
    assert v["checks"][0]["band"] == pytest.approx(band)
    assert v["checks"][0]["outcome"] == "pass"
    assert judge(m, {**GOOD, "s_th": 2.0, "s_a": [9.0, 9.1, 9.2]})["status"] == "not-replicated"


def test_one_sided_band_no_longer_passes_a_point_prediction():
    """train_longer_ultraslow: a decade ratio of 1.64 cleared '>= 0.5'; the log law predicts 1."""
    one_sided = {"name": "d", "statistic": "r", "op": ">=", "threshold": 0.5, "what": "w"}
    two_sided = {"name": "d", "statistic": "r", "what": "w", "gate": "band", "band": [0.67, 1.5]}
    stat = aggregate([1.6, 1.7, 1.62, 1.65])
    assert gate_outcome(one_sided, stat) == "pass"
    assert gate_outcome(two_sided, stat, [0.67, 1.5]) == "fail"


@pytest.mark.parametrize("bad", [math.nan, math.inf, None, [1.0, math.nan], {"value": 1.0}])
def test_non_finite_missing_or_hand_made_statistic_is_error(bad):
    v = judge(M, {**GOOD, "s_a": bad})
    assert v["status"] == "error"
    assert "s_a" in v["reason"]


def test_missing_statistic_is_error():
    assert judge(M, {k: v for k, v in GOOD.items() if k != "s_b"})["status"] == "error"


def test_per_seed_values_must_match_the_seed_count():
    v = judge(M, GOOD, n_seeds=5)
    assert v["status"] == "error" and "4 per-seed values for 5 seeds" in v["reason"]


def test_thresholds_are_strict_where_the_op_is():
    at = judge(M, {**GOOD, "s_a": 0.9, "s_b": 0.1, "s_abl": 0.5})
    assert [r["outcome"] for r in at["checks"]] == ["pass", "fail"]  # >= includes, < excludes
    assert at["controls"][0]["outcome"] == "pass"  # <= includes


def test_one_seed_is_never_a_pass_under_the_interval_gate():
    assert gate_outcome(PRIMARY, aggregate([0.99])) == "inconclusive"


def test_robustness_of_a_clear_and_a_fragile_verdict():
    clear = judge(M, GOOD, resamples=300)
    assert clear["robustness"]["fraction"] == 1.0
    assert clear["robustness"]["resamples"] == 300
    noisy = {**GOOD, "s_a": [0.91, 0.99, 0.93, 0.98, 0.905, 0.97]}
    fragile = judge(M, noisy, resamples=300)
    assert 0.0 < fragile["robustness"]["fraction"] < 1.0
    assert sum(fragile["robustness"]["statuses"].values()) == 300
    assert fragile == judge(M, noisy, resamples=300)  # a pure function of the statistics


def test_robustness_without_per_seed_statistics_is_undefined():
    v = judge(M, {"s_a": 0.95, "s_b": 0.05, "s_abl": 0.2, "s_theory": 1.0})
    assert v["robustness"]["fraction"] is None


def test_the_narrative_is_written_from_the_verdict():
    v = judge(M, {**GOOD, "s_b": 0.5}, n_seeds=4)
    v.update(scale="quick", seeds=4)
    text = findings(v)
    assert "Status **partial**" in text
    assert "primary check `a`" in text and "**fail**" in text
    assert "4 seeds" in text and "Seed robustness" in text
    assert "measured 0.9575 [" in text and "vs theory 1" in text
    assert "partial" in verdict_html(v)
    assert gate_text(v["checks"][0]) == "whole 95 % interval >= 0.9"


def test_identical_seeds_are_flagged():
    v = judge(M, {**GOOD, "s_abl": [0.2, 0.2, 0.2, 0.2]})
    assert "zero width" in v["controls"][0]["note"]
    assert "note" not in v["checks"][0]


def test_manifest_text_reaches_the_narrative_literally():
    m = manifest([{**PRIMARY, "primary": True, "what": "[a](Tanh) x_1 * <script>x</script>"}])
    text = findings(judge(m, GOOD))
    assert "](Tanh)" not in text.replace("\\](Tanh)", "") and "<script>" not in text


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 8, 15, 30, 199])
def test_t_quantile_matches_scipy(dof):
    """The closed-form Student-t quantile (no scipy import in verdict jobs) against scipy."""
    assert verdicts.t_quantile(dof) == pytest.approx(scipy_stats.t.ppf(0.975, dof), rel=1e-12)


def test_notebook_t95_is_scipys_quantile_elementwise():
    """Notebook seed bands use the verdict's closed form (no scipy.stats import in a notebook)."""
    dof = np.array([[0, 1, 2], [5, 9, 63]])
    expected = scipy_stats.t.ppf(0.975, dof)
    np.testing.assert_allclose(t95(dof), expected, rtol=1e-12)
    assert t95(5) == pytest.approx(expected[1, 0], rel=1e-12) and isinstance(t95(5), float)
    assert np.isnan(t95(0))  # a single seed: no band, as scipy gives


def test_no_notebook_imports_scipy_stats():
    """scipy.stats costs 1-2 s of import in every notebook that loads it; report.t95 instead."""
    notebooks = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        assert "from scipy import stats" not in path.read_text(), path.name
        assert "scipy.stats" not in path.read_text(), path.name
