"""Benchmarks of the workflow (a script, not a timed test).

    python benchmarks/bench.py [--skip-gallery]

Measures, in a fresh copy of the project: the DAG build time (snakemake -n), the quick-gallery
wall time (cold: nothing built), the no-op re-run time, and the batched-seed trainer against a
per-seed loop. Writes benchmarks/out/bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from replica import runtime  # noqa: E402  (sets one BLAS thread before torch loads)


def _snakemake(project: Path, *args: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(project / "src"))
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"snakemake {' '.join(args)} failed")
    return elapsed


def workflow_timings(skip_gallery: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="replica-bench-"))
    for part in ("Snakefile", "workflow", "src", "notebooks", "envs"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / part)
    timings = {"dag_build_s": _snakemake(tmp, "-n", "--cores", "2")}
    if not skip_gallery:
        timings["quick_gallery_wall_s"] = _snakemake(tmp, "--cores", "2")
        timings["noop_rerun_s"] = _snakemake(tmp, "--cores", "2")
    shutil.rmtree(tmp)
    return timings


def _train_two_layer(batched: bool, seeds: int, d: int, width: int, batch: int, steps: int):
    """Full-batch GD on a teacher task for `seeds` two-layer tanh nets: one bmm model or a loop."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(seeds, batch, d, generator=gen)
    y = torch.tanh(x[..., :1])
    w1 = (torch.randn(seeds, d, width, generator=gen) / d**0.5).requires_grad_()
    w2 = (torch.randn(seeds, width, 1, generator=gen) / width**0.5).requires_grad_()
    started = time.perf_counter()
    if batched:
        for _ in range(steps):
            loss = ((torch.bmm(torch.tanh(torch.bmm(x, w1)), w2) - y) ** 2).mean(dim=(1, 2)).sum()
            g1, g2 = torch.autograd.grad(loss, (w1, w2))
            with torch.no_grad():
                w1 -= 0.1 * g1
                w2 -= 0.1 * g2
    else:
        models = [
            (w1[s].detach().clone().requires_grad_(), w2[s].detach().clone().requires_grad_())
            for s in range(seeds)
        ]
        for _ in range(steps):
            for s, (a, b) in enumerate(models):
                loss = ((torch.tanh(x[s] @ a) @ b - y[s]) ** 2).mean()
                ga, gb = torch.autograd.grad(loss, (a, b))
                with torch.no_grad():
                    a -= 0.1 * ga
                    b -= 0.1 * gb
    return time.perf_counter() - started


def trainer_timings() -> list[dict]:
    runtime.single_thread()
    rows = []
    for d, width, batch in ((10, 32, 64), (100, 64, 64), (100, 512, 256)):
        cfg = dict(seeds=64, d=d, width=width, batch=batch, steps=200)
        loop = _train_two_layer(False, **cfg)
        batched = _train_two_layer(True, **cfg)
        rows.append(
            {
                **cfg,
                "loop_s": round(loop, 3),
                "batched_s": round(batched, 3),
                "speedup": round(loop / batched, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--skip-gallery", action="store_true", help="only the DAG build and the trainer comparison"
    )
    args = parser.parse_args()
    result = {"workflow": workflow_timings(args.skip_gallery), "trainer": trainer_timings()}
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    for key, value in result["workflow"].items():
        print(f"{key:>24}: {value:8.2f}")
    print("batched seeds (one bmm model) vs a loop of per-seed models, 200 GD steps, 64 seeds:")
    for row in result["trainer"]:
        print(
            f"  d={row['d']:>4} width={row['width']:>4} batch={row['batch']:>4}: "
            f"loop {row['loop_s']:7.2f} s, batched {row['batched_s']:6.2f} s, "
            f"x{row['speedup']}"
        )


if __name__ == "__main__":
    main()
