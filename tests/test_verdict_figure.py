"""The gallery's verdict figures: the forest axis decides exactly as the verdict does, and the
SVG of every kind of verdict is well-formed, escaped and complete."""

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from replica import verdict_figure as vf
from replica.verdicts import error_verdict, gate_outcome

SVG = "{http://www.w3.org/2000/svg}"


def random_row(rng, gate, seeds=5):
    centre, half = rng.normal(0, 2), rng.uniform(0.05, 1.5)
    skew = rng.uniform(0.5, 1.5)  # bootstrap intervals need not be symmetric
    row = {"gate": gate, "name": "x", "value": centre, "ci": [centre - half, centre + half * skew]}
    row["per_seed"] = list(centre + rng.normal(0, half, seeds))
    if seeds == 1:  # verdict.json holds a single seed's unbounded interval as [null, null]
        row["ci"] = rng.choice([[-math.inf, math.inf], [None, None]])
    if gate == "band":
        lo = rng.normal(0, 2)
        row["band"] = [lo, lo + rng.uniform(0.1, 4)]
    else:
        row["op"], row["threshold"] = rng.choice(["<", "<=", ">", ">="]), rng.normal(0, 2)
    if gate == "seeds":
        row["min_fraction"] = rng.choice([0.5, 0.6, 0.8, 1.0])
    return row


def drawn_outcome(margin):
    return "pass" if margin["near"] > 0 else "fail" if margin["far"] < 0 else "inconclusive"


def verdict_outcome(row):
    ci = [math.inf if c is None else c for c in row["ci"]]
    ci[0] = -ci[0] if row["ci"][0] is None else ci[0]
    stat = {"value": row["value"], "ci": ci, "per_seed": row["per_seed"]}
    return gate_outcome(row, stat, row.get("band"))


@pytest.mark.parametrize("seeds", [5, 1])
@pytest.mark.parametrize("gate", ["interval", "band", "mean", "seeds"])
def test_forest_axis_reproduces_the_gate_outcome(gate, seeds):
    """Pass when the whole interval is right of 0, fail when all of it is left: the verdict's
    own rule (verdicts.gate_outcome), checked on 2000 random checks of every gate, with five
    seeds and with one (whose interval is unbounded)."""
    rng = np.random.default_rng(7)
    seen = set()
    for _ in range(2000):
        row = random_row(rng, gate, seeds)
        margin = vf.forest_margin(row)
        assert drawn_outcome(margin) == verdict_outcome(row), (row, margin)
        assert margin["near"] <= margin["value"] <= margin["far"]
        seen.add(drawn_outcome(margin))
    expected = {"pass", "fail"} if gate in ("mean", "seeds") else {"pass", "fail", "inconclusive"}
    if seeds == 1 and gate in ("interval", "band"):
        expected = {"inconclusive"}  # one seed says nothing about seed noise
    assert seen == expected


def test_forest_margin_is_in_half_widths_and_seeds_sit_where_they_pass():
    row = {"gate": "seeds", "op": ">=", "threshold": 1.0, "min_fraction": 0.5, "name": "s"}
    row.update(value=2.0, ci=[1.5, 2.5], per_seed=[0.5, 1.5, 3.0])
    margin = vf.forest_margin({**row, "gate": "interval"})
    assert margin["value"] == pytest.approx(2.0) and margin["near"] == pytest.approx(1.0)
    assert [m > 0 for m in margin["per_seed"]] == [False, True, True]
    # Two of three seeds must pass: the second best seed (1.5, one half-width in) decides.
    decisive = vf.forest_margin(row)
    assert decisive["decisive_seed"] and decisive["near"] == decisive["far"] == pytest.approx(1.0)


def test_zero_width_interval_lies_off_the_axis_on_its_side():
    row = {"gate": "interval", "op": ">=", "threshold": 0.8, "name": "z"}
    failing = vf.forest_margin({**row, "value": 0.0, "ci": [0.0, 0.0]})
    assert failing["exact"] and failing["near"] == -math.inf and failing["per_seed"] == []
    deterministic = vf.forest_margin({**row, "value": 0.9, "ci": None})
    assert deterministic["near"] == math.inf
    assert vf.forest_x(math.inf, 0, 100) == 100 and vf.forest_x(-math.inf, 0, 100) == 0
    assert vf.forest_x(0, 0, 100) == pytest.approx(50)


def full_verdict():
    rng = np.random.default_rng(1)
    checks = [random_row(rng, g) for g in ("interval", "band", "interval")]
    checks[0].update(primary=True, name="<b>primary</b> & co")
    controls = [{**random_row(rng, "seeds"), "min_fraction": 0.8, "name": "ablation"}]
    preconditions = [{**random_row(rng, "interval"), "name": "pre"}]
    for row in checks + controls + preconditions:
        stat = {"value": row["value"], "ci": row["ci"], "per_seed": row["per_seed"]}
        row.update(what="w", n=5, outcome=gate_outcome(row, stat, row.get("band")))
    controls[0]["outcome"] = "fail"
    return {
        "slug": "demo",
        "status": "partial",
        "reason": "r",
        "checks": checks,
        "controls": controls,
        "preconditions": preconditions,
    }


def test_verdict_svg_has_one_linked_row_per_check_and_escapes_names():
    verdict = full_verdict()
    svg = vf.verdict_svg(verdict)
    root = ET.fromstring(svg)  # well-formed XML: names with <, & are escaped
    links = [a.get("href") for a in root.iter(f"{SVG}a")]
    assert len(links) == 5 and links[0] == "#check-<b>primary</b> & co"
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    compact = ET.fromstring(vf.verdict_svg(verdict, compact=True))
    assert len(list(compact.iter(f"{SVG}title"))) == 4  # preconditions left out of the card


def test_verdict_svg_of_an_error_and_of_degenerate_rows():
    error = error_verdict({"slug": "e", "key_statistic": {"label": "k"}}, "the chain failed")
    for compact in (False, True):
        ET.fromstring(vf.verdict_svg(error, compact=compact))
    flat = {"gate": "interval", "op": "<=", "threshold": 1e-3, "name": "tiny", "what": "w"}
    flat.update(value=1e-15, ci=[1e-16, 1e-14], per_seed=[1e-16, 1e-14], outcome="pass")
    same = {"gate": "band", "band": [1.0, 1.0], "name": "same", "what": "w"}
    same.update(value=1.0, ci=[1.0, 1.0], per_seed=[1.0, 1.0], outcome="pass")
    verdict = {"slug": "d", "status": "replicated", "checks": [flat, same], "controls": []}
    ET.fromstring(vf.verdict_svg(verdict))  # a log axis, and a zero-width one, draw


def test_forest_strip_and_axis_are_well_formed():
    verdict = full_verdict()
    for row in (verdict["checks"][0], None):
        ET.fromstring(vf.forest_strip(row, "partial"))
    ET.fromstring(vf.forest_axis())


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (-3.2, 7.9), (0.985, 1.015), (1e-9, 3e-9)])
def test_nice_ticks_are_round_and_inside(lo, hi):
    ticks = vf.nice_ticks(lo, hi)
    assert 2 <= len(ticks) <= 11
    assert all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks)
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 5))
