"""Verdict figures drawn from ``verdict.json`` alone, as SVG (no claim-specific code).

Two pictures, both generic over every gate the contract has (``interval``, ``band``, ``seeds``):

- :func:`verdict_svg`: one strip per check, ablation and precondition, in the statistic's own
  units: per-seed values as dots, the seed mean with its 95 % interval, the region that passes
  the gate shaded and its edge drawn; colour is the outcome. ``compact=True`` is the card's
  version (no text, no preconditions).
- :func:`forest_margin` and :func:`forest_strip`: the index's forest plot puts every claim's
  primary check on one axis. The axis is the distance from the gate's boundary, in half-widths
  of the check's own 95 % interval, signed so that the passing side is positive: the interval
  clears the gate when its left end is right of 0 (pass), lies wholly left of 0 (fail), and
  straddles 0 otherwise (inconclusive), the rule of ``verdicts.gate_outcome`` (a point exactly
  on 0 is decided by the gate's operator, strict or not). A seed-mean gate is decided by the
  mean alone, drawn as a point; a seed-by-seed gate by its decisive seed (the k-th best, k the
  number of seeds that must pass), drawn as a diamond among the seeds. The axis is
  ``asinh``-scaled so that a check that clears its gate by 50 half-widths and one that misses
  by half a width are both readable.

SVG is written by hand: the files are small, sharp at any size, and cost no matplotlib import.
"""

from __future__ import annotations

import math
from html import escape

from replica.report import BADGE_COLORS, OUTCOME_COLORS, ROW_KINDS, gate_text, interval_text
from replica.verdicts import OPS

PASS_FILL = "#dafbe1"  # the region of the axis where the gate passes
EDGE = "#24292f"
MUTED = "#57606a"
FONT = "font-family='system-ui, sans-serif'"
# Forest axis: margins beyond this many half-widths are drawn at the edge, as an arrow.
FOREST_CLIP = 100.0
FOREST_TICKS = (-100, -10, -3, -1, 0, 1, 3, 10, 100)
SECTION_TITLES = {
    "check": "checks",
    "ablation": "ablations: the trained arm with the mechanism removed",
    "precondition": "preconditions: shown, never counted",
}


def _attr(text) -> str:
    return escape(str(text), quote=True)


def _num(x: float) -> str:
    return f"{x:.1f}"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def interval(row: dict) -> tuple[float, float]:
    """The row's 95 % interval as floats: the value itself for an exact statistic (no
    interval), (-inf, inf) for a single seed (verdict.json writes infinite ends as null)."""
    ci = row.get("ci")
    if ci is None:
        return float(row["value"]), float(row["value"])
    lo = -math.inf if ci[0] is None else float(ci[0])
    hi = math.inf if ci[1] is None else float(ci[1])
    return lo, hi


# ---- a check in its own units ---------------------------------------------------------------


def passing_region(row: dict) -> tuple[float, float]:
    """The values of the statistic that pass the row's gate (an interval, maybe unbounded)."""
    if row.get("gate") == "band":
        lo, hi = row["band"]
        return float(lo), float(hi)
    if row["op"] in (">", ">="):
        return float(row["threshold"]), math.inf
    return -math.inf, float(row["threshold"])


def _gate_edges(row: dict) -> list[float]:
    return _finite(passing_region(row))


def _row_values(row: dict) -> list[float]:
    return _finite([row.get("value"), *interval(row), *(row.get("per_seed") or [])])


class _Scale:
    """Maps a statistic onto [x0, x1] pixels: linear, or log10 when every value is positive
    and they span more than two decades."""

    def __init__(self, values: list[float], x0: float, x1: float):
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        self.log = lo > 0 and hi / lo > 100
        if self.log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1e-300):
            pad = max(abs(lo) * 0.1, 0.5)
            lo, hi = lo - pad, hi + pad
        pad = 0.08 * (hi - lo)
        self.lo, self.hi = lo - pad, hi + pad
        self.x0, self.x1 = x0, x1

    def __call__(self, value: float) -> float:
        if value == math.inf:
            return self.x1
        if value == -math.inf:
            return self.x0
        if self.log and value <= 0:
            return self.x0
        v = math.log10(value) if self.log else value
        v = min(max(v, self.lo), self.hi)
        return self.x0 + (v - self.lo) / (self.hi - self.lo) * (self.x1 - self.x0)

    def ticks(self) -> list[float]:
        if self.log:
            first, last = math.ceil(self.lo), math.floor(self.hi)
            step = max(1, math.ceil((last - first + 1) / 4))
            return [10.0**e for e in range(first, last + 1, step)]
        return nice_ticks(self.lo, self.hi)


def nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) inside [lo, hi]."""
    span = hi - lo
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    ticks, tick = [], first
    while tick <= hi + step * 1e-9:
        ticks.append(0.0 if abs(tick) < step * 1e-9 else tick)
        tick += step
    return ticks


def _jitter(i: int, spread: float) -> float:
    """A fixed vertical offset for seed i: overlapping seeds stay apart, the same every build."""
    return ((i * 0.618034) % 1 - 0.5) * spread


def _strip(row: dict, x0: float, x1: float, y: float, height: float, axis: bool) -> list[str]:
    """One row's picture between x0 and x1, centred on y."""
    color = OUTCOME_COLORS.get(row.get("outcome"), MUTED)
    scale = _Scale(_row_values(row) + _gate_edges(row), x0, x1)
    top, bottom = y - height / 2, y + height / 2
    lo, hi = passing_region(row)
    out = [
        f"<rect x='{_num(scale(lo))}' y='{_num(top)}' width='{_num(scale(hi) - scale(lo))}' "
        f"height='{_num(height)}' fill='{PASS_FILL}'/>",
        f"<line x1='{x0}' x2='{x1}' y1='{_num(bottom)}' y2='{_num(bottom)}' stroke='#d0d7de'/>",
    ]
    for edge in _gate_edges(row):
        out.append(
            f"<line x1='{_num(scale(edge))}' x2='{_num(scale(edge))}' y1='{_num(top)}' "
            f"y2='{_num(bottom)}' stroke='{EDGE}' stroke-dasharray='3 2'/>"
        )
    seeds = _finite(row.get("per_seed") or [])
    per_seed_gate = row.get("gate") == "seeds"
    for i, value in enumerate(seeds):
        dy = _jitter(i, height * 0.55)
        fill = color
        if per_seed_gate:  # the gate counts seeds one by one: colour each by its own test
            passes = OPS[row["op"]](value, row["threshold"])
            fill = OUTCOME_COLORS["pass" if passes else "fail"]
        out.append(
            f"<circle cx='{_num(scale(value))}' cy='{_num(y + dy)}' r='2.6' fill='{fill}' "
            f"fill-opacity='0.45'/>"
        )
    ci_lo, ci_hi = interval(row)
    if ci_lo < ci_hi:  # an unbounded one (a single seed) runs faintly across the whole strip
        faint = "" if math.isfinite(ci_hi - ci_lo) else " stroke-opacity='0.35'"
        out.append(
            f"<line x1='{_num(scale(ci_lo))}' x2='{_num(scale(ci_hi))}' y1='{_num(y)}' "
            f"y2='{_num(y)}' stroke='{color}' stroke-width='3' stroke-linecap='round'{faint}/>"
        )
    if row.get("value") is not None and math.isfinite(row["value"]):
        out.append(_diamond(scale(row["value"]), y, 4.2, color, " stroke='#fff'"))
    if axis:
        for tick in scale.ticks():
            tx = scale(tick)
            out.append(
                f"<line x1='{_num(tx)}' x2='{_num(tx)}' y1='{_num(bottom)}' "
                f"y2='{_num(bottom + 3)}' stroke='{MUTED}'/>"
                f"<text x='{_num(tx)}' y='{_num(bottom + 13)}' font-size='9' fill='{MUTED}' "
                f"text-anchor='middle' {FONT}>{_fmt(tick)}</text>"
            )
    return out


def _diamond(cx: float, cy: float, r: float, fill: str, extra: str = "") -> str:
    return (
        f"<path d='M{_num(cx - r)} {_num(cy)} L{_num(cx)} {_num(cy - r)} L{_num(cx + r)} "
        f"{_num(cy)} L{_num(cx)} {_num(cy + r)} Z' fill='{fill}'{extra}/>"
    )


