"""How the DAG build grows with the number of claims (a benchmark script, not a timed test).

    python benchmarks/dag_scaling.py [--counts 25 60 120] [--repeats 2]

Registers synthetic claims in a temporary copy of the project: each real claim copied under
new slugs (manifest, module and notebook), until a count is reached, then times
`snakemake -n --forceall` (every job planned: the DAG of a cold gallery) and prints the job
count and the best of the repeats. Writes benchmarks/out/dag_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("Snakefile", "workflow", "src", "notebooks", "envs", "profiles")


def synthetic_project(count: int) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f"replica-dag-{count}-"))
    for part in PARTS:
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / part)
    claims = tmp / "workflow/claims"
    real = sorted(p.stem for p in claims.glob("*.yaml"))
    copy = 0
    while len(list(claims.glob("*.yaml"))) < count:
        slug = real[copy % len(real)]
        new = f"{slug}_copy{copy // len(real) + 1}"
        text = (claims / f"{slug}.yaml").read_text()
        (claims / f"{new}.yaml").write_text(
            re.sub(rf"^slug: {slug}$", f"slug: {new}", text, flags=re.M)
        )
        shutil.copy(tmp / f"src/replica/claims/{slug}.py", tmp / f"src/replica/claims/{new}.py")
        shutil.copy(tmp / f"notebooks/{slug}.ipynb", tmp / f"notebooks/{new}.ipynb")
        copy += 1
    for extra in sorted(claims.glob("*.yaml"))[count:]:  # fewer than the real claims
        extra.unlink()
    return tmp


def time_dry_run(project: Path) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(project / "src"))
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "2", "--quiet", "rules"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    total = re.search(r"^total\s+(\d+)$", out.stdout, flags=re.M)
    return elapsed, int(total.group(1)) if total else -1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[25, 60, 120])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for count in args.counts:
        project = synthetic_project(count)
        times = []
        for _ in range(args.repeats):
            seconds, jobs = time_dry_run(project)
            times.append(seconds)
        rows.append({"claims": count, "jobs": jobs, "dry_run_s": min(times), "all_s": times})
        print(
            f"{count:4d} claims  {jobs:5d} jobs  snakemake -n: {min(times):6.2f} s "
            f"(best of {args.repeats})"
        )
        shutil.rmtree(project)
    out = ROOT / "benchmarks/out"
    out.mkdir(exist_ok=True)
    (out / "dag_scaling.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
