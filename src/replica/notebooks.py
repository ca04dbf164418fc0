"""Execute a claim notebook with papermill and export it to an offline HTML page."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib.util import find_spec
from pathlib import Path

from replica import registry, runtime
from replica.report import BADGE_COLORS, counts_text, robustness_text

TEMPLATES = Path(__file__).parent / "templates"
# Longest a single notebook cell may run (notebooks only read results and plot); a hung cell
# fails its notebook (an error card) instead of hanging the whole run.
CELL_TIMEOUT_S = {"smoke": 120, "quick": 300, "paper": 1800}


def mathjax_dir() -> Path:
    """MathJax 2 shipped inside jupyter-server-mathjax; found without importing its server."""
    spec = find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("jupyter-server-mathjax is not installed (see envs/requirements.txt)")
    return Path(spec.submodule_search_locations[0]) / "static"


def placeholder_figure(path: Path, message: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _kernel_manager():
    """nbclient's kernel manager, launching `python -m replica kernel` instead of
    `python -m ipykernel_launcher`: the same kernel, forked warm (replica.warm) when the job is
    (the kernel's process is then a small one that forwards nbclient's interrupt and kill)."""
    from jupyter_client.manager import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            if cmd[1:3] == ["-m", "ipykernel_launcher"]:
                cmd = [cmd[0], "-m", "replica", "kernel", *cmd[3:]]
            # a run's kernel never reads its input history: no sqlite file, no saving thread
            return [*cmd, "--HistoryManager.enabled=False"]

    return KernelManager


def execute(slug: str, scale: str, results_dir, out, figure) -> None:
    """Run the notebook on a claim's results; a failing cell is recorded, not raised.

    The executed notebook carries ``metadata.replica.error`` when a cell failed, so the
    gallery can mark the page; a figure file always exists afterwards (a placeholder if the
    notebook did not save one).
    """
    import papermill

    manifest = registry.load_manifest(registry.CLAIMS_DIR / f"{slug}.yaml")
    out, figure = Path(out), Path(figure)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.unlink(missing_ok=True)
    # A private IPython dir per job: parallel kernels otherwise race on the shared profile.
    ipython_dir = tempfile.mkdtemp(prefix="ipython-")
    os.environ["IPYTHONDIR"] = ipython_dir
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(registry.SRC_DIR), os.environ.get("PYTHONPATH", "")]
    )
    # Paths relative to the project root (the kernel's cwd) keep pages free of machine paths.
    params = {
        "results_dir": os.path.relpath(Path(results_dir).resolve(), registry.ROOT),
        "figure_path": os.path.relpath(figure.resolve(), registry.ROOT),
        "scale": scale,
    }
    tmp = out.with_name(f".{out.stem}.running.ipynb")
    cell_timeout = int(os.environ.get("REPLICA_CELL_TIMEOUT_S", CELL_TIMEOUT_S[scale]))
    error = None
    try:
        papermill.execute_notebook(
            str(manifest.notebook_path),
            str(tmp),
            parameters=params,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(registry.ROOT),
            execution_timeout=cell_timeout,
            kernel_manager_class=_kernel_manager(),
            # Every cell's outputs have arrived when the last cell is idle: the kernel is then
            # stopped at once (a graceful shutdown waits ~0.25 s for it to exit on its own).
            shutdown_kernel="immediate",
            # written once, when execution ends (also after a failed or timed-out cell),
            # not after every cell
            request_save_on_cell_execute=False,
        )
    except papermill.PapermillExecutionError as exc:
        error = f"notebook cell {exc.exec_count} raised {exc.ename}: {exc.evalue}"
    except TimeoutError as exc:  # nbclient's CellTimeoutError
        error = f"a notebook cell ran past {cell_timeout} s: {str(exc).splitlines()[0]}"
    finally:
        shutil.rmtree(ipython_dir, ignore_errors=True)
    if error:
        print(f"[replica] {error}", flush=True)
    source = tmp if tmp.exists() else manifest.notebook_path
    nb = json.loads(source.read_text())
    nb["metadata"].setdefault("replica", {})["error"] = error
    runtime.write_json(out, nb)
    tmp.unlink(missing_ok=True)
    if not figure.exists():
        placeholder_figure(figure, "no figure" if error is None else "notebook failed")


def _provenance_rows(provenance: dict, notebook: dict, runtimes: dict) -> list[tuple]:
    rows = [
        (k, provenance.get(k)) for k in ("commit", "dirty", "config_hash", "python", "platform")
    ]
    rows += [(f"version {k}", v) for k, v in sorted(provenance.get("packages", {}).items())]
    rows += [(f"runtime {k} (s)", f"{v:.1f}") for k, v in runtimes.items()]
    papermill_meta = notebook["metadata"].get("papermill", {})
    if papermill_meta.get("duration") is not None:
        rows.append(("runtime notebook (s)", f"{papermill_meta['duration']:.1f}"))
    return rows


def export_html(
    notebook_path,
    verdict: dict,
    manifest: dict,
    provenance_path,
    page,
    links: dict[str, str],
    runtimes: dict[str, float],
) -> None:
    """The claim page: the result first (verdict, its figure, the checks), then the executed
    notebook with its code cells folded."""
    import nbformat
    from nbconvert import HTMLExporter

    from replica.report import checks_table_html
    from replica.verdict_figure import verdict_svg

    nb = nbformat.read(str(notebook_path), as_version=4)
    provenance = runtime.read_json(provenance_path) if Path(provenance_path).exists() else {}
    exporter = HTMLExporter(
        template_name="lab",
        extra_template_paths=[str(TEMPLATES)],
        template_file="claim_page.html.j2",
    )
    exporter.mathjax_url = "../assets/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
    status = verdict["status"]
    paper = manifest["paper"]
    resources = {
        "replica": {
            "slug": verdict["slug"],
            "title": paper["title"],
            "authors": ", ".join(paper["authors"]),
            "year": paper["year"],
            "arxiv": paper["arxiv"],
            "claim": manifest["claim"],
            "theme": manifest["theme"],
            "status": status,
            "reason": verdict.get("reason", ""),
            "color": BADGE_COLORS.get(status, "#57606a"),
            "counts": counts_text(verdict),
            "robustness": robustness_text(verdict),
            # Both are built here from verdict.json, escaped where they are built.
            "verdict_figure": verdict_svg(verdict),
            "checks_table": checks_table_html(verdict, anchors=True),
            "deviations": len(manifest.get("deviations", [])),
            "links": list(links.items()),
            "provenance": _provenance_rows(provenance, nb, runtimes)
            + [("seeds", verdict.get("seed_list")), ("scale", verdict.get("scale"))],
        }
    }
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    Path(page).parent.mkdir(parents=True, exist_ok=True)
    runtime.write_text(page, body)
