"""Turn a claim's per-seed statistics into a verdict, using only the gates of its manifest.

A claim's ``verdict()`` returns, per statistic name, one of
- a list / 1-D array with one value per seed: aggregated here, for every claim the same way,
  as the mean with a Student-t 95 % interval (or a seed bootstrap where the check asks);
- a plain number: a deterministic quantity (a closed form, a data-only computation), no interval;
- ``None``: undefined, which makes any check that needs it an ``error``.

Each check, ablation and precondition declares a **gate** (see the manifest schema):
- ``interval`` (default): the whole interval must clear ``op threshold``; an interval on the
  wrong side fails; one that straddles the threshold is ``inconclusive``;
- ``mean``: the point estimate alone (needs a ``gate_reason``);
- ``seeds``: each seed is judged alone and at least ``min_fraction`` of them must pass;
- ``band``: a two-sided point prediction, ``band: [lo, hi]`` or ``relative_to`` a theory
  statistic with a ``tolerance`` (relative), ``abs_tolerance`` or ``factor``; the interval
  inside the band passes, wholly outside fails, across an edge is ``inconclusive``.

Status rules (the same for every claim):
- ``error``: a step failed, or a statistic the manifest names is missing or not finite;
- ``replicated``: every check passes and every ablation discriminates;
- ``not-replicated``: the primary check fails;
- ``inconclusive``: the primary check is inconclusive;
- ``partial``: anything else (the primary check passes but another check or an ablation
  does not). Preconditions are shown and never counted.

Seed robustness: the fraction of seed-bootstrap resamples (seeds drawn with replacement,
jointly for every per-seed statistic) whose recomputed status equals the observed one.
"""

from __future__ import annotations

import math
import operator
from functools import cache
from typing import Any

import numpy as np

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
STATUSES = ("replicated", "partial", "inconclusive", "not-replicated", "error")
OUTCOMES = ("pass", "fail", "inconclusive")
ROBUSTNESS_RESAMPLES = 1000
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
# Fixed seeds: a verdict is a pure function of the results.
_ROBUSTNESS_SEED = 20260101
_BOOTSTRAP_SEED = 12345


class StatisticError(ValueError):
    """A statistic is missing, not finite, or of the wrong shape."""


