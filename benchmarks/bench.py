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


def _train_two_layer(mode: str, seeds: int, d: int, width: int, batch: int, steps: int):
    """Full-batch GD on a teacher task for `seeds` two-layer tanh nets: one bmm model over all
    seeds ("batched"), the same in cache-sized seed chunks ("chunked"), or a per-seed loop."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(seeds, batch, d, generator=gen)
    y = torch.tanh(x[..., :1])
    w1 = torch.randn(seeds, d, width, generator=gen) / d**0.5
    w2 = torch.randn(seeds, width, 1, generator=gen) / width**0.5
    chunks = {
        "batched": [slice(0, seeds)],
        "chunked": runtime.seed_chunks(seeds, batch * width),
        "loop": [slice(s, s + 1) for s in range(seeds)],
    }[mode]
    started = time.perf_counter()
    for part in chunks:
        a, b = w1[part].clone().requires_grad_(), w2[part].clone().requires_grad_()
        for _ in range(steps):
            loss = ((torch.bmm(torch.tanh(torch.bmm(x[part], a)), b) - y[part]) ** 2).mean(
                dim=(1, 2)
            )
            ga, gb = torch.autograd.grad(loss.sum(), (a, b))
            with torch.no_grad():
                a -= 0.1 * ga
                b -= 0.1 * gb
    return time.perf_counter() - started


def trainer_timings() -> list[dict]:
    runtime.single_thread()
    rows = []
    for d, width, batch in ((10, 32, 64), (100, 64, 64), (100, 512, 256)):
        cfg = dict(seeds=64, d=d, width=width, batch=batch, steps=200)
        times = {mode: _train_two_layer(mode, **cfg) for mode in ("loop", "batched", "chunked")}
        rows.append(
            {
                **cfg,
                **{f"{mode}_s": round(t, 3) for mode, t in times.items()},
                "seeds_per_chunk": runtime.seed_chunks(64, batch * width)[0].stop,
                "fastest": min(times, key=times.get),
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
    print("64 seeds, 200 GD steps: per-seed loop vs one bmm model vs cache-sized seed chunks:")
    for row in result["trainer"]:
        print(
            f"  d={row['d']:>4} width={row['width']:>4} batch={row['batch']:>4}: "
            f"loop {row['loop_s']:7.2f} s, batched {row['batched_s']:6.2f} s, "
            f"chunked ({row['seeds_per_chunk']} seeds) {row['chunked_s']:6.2f} s "
            f"-> {row['fastest']}"
        )


if __name__ == "__main__":
    main()