def _tooltip(kind: str, row: dict) -> str:
    return (
        f"{kind} {row['name']}: {interval_text(row)}; gate {gate_text(row)}: "
        f"{row.get('outcome', '-')}"
    )


def _rows(verdict: dict, with_preconditions: bool) -> list[tuple[str, dict]]:
    rows = []
    for kind, key in ROW_KINDS:
        if kind == "precondition" and not with_preconditions:
            continue
        ordered = sorted(verdict.get(key, []), key=lambda r: not r.get("primary"))
        rows += [(kind, row) for row in ordered]
    return rows


def verdict_svg(verdict: dict, compact: bool = False) -> str:
    """The verdict figure of one claim (see the module docstring)."""
    rows = _rows(verdict, with_preconditions=not compact)
    if compact:
        return _compact_svg(verdict, rows)
    width, left, right, row_h, head_h = 760, 250, 660, 40, 22
    parts, y, kind_now = [], 8.0, None
    for kind, row in rows:
        if kind != kind_now:
            kind_now = kind
            y += 6
            parts.append(
                f"<text x='4' y='{_num(y + 12)}' font-size='12' font-weight='600' "
                f"fill='{EDGE}' {FONT}>{_attr(SECTION_TITLES[kind])}</text>"
            )
            y += head_h
        centre = y + 14
        name = row["name"] + (" (primary)" if row.get("primary") else "")
        short = name if len(name) <= 38 else name[:36] + "…"
        outcome = row.get("outcome", "-")
        parts.append(
            f"<a href='#check-{_attr(row['name'])}'><g>"
            f"<title>{_attr(_tooltip(kind, row))}</title>"
            f"<text x='4' y='{_num(centre + 4)}' font-size='11' fill='{EDGE}' {FONT} "
            f"font-weight='{600 if row.get('primary') else 400}'>{_attr(short)}</text>"
            + "".join(_strip(row, left, right, centre, 18, axis=True))
            + f"<text x='{right + 12}' y='{_num(centre + 4)}' font-size='11' font-weight='600' "
            f"fill='{OUTCOME_COLORS.get(outcome, MUTED)}' {FONT}>{_attr(outcome)}</text>"
            "</g></a>"
        )
        y += row_h
    if not rows:
        parts.append(
            f"<text x='4' y='24' font-size='12' fill='{MUTED}' {FONT}>"
            f"no checks to draw: {_attr(verdict.get('reason', ''))}</text>"
        )
        y = 40
    legend_y = y + 10
    parts.append(
        f"<g font-size='10' fill='{MUTED}' {FONT}>"
        f"<rect x='4' y='{_num(legend_y)}' width='14' height='10' fill='{PASS_FILL}'/>"
        f"<text x='22' y='{_num(legend_y + 9)}'>passes the gate</text>"
        f"<line x1='120' x2='120' y1='{_num(legend_y)}' y2='{_num(legend_y + 10)}' "
        f"stroke='{EDGE}' stroke-dasharray='3 2'/>"
        f"<text x='126' y='{_num(legend_y + 9)}'>gate edge</text>"
        f"<circle cx='200' cy='{_num(legend_y + 5)}' r='2.6' fill='{MUTED}' fill-opacity='0.45'/>"
        f"<text x='207' y='{_num(legend_y + 9)}'>one seed</text>"
        f"<line x1='270' x2='292' y1='{_num(legend_y + 5)}' y2='{_num(legend_y + 5)}' "
        f"stroke='{MUTED}' stroke-width='3'/>"
        f"<text x='298' y='{_num(legend_y + 9)}'>95 % interval, with the seed mean</text>"
        f"<text x='500' y='{_num(legend_y + 9)}'>colour: "
        + ", ".join(
            f"<tspan fill='{OUTCOME_COLORS[o]}' font-weight='600'>{o}</tspan>"
            for o in OUTCOME_COLORS
        )
        + "</text></g>"
    )
    height = legend_y + 18
    return _svg(width, height, "".join(parts), f"verdict figure of {verdict.get('slug', '')}")


