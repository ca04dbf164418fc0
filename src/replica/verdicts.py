"""Turn a claim's statistics into a verdict, using only the thresholds of its manifest.

Status rules (the same for every claim):
- ``error``: a step failed, or a statistic the manifest names is missing or not finite;
- ``replicated``: every check passes and every negative control came out opposite;
- ``not-replicated``: no check passes;
- ``partial``: anything in between (some checks fail, or a control does not discriminate,
  which means the check could not have told the two outcomes apart).
"""

from __future__ import annotations

import math
import operator
from typing import Any

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
STATUSES = ("replicated", "partial", "not-replicated", "error")


def statistic(value: Any) -> dict[str, Any]:
    """Normalise a statistic: a float, or a dict with value and optional ci / n (seeds)."""
    if isinstance(value, dict):
        out = dict(value)
        out["value"] = float(out["value"]) if out.get("value") is not None else math.nan
        return out
    return {"value": float(value) if value is not None else math.nan}


def mean_ci(samples, z: float = 1.96) -> dict[str, Any]:
    """Mean over seeds with a normal-approximation 95% interval and the seed count."""
    import numpy as np

    x = np.asarray(samples, dtype=float).ravel()
    n = x.size
    mean = float(x.mean())
    half = float(z * x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"value": mean, "ci": [mean - half, mean + half], "n": int(n)}


def _evaluate(spec: dict[str, Any], stats: dict[str, dict]) -> dict[str, Any]:
    stat = stats.get(spec["statistic"])
    row = {k: spec[k] for k in ("name", "statistic", "op", "threshold", "what")}
    if stat is None or not math.isfinite(stat["value"]):
        row.update(value=None, passed=None, ci=None, n=None)
        return row
    row.update(
        value=stat["value"],
        ci=stat.get("ci"),
        n=stat.get("n"),
        passed=bool(OPS[spec["op"]](stat["value"], spec["threshold"])),
    )
    return row


def judge(manifest: dict[str, Any], statistics: dict[str, Any]) -> dict[str, Any]:
    stats = {name: statistic(v) for name, v in statistics.items()}
    checks = [_evaluate(c, stats) for c in manifest["checks"]]
    controls = [_evaluate(c, stats) for c in manifest["controls"]]
    for row in controls:
        row["discriminates"] = row.pop("passed")

    missing = [r["statistic"] for r in checks + controls if r["value"] is None]
    if missing:
        return error_verdict(
            manifest,
            f"statistics missing or not finite: {', '.join(sorted(set(missing)))}",
            checks=checks,
            controls=controls,
            statistics=stats,
        )
    n_pass = sum(r["passed"] for r in checks)
    failed = [r["name"] for r in checks if not r["passed"]]
    blind = [r["name"] for r in controls if not r["discriminates"]]
    if n_pass == len(checks) and not blind:
        status, reason = "replicated", "every check passes and every control discriminates"
    elif n_pass == 0:
        status, reason = "not-replicated", f"no check passes ({', '.join(failed)})"
    else:
        parts = []
        if failed:
            parts.append(f"checks failing: {', '.join(failed)}")
        if blind:
            parts.append(f"controls not discriminating: {', '.join(blind)}")
        status, reason = "partial", "; ".join(parts)
    return {
        "slug": manifest["slug"],
        "status": status,
        "reason": reason,
        "checks": checks,
        "controls": controls,
        "statistics": stats,
        "key": key_statistic(manifest, stats),
    }


def key_statistic(manifest: dict[str, Any], stats: dict[str, dict]) -> dict[str, Any]:
    spec = manifest["key_statistic"]
    measured, theory = stats.get(spec["measured"], {}), stats.get(spec["theory"], {})
    return {
        "label": spec["label"],
        "measured": measured.get("value"),
        "ci": measured.get("ci"),
        "n": measured.get("n"),
        "theory": theory.get("value"),
    }


def error_verdict(manifest: dict[str, Any], reason: str, **extra) -> dict[str, Any]:
    verdict = {
        "slug": manifest["slug"],
        "status": "error",
        "reason": reason,
        "checks": [],
        "controls": [],
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
