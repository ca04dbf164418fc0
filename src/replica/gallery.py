"""The static figure gallery: index (one card per claim), coverage page, summary.json.

Offline by construction: no network assets, relative links only, Jinja2 with autoescape.

    python -m replica.gallery --scale quick --gallery figures --results results CLAIM...
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from replica import registry, runtime, verdict_figure
from replica.notebooks import mathjax_dir
from replica.report import BADGE_COLORS, counts_text, gate_text, interval_text
from replica.runtime import TRAIN_SECONDS_KEY
from replica.verdicts import error_verdict

TEMPLATES = Path(__file__).parent / "templates"
LEDGER = Path(__file__).parent / "data" / "ledger.yaml"
STEPS = ("generate", "train", "verdict", "notebook")
STATIC = ("style.css", "gallery.js")  # copied next to index.html
# The index's sort orders: (key in the page's data attributes, label); the first is the default.
SORTS = (
    ("theme", "theme, then ledger order"),
    ("status", "verdict (replicated first)"),
    ("margin", "primary check: nearest its gate first"),
    ("robustness", "seed robustness (least robust first)"),
    ("runtime", "runtime (slowest first)"),
    ("year", "year (newest first)"),
    ("slug", "name (A-Z)"),
)
# The coverage page's stages of a ledger paper, in the order its progress bars stack them.
STAGES = {
    "implemented": "#1a7f37",
    "proxy": "#bf8700",
    "planned": "#8c959f",
    "out of scope": "#d0d7de",
}

# Why a paper of the ledger has no claim chain yet, by tier.
NOT_BUILT = {
    "A": ("planned", "quantitative theory check at toy scale; design ready, chain not built yet"),
    "B": ("planned", "qualitative trend check at toy scale; design ready, chain not built yet"),
    "C": ("proxy", "needs large models or real data; only a scaled-down proxy is possible"),
    "D": ("out of scope", "no empirically testable claim at any scale we can run"),
}


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def read_benchmark_seconds(path: Path) -> float:
    with open(path) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return sum(float(r["s"]) for r in rows)


def read_train_seconds(path: Path) -> float:
    """The wall time the train step stored in its output (cached rules have no benchmark)."""
    with np.load(path, allow_pickle=False) as handle:
        return float(handle[TRAIN_SECONDS_KEY]) if TRAIN_SECONDS_KEY in handle.files else 0.0


def claim_runtimes(results: Path) -> dict[str, float]:
    """Wall seconds per step: Snakemake's benchmark files, train summed over grid points."""
    runtimes = {}
    for step in STEPS:
        if step == "train":
            files = sorted((results / "train").glob("*.npz"))
            if files:
                runtimes[step] = sum(read_train_seconds(f) for f in files)
            continue
        files = sorted((results / "benchmarks").glob(f"{step}*.tsv"))
        if files:
            runtimes[step] = sum(read_benchmark_seconds(f) for f in files)
    return runtimes


def failure_reason(results: Path) -> str:
    """Why a claim has no verdict: the reason a failed training left, else the logs."""
    for path in sorted((results / "train").glob("*.error.json")):
        return str(runtime.read_json(path).get(runtime.ERROR_KEY))
    return "a job of this claim failed before its verdict; see its logs"


def claim_verdict(manifest: registry.Manifest, results: Path) -> dict:
    """The claim's verdict.json, or an error verdict when its chain stopped at a failed job
    (only the onerror build gets there); a verdict left from an earlier run is stale then."""
    failed_training = sorted((results / "train").glob("*.error.json"))
    if (results / "verdict.json").exists() and not failed_training:
        return runtime.read_json(results / "verdict.json")
    return error_verdict(manifest.data, failure_reason(results))