def _compact_svg(verdict: dict, rows: list[tuple[str, dict]]) -> str:
    width, row_h, left, right = 320, 13, 4, 300
    parts, y, kind_now = [], 2.0, None
    if not rows:
        text = "no verdict" if verdict.get("status") == "error" else "no checks"
        parts.append(f"<text x='4' y='14' font-size='11' fill='{MUTED}' {FONT}>{text}</text>")
        return _svg(width, 20, "".join(parts), "no verdict figure")
    for kind, row in rows:
        if kind_now is not None and kind != kind_now:
            parts.append(
                f"<line x1='0' x2='{width}' y1='{_num(y + 1)}' y2='{_num(y + 1)}' "
                f"stroke='{MUTED}' stroke-width='0.6'/>"
            )
            y += 3
        kind_now = kind
        centre = y + row_h / 2
        outcome = row.get("outcome", "-")
        parts.append(
            f"<g><title>{_attr(_tooltip(kind, row))}</title>"
            + "".join(_strip(row, left, right, centre, row_h - 2, axis=False))
            + f"<circle cx='{right + 10}' cy='{_num(centre)}' r='4' "
            f"fill='{OUTCOME_COLORS.get(outcome, MUTED)}'/></g>"
        )
        y += row_h
    return _svg(width, y + 2, "".join(parts), f"verdict figure of {verdict.get('slug', '')}")


def _svg(width: float, height: float, body: str, label: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {_num(width)} {_num(height)}' "
        f"width='{_num(width)}' height='{_num(height)}' role='img' aria-label='{_attr(label)}'>"
        f"{body}</svg>"
    )


# ---- the forest plot: every claim's primary check on one axis --------------------------------


def _clearance(row: dict, x: float) -> float:
    """Signed distance of a value from the gate's boundary, positive on the passing side."""
    lo, hi = passing_region(row)
    return min(x - lo, hi - x)


def forest_margin(row: dict | None) -> dict | None:
    """The primary check on the forest axis, in half-widths of its 95 % interval.

    ``near`` is the clearance of the whole interval (pass when > 0), ``far`` that of its best
    point (fail when < 0), ``value`` that of the seed mean; per-seed values are placed the same
    way. A zero-width interval (every seed equal, or an exact statistic) and a single seed's
    unbounded one have no unit: margins are +-inf, drawn at the axis edge (0 on the boundary),
    and a single seed's interval spans the axis (near -inf, far +inf). Seed-mean and
    seed-by-seed gates: see the module docstring.
    """
    if not row or row.get("value") is None:
        return None
    ci = interval(row)
    half = (ci[1] - ci[0]) / 2

    def unit(d: float) -> float:
        if 0 < half < math.inf:
            return d / half
        return 0.0 if d == 0 else math.copysign(math.inf, d)  # no finite unit: only the side

    lo, hi = passing_region(row)
    # The interval's point deepest inside the passing region: the region's middle, clamped.
    middle = (lo + hi) / 2 if math.isfinite(lo + hi) else (hi if hi == math.inf else lo)
    best = min(max(middle, ci[0]), ci[1])
    near = min(_clearance(row, ci[0]), _clearance(row, ci[1]))  # (replaced when unbounded)
    margin = {
        "value": unit(_clearance(row, row["value"])),
        "near": unit(near),
        "far": unit(_clearance(row, best)),
        "per_seed": [unit(_clearance(row, v)) for v in _finite(row.get("per_seed") or [])],
        "exact": half == 0,
        "unbounded": math.isinf(half),
        "decisive_seed": False,
    }
    if margin["unbounded"]:  # nothing is known about seed noise: the interval is everything
        margin["near"], margin["far"] = -math.inf, math.inf
    gate = row.get("gate", "interval")
    if gate == "mean":
        margin["near"] = margin["far"] = margin["value"]
    elif gate == "seeds":
        margin.update(_decisive_seed(row, margin["per_seed"] or [margin["value"]]))
    return margin


def _decisive_seed(row: dict, seed_margins: list[float]) -> dict:
    """A seed-by-seed gate passes when at least k = ceil(min_fraction * n) seeds pass, that is
    when the k-th best seed does: that seed's margin decides, near = far = it."""
    k = math.ceil(row["min_fraction"] * len(seed_margins) - 1e-9)
    decisive = math.inf if k <= 0 else sorted(seed_margins, reverse=True)[k - 1]
    return {"value": decisive, "near": decisive, "far": decisive, "decisive_seed": True}


