"""Helpers for claim notebooks: load a claim's results, show its verdict, save its figure.

Notebooks read results and never train; everything they show comes from the files here.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from replica import runtime

BADGE_COLORS = {
    "replicated": "#1a7f37",
    "partial": "#9a6700",
    "not-replicated": "#cf222e",
    "error": "#57606a",
}


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


def verdict_html(verdict: dict) -> str:
    """The verdict as an HTML table: each check and control, its statistic and threshold."""
    status = verdict["status"]
    color = BADGE_COLORS.get(status, "#57606a")
    rows = []
    for kind, key in (("check", "passed"), ("control", "discriminates")):
        for row in verdict.get(f"{kind}s", []):
            ok = row.get(key)
            mark = "—" if ok is None else ("yes" if ok else "no")
            ci = row.get("ci")
            ci_txt = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci and None not in ci else ""
            n_txt = f" (n={row['n']})" if row.get("n") else ""
            rows.append(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(str(c))}</td>"
                    for c in (
                        kind,
                        row["name"],
                        row["what"],
                        _fmt(row.get("value")) + ci_txt + n_txt,
                        f"{row['op']} {_fmt(row['threshold'])}",
                        mark,
                    )
                )
                + "</tr>"
            )
    head = (
        "<tr><th>kind</th><th>name</th><th>what</th><th>statistic (95% CI, seeds)</th>"
        "<th>threshold</th><th>passed / discriminates</th></tr>"
    )
    return (
        f"<p><b>Verdict: <span style='color:{color}'>{html.escape(status)}</span></b> — "
        f"{html.escape(verdict.get('reason', ''))}</p>"
        f"<table>{head}{''.join(rows)}</table>"
    )


def show_verdict(verdict: dict):
    from IPython.display import HTML, display

    display(HTML(verdict_html(verdict)))


def save_figure(fig, path) -> None:
    """The gallery thumbnail: the notebook's main figure, saved where the workflow expects it."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")


def finite(values) -> np.ndarray:
    """Refuse to plot non-finite numbers silently."""
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError("non-finite values in plotted data")
    return arr