def claim_entry(manifest: registry.Manifest, results: Path, scale: str) -> dict:
    verdict = claim_verdict(manifest, results)
    notebook = results / "notebook.ipynb"
    executed = runtime.read_json(notebook) if notebook.exists() else {"metadata": {}}
    if not notebook.exists() and verdict["status"] != "error":
        executed["metadata"]["replica"] = {"error": "the notebook job failed; see its log"}
    runtimes = claim_runtimes(results)
    paper = manifest.data["paper"]
    primary = next((r for r in verdict["checks"] if r.get("primary")), None)
    margin = verdict_figure.forest_margin(primary)
    searchable = [manifest.slug, paper["title"], paper["arxiv"], *paper["authors"]]
    return {
        "slug": manifest.slug,
        "title": paper["title"],
        "arxiv": paper["arxiv"],
        "authors": paper["authors"],
        "year": paper["year"],
        "claim": manifest.data["claim"],
        "theme": manifest.data["theme"],
        "status": verdict["status"],
        "reason": verdict.get("reason", ""),
        "color": BADGE_COLORS.get(verdict["status"], "#57606a"),
        "key": verdict["key"],
        "checks": verdict["checks"],
        "controls": verdict["controls"],
        "preconditions": verdict.get("preconditions", []),
        "primary": verdict.get("primary"),
        "primary_text": primary_text(primary),
        "counts": verdict.get("counts", {}),
        "counts_text": counts_text(verdict),
        "robustness": verdict.get("robustness") or {"fraction": None},
        "seeds": verdict.get("seeds"),
        "runtime_s": round(sum(runtimes.values()), 1),
        "runtimes_s": {k: round(v, 2) for k, v in runtimes.items()},
        "notebook_error": executed["metadata"].get("replica", {}).get("error"),
        "page": f"claims/{manifest.slug}.html",
        "notebook": f"claims/{manifest.slug}.ipynb",
        "thumbnail": f"claims/{manifest.slug}.png",
        "logs": f"claims/{manifest.slug}_logs/",
        # What an error card may link to: the chain may have stopped before either existed.
        "has_notebook": notebook.exists(),
        "has_verdict_log": (results / "logs" / "verdict.log").exists(),
        "verdict_figure": f"claims/{manifest.slug}.verdict.svg",
        "deviations": manifest.data["deviations"],
        "primary_row": primary,
        "primary_value_text": interval_text(primary) if primary else "",
        "primary_gate_text": gate_text(primary) if primary else "",
        "primary_margin": None if margin is None else margin["near"],
        "sort_margin": js_number(None if margin is None else margin["near"]),
        "forest_strip": Markup(verdict_figure.forest_strip(primary, verdict["status"])),
        "search": " ".join([*searchable, manifest.data["claim"]]).lower(),
        "command": reproduce_command(manifest.slug, scale),
    }


def js_number(value: float | None) -> str:
    """A number as the page's sort script parses it (parseFloat): '' when there is none."""
    if value is None:
        return ""
    return repr(float(value)).replace("inf", "Infinity")


def reproduce_command(slug: str, scale: str) -> str:
    """The command that rebuilds one claim's card, page and gallery at its scale."""
    return f"snakemake --cores all --config scale={scale} claims='[{slug}]'"


def primary_text(row: dict | None) -> str:
    if row is None:
        return "—"
    return f"{row['name']} = {interval_text(row)}, gate {gate_text(row)}: {row['outcome']}"


def coverage_rows(entries: dict[str, dict]) -> list[dict]:
    papers = yaml.safe_load(LEDGER.read_text())["papers"]
    rows = []
    for paper in papers:
        row = {k: paper.get(k) for k in ("slug", "title", "arxiv", "tier", "theme")}
        if paper["slug"] in entries:
            entry = entries[paper["slug"]]
            row.update(
                stage="implemented",
                status=entry["status"],
                reason=entry["reason"],
                page=entry["page"],
                color=entry["color"],
            )
        else:
            stage, reason = NOT_BUILT[paper["tier"]]
            row.update(stage=stage, status=stage, reason=reason, page=None, color="#8c959f")
        row["search"] = " ".join(str(row[k]) for k in ("slug", "title", "arxiv", "theme")).lower()
        rows.append(row)
    return rows