def forest_x(margin: float, x0: float, x1: float) -> float:
    """Pixel position of a margin on the asinh-scaled forest axis between x0 and x1."""
    top = math.asinh(FOREST_CLIP)
    m = max(min(margin, FOREST_CLIP), -FOREST_CLIP)
    return x0 + (math.asinh(m) + top) / (2 * top) * (x1 - x0)


def forest_strip(row: dict | None, status: str, width: int = 360, height: int = 20) -> str:
    """One claim's row of the forest plot (its primary check), for an inline <svg>."""
    margin = forest_margin(row)
    zero = forest_x(0, 0, width)
    parts = [
        f"<rect x='{_num(zero)}' y='0' width='{_num(width - zero)}' height='{height}' "
        f"fill='{PASS_FILL}'/>",
        f"<line x1='{_num(zero)}' x2='{_num(zero)}' y1='0' y2='{height}' stroke='{EDGE}' "
        "stroke-dasharray='3 2'/>",
    ]
    y = height / 2
    if margin is None:
        parts.append(
            f"<text x='{_num(zero + 6)}' y='{_num(y + 4)}' font-size='10' fill='{MUTED}' "
            f"{FONT}>no primary check</text>"
        )
        return _svg(width, height, "".join(parts), "no primary check")
    color = OUTCOME_COLORS.get(row.get("outcome"), BADGE_COLORS.get(status, MUTED))
    for i, m in enumerate(margin["per_seed"]):
        dy = _jitter(i, height * 0.5)
        parts.append(
            f"<circle cx='{_num(forest_x(m, 0, width))}' cy='{_num(y + dy)}' r='2' "
            f"fill='{color}' fill-opacity='0.35'/>"
        )
    near, far = forest_x(margin["near"], 0, width), forest_x(margin["far"], 0, width)
    if far > near:  # the interval (faint when a single seed leaves it unbounded)
        faint = " stroke-opacity='0.35'" if margin["unbounded"] else ""
        parts.append(
            f"<line x1='{_num(near)}' x2='{_num(far)}' y1='{_num(y)}' y2='{_num(y)}' "
            f"stroke='{color}' stroke-width='3' stroke-linecap='round'{faint}/>"
        )
    cx = forest_x(margin["value"], 0, width)
    if abs(margin["value"]) >= FOREST_CLIP:  # off the axis: an arrow at the edge
        tip, back = (width - 1, width - 9) if margin["value"] > 0 else (1, 9)
        parts.append(
            f"<path d='M{_num(back)} {_num(y - 5)} L{_num(tip)} {_num(y)} L{_num(back)} "
            f"{_num(y + 5)} Z' fill='{color}'/>"
        )
    elif margin["decisive_seed"]:  # a seed-by-seed gate: the seed that decides, a diamond
        parts.append(_diamond(cx, y, 5, color))
    else:
        parts.append(f"<circle cx='{_num(cx)}' cy='{_num(y)}' r='4.5' fill='{color}'/>")
    label = f"primary check {row['name']}: {row.get('outcome', '-')}"
    return _svg(width, height, "".join(parts), label)


def forest_axis(width: int = 360, height: int = 26) -> str:
    """The forest plot's axis: ticks in half-widths of the interval, the gate at 0."""
    parts = [f"<line x1='0' x2='{width}' y1='2' y2='2' stroke='{MUTED}'/>"]
    for tick in FOREST_TICKS:
        x = forest_x(tick, 0, width)
        anchor = "start" if x < 8 else "end" if x > width - 8 else "middle"
        parts.append(
            f"<line x1='{_num(x)}' x2='{_num(x)}' y1='2' y2='6' stroke='{MUTED}'/>"
            f"<text x='{_num(x)}' y='16' font-size='9' fill='{MUTED}' text-anchor='{anchor}' "
            f"{FONT}>{'+' if tick > 0 else ''}{tick}</text>"
        )
    parts.append(
        f"<text x='{_num(width / 2)}' y='{height - 1}' font-size='9' fill='{MUTED}' "
        f"text-anchor='middle' {FONT}>margin to the gate, in half-widths of the 95 % interval "
        "(passing side right)</text>"
    )
    return _svg(width, height, "".join(parts), "forest plot axis")