@cache
def t_quantile(dof: int) -> float:
    """The t with P(|T| <= t) = CONFIDENCE for Student's T with `dof` degrees of freedom.

    For integer dof that probability has a finite closed form in theta = atan(t / sqrt(dof))
    (Abramowitz & Stegun 26.7.3-4), increasing in theta; bisection inverts it to machine
    precision. Importing scipy.stats for this was a second of every verdict job.
    """
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")

    def coverage(theta: float) -> float:
        sin, cos2 = math.sin(theta), math.cos(theta) ** 2
        if dof % 2 == 0:  # sin(theta) * (1 + 1/2 cos^2 + 1.3/(2.4) cos^4 + ... + cos^(dof-2))
            term = total = 1.0
            for k in range(1, dof // 2):
                term *= (2 * k - 1) / (2 * k) * cos2
                total += term
            return sin * total
        # odd: (2/pi) (theta + sin * (cos + 2/3 cos^3 + ... + cos^(dof-2)))
        term = total = math.cos(theta) if dof > 1 else 0.0
        for k in range(1, (dof - 1) // 2):
            term *= (2 * k) / (2 * k + 1) * cos2
            total += term
        return 2 / math.pi * (theta + sin * total)

    lo, hi = 0.0, math.pi / 2
    while True:
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if coverage(mid) < CONFIDENCE else (lo, mid)
    return math.sqrt(dof) * math.tan((lo + hi) / 2)


def aggregate(raw: Any, interval: str = "t", n_seeds: int | None = None) -> dict[str, Any]:
    """One statistic as {value, ci, n, per_seed}; per-seed values get an interval, scalars none."""
    if raw is None:
        raise StatisticError("undefined (None)")
    if isinstance(raw, dict):
        raise StatisticError(
            "a dict; verdict() returns per-seed values or a plain number, and the interval "
            "is computed here"
        )
    arr = np.asarray(raw, dtype=float)
    if arr.ndim == 0:
        value = float(arr)
        if not math.isfinite(value):
            raise StatisticError(f"not finite ({value})")
        return {"value": value, "ci": None, "n": None, "per_seed": None}
    if arr.ndim != 1 or arr.size == 0:
        raise StatisticError(f"per-seed values must be a non-empty 1-D list, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise StatisticError("per-seed values not finite")
    if n_seeds is not None and arr.size != n_seeds:
        raise StatisticError(f"{arr.size} per-seed values for {n_seeds} seeds")
    return _summarise(arr, interval)


def _summarise(arr: np.ndarray, interval: str) -> dict[str, Any]:
    n = int(arr.size)
    mean = float(arr.mean())
    if n < 2:
        ci = [-math.inf, math.inf]  # one seed says nothing about seed noise
    elif interval == "bootstrap":
        rng = np.random.default_rng(_BOOTSTRAP_SEED)
        means = arr[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
        alpha = (1 - CONFIDENCE) / 2
        ci = [float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))]
    else:
        half = t_quantile(n - 1) * float(arr.std(ddof=1)) / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"value": mean, "ci": ci, "n": n, "per_seed": [float(x) for x in arr]}


def _band(spec: dict[str, Any], stats: dict[str, dict]) -> list[float]:
    if "band" in spec:
        return [float(spec["band"][0]), float(spec["band"][1])]
    target = stats[spec["relative_to"]]["value"]
    if "factor" in spec:
        lo, hi = target / spec["factor"], target * spec["factor"]
    elif "abs_tolerance" in spec:
        lo, hi = target - spec["abs_tolerance"], target + spec["abs_tolerance"]
    else:
        lo, hi = target - spec["tolerance"] * abs(target), target + spec["tolerance"] * abs(target)
    return sorted([float(lo), float(hi)])


def gate_outcome(spec: dict[str, Any], stat: dict[str, Any], band=None) -> str:
    """pass / fail / inconclusive of one gated statistic."""
    gate = spec.get("gate", "interval")
    value, ci = stat["value"], stat["ci"]
    lo, hi = (value, value) if ci is None or gate == "mean" else ci
    if gate == "seeds":
        values = stat["per_seed"] if stat["per_seed"] is not None else [value]
        op = OPS[spec["op"]]
        fraction = float(np.mean([op(x, spec["threshold"]) for x in values]))
        return "pass" if fraction >= spec["min_fraction"] else "fail"
    if gate == "band":
        b_lo, b_hi = band
        if b_lo <= lo and hi <= b_hi:
            return "pass"
        return "fail" if hi < b_lo or lo > b_hi else "inconclusive"
    op, threshold = OPS[spec["op"]], spec["threshold"]
    # The end of the interval nearest the threshold decides a pass, the far end a fail.
    near, far = (lo, hi) if spec["op"] in (">", ">=") else (hi, lo)
    if op(near, threshold):
        return "pass"
    return "fail" if not op(far, threshold) else "inconclusive"


def _row(spec: dict[str, Any], raw: dict, stats: dict, n_seeds) -> dict[str, Any]:
    keys = ("name", "statistic", "what", "op", "threshold", "min_fraction", "band")
    row = {k: spec[k] for k in keys if k in spec}
    row.update(gate=spec.get("gate", "interval"), primary=bool(spec.get("primary", False)))
    for key in ("relative_to", "tolerance", "abs_tolerance", "factor", "interval"):
        if key in spec:
            row[key] = spec[key]
    name = spec["statistic"]
    stat = _aggregate_cached(raw, stats, name, spec.get("interval", "t"), n_seeds)
    band = _band(spec, stats) if row["gate"] == "band" else None
    row.update(value=stat["value"], ci=stat["ci"], n=stat["n"], per_seed=stat["per_seed"])
    if band is not None:
        row["band"] = band
    if row["gate"] == "seeds":
        values = stat["per_seed"] if stat["per_seed"] is not None else [stat["value"]]
        passed = [OPS[spec["op"]](x, spec["threshold"]) for x in values]
        row["seed_fraction"] = float(np.mean(passed))
    row["outcome"] = gate_outcome(spec, stat, band)
    per_seed = stat["per_seed"]
    if per_seed is not None and len(per_seed) > 1 and min(per_seed) == max(per_seed):
        # e.g. every seed drew the same data: the interval then says nothing about seed noise
        row["note"] = "every seed gives the same value: the interval has zero width"
    return row


def _aggregate_cached(raw, stats, name, interval, n_seeds):
    if interval == "t" and name in stats:
        return stats[name]
    if name not in raw:
        raise StatisticError(f"{name}: not returned by verdict()")
    try:
        return aggregate(raw[name], interval, n_seeds)
    except StatisticError as err:
        raise StatisticError(f"{name}: {err}") from None


def _named(manifest: dict[str, Any]) -> list[str]:
    names = []
    for spec in _specs(manifest):
        names.append(spec["statistic"])
        if "relative_to" in spec:
            names.append(spec["relative_to"])
    key = manifest["key_statistic"]
    names += [key["measured"]] + ([key["theory"]] if key.get("theory") else [])
    return list(dict.fromkeys(names))


def _specs(manifest):
    return manifest["checks"] + manifest["controls"] + manifest.get("preconditions", [])


def _primary(checks: list[dict]) -> dict:
    return next((r for r in checks if r["primary"]), checks[0])


def _status(checks: list[dict], ablations: list[dict]) -> tuple[str, str]:
    primary = _primary(checks)
    failed = [r["name"] for r in checks if r["outcome"] == "fail"]
    unsure = [r["name"] for r in checks if r["outcome"] == "inconclusive"]
    blind = [r["name"] for r in ablations if r["outcome"] != "pass"]
    if not failed and not unsure and not blind:
        return "replicated", "every check passes and every ablation discriminates"
    parts = []
    if failed:
        parts.append(f"checks failing: {', '.join(failed)}")
    if unsure:
        parts.append(f"checks inconclusive: {', '.join(unsure)}")
    if blind:
        parts.append(f"ablations not discriminating: {', '.join(blind)}")
    reason = "; ".join(parts)
    if primary["outcome"] == "fail":
        return "not-replicated", f"the primary check {primary['name']} fails; {reason}"
    if primary["outcome"] == "inconclusive":
        return "inconclusive", f"the primary check {primary['name']} is inconclusive; {reason}"
    return "partial", reason


def counts(rows: list[dict]) -> dict[str, int]:
    return {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES}


def _evaluate(manifest, raw, n_seeds):
    """Aggregate once with the t interval, then judge every row; raises StatisticError."""
    stats = {}
    for name in _named(manifest):
        if name not in raw:
            raise StatisticError(f"{name}: not returned by verdict()")
        try:
            stats[name] = aggregate(raw[name], "t", n_seeds)
        except StatisticError as err:
            raise StatisticError(f"{name}: {err}") from None
    rows = {
        kind: [_row(spec, raw, stats, n_seeds) for spec in manifest.get(kind, [])]
        for kind in ("checks", "controls", "preconditions")
    }
    return stats, rows


def judge(
    manifest: dict[str, Any],
    statistics: dict[str, Any],
    n_seeds: int | None = None,
    resamples: int = ROBUSTNESS_RESAMPLES,
) -> dict[str, Any]:
    """The verdict of one claim: rows per check / ablation / precondition, status, robustness."""
    try:
        stats, rows = _evaluate(manifest, statistics, n_seeds)
    except StatisticError as err:
        return error_verdict(manifest, f"statistic {err}")
    status, reason = _status(rows["checks"], rows["controls"])
    extra = {}
    for name, raw in statistics.items():  # statistics the manifest does not gate, for notebooks
        if name not in stats:
            try:
                extra[name] = aggregate(raw, "t", None)
            except StatisticError:
                extra[name] = None
    return {
        "slug": manifest["slug"],
        "status": status,
        "reason": reason,
        "primary": _primary(rows["checks"])["name"],
        "checks": rows["checks"],
        "controls": rows["controls"],
        "preconditions": rows["preconditions"],
        "counts": {
            "checks": counts(rows["checks"]),
            "ablations": counts(rows["controls"]),
            "preconditions": counts(rows["preconditions"]),
        },
        "robustness": robustness(manifest, statistics, status, n_seeds, resamples),
        "statistics": {**stats, **extra},
        "key": key_statistic(manifest, stats),
    }


def robustness(manifest, statistics, status, n_seeds=None, resamples=ROBUSTNESS_RESAMPLES):
    """How often a seed-bootstrap resample of every per-seed statistic gives the same status."""
    per_seed = {
        k: np.asarray(v, dtype=float)
        for k, v in statistics.items()
        if v is not None and not isinstance(v, dict) and np.ndim(v) == 1 and len(v) > 0
    }
    lengths = sorted({v.size for v in per_seed.values()})
    if not per_seed or resamples <= 0:
        return {"fraction": None, "resamples": 0, "statuses": {}, "note": "no per-seed statistic"}
    rng = np.random.default_rng(_ROBUSTNESS_SEED)
    tally: dict[str, int] = {}
    for _ in range(resamples):
        # Statistics of equal length share the seed index, so a resample draws whole seeds.
        idx = {n: rng.integers(0, n, size=n) for n in lengths}
        resampled = dict(statistics)
        resampled.update({k: v[idx[v.size]] for k, v in per_seed.items()})
        try:
            _, rows = _evaluate(manifest, resampled, n_seeds)
            got = _status(rows["checks"], rows["controls"])[0]
        except StatisticError:
            got = "error"
        tally[got] = tally.get(got, 0) + 1
    return {
        "fraction": tally.get(status, 0) / resamples,
        "resamples": resamples,
        "statuses": dict(sorted(tally.items(), key=lambda kv: -kv[1])),
    }


def key_statistic(manifest: dict[str, Any], stats: dict[str, dict]) -> dict[str, Any]:
    spec = manifest["key_statistic"]
    measured, theory = stats.get(spec["measured"]) or {}, stats.get(spec.get("theory")) or {}
    return {
        "label": spec["label"],
        "measured": measured.get("value"),
        "ci": measured.get("ci"),
        "n": measured.get("n"),
        "theory": theory.get("value"),
    }


def error_verdict(manifest: dict[str, Any], reason: str, **extra) -> dict[str, Any]:
    zero = dict.fromkeys(OUTCOMES, 0)
    verdict = {
        "slug": manifest["slug"],
        "status": "error",
        "reason": reason,
        "primary": None,
        "checks": [],
        "controls": [],
        "preconditions": [],
        "counts": {"checks": zero, "ablations": dict(zero), "preconditions": dict(zero)},
        "robustness": {"fraction": None, "resamples": 0, "statuses": {}},
        "statistics": {},
        "key": {
            "label": manifest["key_statistic"]["label"],
            "measured": None,
            "ci": None,
            "n": None,
            "theory": None,
        },
    }
    verdict.update(extra)
    return verdict