def progress_bars(rows: list[dict], by: str) -> list[dict]:
    """Per theme (or tier): how many ledger papers are at each stage, as stacked-bar segments."""
    groups: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = groups.setdefault(str(row[by]), dict.fromkeys(STAGES, 0))
        counts[row["stage"]] += 1
    bars = []
    for name in sorted(groups):
        counts, total = groups[name], sum(groups[name].values())
        segments = [
            {"stage": stage, "n": n, "percent": 100 * n / total, "color": STAGES[stage]}
            for stage, n in counts.items()
            if n
        ]
        bars.append({"name": name, "total": total, "segments": segments, **counts})
    return bars


def build(scale: str, gallery: Path, results_root: Path, slugs: list[str]) -> list[dict]:
    reg = registry.load_registry()
    entries = {s: claim_entry(reg[s], results_root / scale / s, scale) for s in slugs}
    ordered = [entries[s] for s in slugs]
    for order, entry in enumerate(ordered):  # the ledger order, within a theme on the index
        entry["order"] = order
    env = _environment()
    themes = sorted({e["theme"] for e in ordered})
    context = {
        "scale": scale,
        "claims": ordered,
        "by_theme": [(t, [e for e in ordered if e["theme"] == t]) for t in themes],
        "themes": themes,
        "statuses": list(BADGE_COLORS),
        "status_colors": BADGE_COLORS,
        "status_rank": {s: i for i, s in enumerate(BADGE_COLORS)},
        "counts": {s: sum(e["status"] == s for e in ordered) for s in BADGE_COLORS},
        "sorts": SORTS,
        "forest_axis": Markup(verdict_figure.forest_axis()),
    }
    for name in STATIC:
        shutil.copy(TEMPLATES / name, gallery / name)
    runtime.write_text(gallery / "index.html", env.get_template("index.html.j2").render(context))
    rows = coverage_rows(entries)
    runtime.write_text(
        gallery / "coverage.html",
        env.get_template("coverage.html.j2").render(
            scale=scale,
            papers=rows,
            stages=STAGES,
            counts={stage: sum(r["stage"] == stage for r in rows) for stage in STAGES},
            by_theme=progress_bars(rows, "theme"),
            by_tier=progress_bars(rows, "tier"),
        ),
    )
    summary = {
        "scale": scale,
        "claims": [
            {
                k: e[k]
                for k in (
                    "slug",
                    "title",
                    "arxiv",
                    "theme",
                    "status",
                    "reason",
                    "key",
                    "primary",
                    "primary_margin",
                    "counts",
                    "robustness",
                    "checks",
                    "controls",
                    "preconditions",
                    "seeds",
                    "runtime_s",
                    "runtimes_s",
                    "notebook_error",
                    "page",
                )
            }
            for e in ordered
        ],
    }
    runtime.write_json(gallery / "summary.json", summary)
    return ordered


def copy_assets(gallery: Path) -> None:
    assets = gallery / "assets"
    if assets.exists():
        shutil.rmtree(assets)
    shutil.copytree(mathjax_dir(), assets / "mathjax")


def copy_logs(slug: str, results: Path, claims: Path) -> dict[str, str]:
    """A claim's job logs into the gallery: {link text: relative path}."""
    logs_dir = claims / f"{slug}_logs"
    if logs_dir.exists():
        shutil.rmtree(logs_dir)
    logs_dir.mkdir(parents=True)
    logs = {}
    for log in sorted((results / "logs").rglob("*.log")):
        name = "_".join(log.relative_to(results / "logs").with_suffix("").parts)
        shutil.copy(log, logs_dir / f"{name}.log")
        logs[f"log: {name}"] = f"{slug}_logs/{name}.log"
    return logs


def copy_sources(manifest: registry.Manifest, claims: Path) -> dict[str, str]:
    """The claim's manifest, module and notebook source, copied so the page works offline:
    {link text: path relative to the claim page}."""
    folder = claims / f"{manifest.slug}_src"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    sources = {}
    for label, path in (
        ("manifest", manifest.path),
        ("module", manifest.module_path),
        ("notebook source", manifest.notebook_path),
    ):
        # The notebook source keeps its name apart from the executed {slug}.ipynb download.
        name = path.name if label != "notebook source" else f"{path.stem}.source.ipynb"
        shutil.copy(path, folder / name)
        sources[label] = f"{manifest.slug}_src/{name}"
    return sources


