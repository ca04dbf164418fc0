"""Helpers for claim notebooks: load a claim's results, show its verdict, save its figure.

Notebooks read results and never train; everything they show comes from the files here.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from replica import runtime

BADGE_COLORS = {
    "replicated": "#1a7f37",
    "partial": "#9a6700",
    "inconclusive": "#8250df",
    "not-replicated": "#cf222e",
    "error": "#57606a",
}
OUTCOME_COLORS = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#8250df"}
ROW_KINDS = (("check", "checks"), ("ablation", "controls"), ("precondition", "preconditions"))


def load_results(results_dir) -> dict:
    """metrics, theory and verdict of one claim (and its data arrays) as plain objects."""
    root = Path(results_dir)
    out = {
        name: runtime.read_json(root / f"{name}.json") for name in ("metrics", "theory", "verdict")
    }
    out["data"] = runtime.read_npz(root / "data.npz")
    return out


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def interval_text(row: dict) -> str:
    """'0.94 [0.89, 0.99] (8 seeds)', or the bare value of a deterministic statistic."""
    text = _fmt(row.get("value"))
    ci = row.get("ci")
    if ci and None not in ci:
        text += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
    if row.get("n"):
        text += f" ({row['n']} seeds)"
    return text


def gate_text(row: dict) -> str:
    """The declared gate in words, e.g. 'whole 95 % interval >= 0.9'."""
    gate = row.get("gate", "interval")
    if gate == "band":
        lo, hi = row["band"]
        where = f" (theory {row['relative_to']})" if row.get("relative_to") else ""
        return f"whole 95 % interval inside [{_fmt(lo)}, {_fmt(hi)}]{where}"
    cond = f"{row['op']} {_fmt(row['threshold'])}"
    if gate == "seeds":
        return f"at least {row['min_fraction']:.0%} of seeds {cond} one by one"
    if gate == "mean":
        return f"seed mean {cond}"
    return f"whole 95 % interval {cond}" if row.get("n") else cond


def _seed_spread(row: dict) -> str:
    values = row.get("per_seed")
    if not values or len(values) < 2:
        return ""
    text = f"per seed {_fmt(min(values))} to {_fmt(max(values))}"
    if "op" in row and row.get("gate") != "band":
        import operator

        op = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[row["op"]]
        hits = sum(op(v, row["threshold"]) for v in values)
        text += f", {hits} of {len(values)} seeds {row['op']} {_fmt(row['threshold'])}"
    return text


def checks_table_html(verdict: dict, anchors: bool = False) -> str:
    """Every check, ablation and precondition as an HTML table: statistic, gate and outcome.

    With ``anchors`` each row gets ``id="check-<name>"`` and a permalink (the claim page's
    table; the notebook's copy further down the same page has none, so ids stay unique).
    """
    rows = []
    for kind, key in ROW_KINDS:
        for row in verdict.get(key, []):
            outcome = row.get("outcome", "—")
            name = html.escape(row["name"] + (" (primary)" if row.get("primary") else ""))
            anchor = html.escape(f"check-{row['name']}", quote=True)
            if anchors:
                name += f" <a class='permalink' href='#{anchor}' title='link to this check'>#</a>"
            cells = [html.escape(str(c)) for c in (row["what"], interval_text(row), gate_text(row))]
            rows.append(
                (f"<tr id='{anchor}'>" if anchors else "<tr>")
                + f"<td>{html.escape(kind)}</td><td>{name}</td>"
                + "".join(f"<td>{c}</td>" for c in cells)
                + f"<td style='color:{OUTCOME_COLORS.get(outcome, '#57606a')}'>"
                + f"<b>{html.escape(outcome)}</b></td></tr>"
            )
    head = (
        "<tr><th>kind</th><th>name</th><th>what</th><th>statistic: mean [95% CI] (seeds)</th>"
        "<th>gate</th><th>outcome</th></tr>"
    )
    return f"<table class='checks'>{head}{''.join(rows)}</table>"


def verdict_html(verdict: dict) -> str:
    """The verdict line, its seed robustness and the table of checks (for notebooks)."""
    status = verdict["status"]
    color = BADGE_COLORS.get(status, "#57606a")
    robust = robustness_text(verdict)
    return (
        f"<p><b>Verdict: <span style='color:{color}'>{html.escape(status)}</span></b> — "
        f"{html.escape(verdict.get('reason', ''))}</p>"
        + (f"<p>{html.escape(robust)}</p>" if robust else "")
        + checks_table_html(verdict)
        + "<p><small>An ablation passes when the effect is absent in the arm without the "
        "mechanism; preconditions are shown and never counted.</small></p>"
    )


def robustness_text(verdict: dict) -> str:
    rob = verdict.get("robustness") or {}
    if rob.get("fraction") is None:
        return ""
    others = ", ".join(
        f"{s} {n / rob['resamples']:.0%}"
        for s, n in rob.get("statuses", {}).items()
        if s != verdict["status"]
    )
    return (
        f"Seed robustness: {rob['fraction']:.0%} of {rob['resamples']} seed-bootstrap resamples "
        f"give the same status" + (f" (otherwise: {others})." if others else ".")
    )


def counts_text(verdict: dict) -> str:
    """'checks 3 pass / 1 fail / 0 inconclusive; ablations 2 / 0 / 0' for cards and pages."""
    c = verdict.get("counts") or {}
    parts = []
    for label, key in (("checks", "checks"), ("ablations", "ablations")):
        n = c.get(key) or {}
        parts.append(
            f"{label}: {n.get('pass', 0)} pass, {n.get('fail', 0)} fail, "
            f"{n.get('inconclusive', 0)} inconclusive"
        )
    return "; ".join(parts)


def _md(text: str) -> str:
    """Manifest text as literal markdown: no links, emphasis or HTML from its brackets."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return re.sub(r"([\\`*_\[\]#|])", r"\\\1", text)


def _row_sentence(kind: str, row: dict) -> str:
    spread = _seed_spread(row)
    return (
        f"- {kind} `{row['name']}` ({_md(row['what'])}): {interval_text(row)}"
        + (f"; {spread}" if spread else "")
        + f". Gate: {gate_text(row)}: **{row.get('outcome', '—')}**."
        + (f" Note: {row['note']}." if row.get("note") else "")
    )


def findings(verdict: dict) -> str:
    """'What we found', written from verdict.json alone (markdown): nothing typed by hand."""
    status = verdict["status"]
    scale = verdict.get("scale", "?")
    lines = [
        f"**What we found ({scale} scale, {verdict.get('seeds', '?')} seeds).** "
        f"Status **{status}**: {_md(verdict.get('reason', ''))}."
    ]
    if status == "error":
        return lines[0]
    lines.append(counts_text(verdict) + ".")
    key = verdict.get("key") or {}
    if key.get("measured") is not None:
        measured = {"value": key["measured"], "ci": key.get("ci"), "n": key.get("n")}
        text = f"Key statistic, {_md(key['label'])}: measured {interval_text(measured)}"
        if key.get("theory") is not None:
            text += f" vs theory {_fmt(key['theory'])}"
            if key["theory"] not in (0, 0.0):
                text += f" (ratio {_fmt(key['measured'] / key['theory'])})"
        lines.append(text + ".")
    robust = robustness_text(verdict)
    if robust:
        lines.append(robust)
    bullets = []
    for kind, key_ in ROW_KINDS:
        for row in sorted(verdict.get(key_, []), key=lambda r: not r.get("primary")):
            bullets.append(_row_sentence("primary check" if row.get("primary") else kind, row))
    return " ".join(lines) + "\n\n" + "\n".join(bullets)


def show_findings(verdict: dict):
    from IPython.display import Markdown, display

    display(Markdown(findings(verdict)))


def show_verdict(verdict: dict):
    from IPython.display import HTML, display

    display(HTML(verdict_html(verdict)))


def save_figure(fig, path) -> None:
    """The gallery thumbnail: the notebook's main figure, saved where the workflow expects it.

    In a notebook the saved image is then the cell's output and the figure is closed, so it
    is drawn once: matplotlib's inline backend would otherwise draw it a second time.
    """
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    if get_ipython() is not None:
        import matplotlib.pyplot as plt

        display(Image(filename=str(path)))
        plt.close(fig)


def finite(values) -> np.ndarray:
    """Refuse to plot non-finite numbers silently."""
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError("non-finite values in plotted data")
    return arr


def t95(dof):
    """Student-t quantile of a two-sided 95 % interval, elementwise over integer dof.

    The closed form of replica.verdicts: the same quantile the verdict gates use, and a
    notebook that draws seed bands no longer imports scipy.stats (a second or two per page).
    Like scipy, NaN below one degree of freedom (a single seed has no band).
    """
    from replica.verdicts import t_quantile

    def quantile(k: int) -> float:
        return t_quantile(k) if k >= 1 else float("nan")

    values = np.vectorize(quantile, otypes=[float])(np.asarray(dof, dtype=int))
    return float(values) if values.ndim == 0 else values