def claim_page(slug: str, scale: str, gallery: Path, results_root: Path) -> None:
    """One claim's page, its .ipynb download, sources, verdict figures, thumbnail and logs."""
    from replica.notebooks import export_html

    manifest = registry.load_manifest(registry.CLAIMS_DIR / f"{slug}.yaml")  # this one only
    results = results_root / scale / slug
    claims = gallery / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    shutil.copy(results / "notebook.ipynb", claims / f"{slug}.ipynb")
    shutil.copy(results / "figure.png", claims / f"{slug}.png")
    verdict = runtime.read_json(results / "verdict.json")
    runtime.write_text(claims / f"{slug}.verdict.svg", verdict_figure.verdict_svg(verdict, True))
    logs = copy_logs(slug, results, claims)
    export_html(
        results / "notebook.ipynb",
        verdict,
        manifest.data,
        results / "provenance.json",
        claims / f"{slug}.html",
        {**copy_sources(manifest, claims), **logs},
        claim_runtimes(results),
    )


def error_page(slug: str, scale: str, gallery: Path, results_root: Path) -> None:
    """A claim page without a notebook (a job of the chain failed): the verdict if there is
    one, else the reason, its figure, the sources and the logs."""
    from replica.notebooks import placeholder_figure

    manifest = registry.load_manifest(registry.CLAIMS_DIR / f"{slug}.yaml")
    results = results_root / scale / slug
    claims = gallery / "claims"
    logs = copy_logs(slug, results, claims)
    sources = copy_sources(manifest, claims)
    placeholder_figure(claims / f"{slug}.png", "no result: the chain failed")
    verdict = claim_verdict(manifest, results)
    runtime.write_text(claims / f"{slug}.verdict.svg", verdict_figure.verdict_svg(verdict, True))
    page = (
        _environment()
        .get_template("error_page.html.j2")
        .render(
            slug=slug,
            status=verdict["status"],
            color=BADGE_COLORS.get(verdict["status"], "#57606a"),
            reason=verdict["reason"],
            links=sorted({**sources, **logs}.items()),
        )
    )
    runtime.write_text(claims / f"{slug}.html", page)


def build_after_failure(scale: str, gallery: Path, results_root: Path, slugs: list[str]) -> int:
    """The gallery of a run in which some job failed (Snakemake's onerror): every claim gets
    a card, the ones whose chain stopped an error card with the reason and the logs."""
    gallery.mkdir(parents=True, exist_ok=True)
    if not (gallery / "assets").exists():
        copy_assets(gallery)
    reg = registry.load_registry()
    for slug in slugs:
        results = results_root / scale / slug
        entry = claim_entry(reg[slug], results, scale)
        if entry["status"] == "error" or not (gallery / entry["page"]).exists():
            error_page(slug, scale, gallery, results_root)
    build(scale, gallery, results_root, slugs)
    return check_errors(gallery / "summary.json")


def check_errors(summary_path: Path) -> int:
    """Exit status of the whole build: non-zero when any claim errored."""
    summary = runtime.read_json(summary_path)
    failed = [c for c in summary["claims"] if c["status"] == "error" or c["notebook_error"]]
    for claim in failed:
        why = claim["reason"] if claim["status"] == "error" else claim["notebook_error"]
        print(f"claim {claim['slug']}: ERROR: {why}", file=sys.stderr)
    if failed:
        print(
            f"{len(failed)} claim(s) failed; their cards in the gallery link to the logs.",
            file=sys.stderr,
        )
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replica.gallery")
    parser.add_argument("action", choices=["build", "page", "assets", "check"])
    parser.add_argument("claims", nargs="*")
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--gallery", default="figures")
    parser.add_argument("--results", default="results")
    args = parser.parse_args(argv)
    gallery = Path(args.gallery)
    if args.action == "assets":
        copy_assets(gallery)
    elif args.action == "page":
        for slug in args.claims:
            claim_page(slug, args.scale, gallery, Path(args.results))
    elif args.action == "check":
        return check_errors(gallery / "summary.json")
    else:
        build(args.scale, gallery, Path(args.results), args.claims)
    return 0


if __name__ == "__main__":
    sys.exit(main())
