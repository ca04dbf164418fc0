"""How the DAG build grows with the number of claims (a benchmark script, not a timed test).

    python benchmarks/dag_scaling.py [--counts 25 60 120] [--repeats 2] [--noop]

Registers synthetic claims in a temporary copy of the project: each real claim copied under
new slugs (manifest, module and notebook), until a count is reached, then times
`snakemake -n --forceall` (every job planned: the DAG of a cold gallery) and prints the job
count and the best of the repeats. With --noop (needs a finished quick gallery in this
checkout: results/quick and figures/), each copy also gets its original's results and pages,
`snakemake --touch` settles the timestamps, and `snakemake --cores 2` with nothing to do is
timed. With --floor, the same two timings for a bare Snakemake workflow of the same shape (as
many claims, the same jobs per claim, rules that only touch files, no input functions, params
or project code): Snakemake's own cost for a DAG this size, which no change here can go below.
Writes benchmarks/out/dag_scaling.json.
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


# The claim chain's shape with nothing but Snakemake in it: 3 grid points a claim (the mean at
# quick is 3.0), generate -> train -> verdict -> notebook -> page -> gallery.
BARE_SNAKEFILE = """
configfile: "config.yaml"
CLAIMS = [f"c{i}" for i in range(int(config["claims"]))]
rule all:
    input: "index.html"
rule gallery:
    input: expand("pages/{c}.html", c=CLAIMS)
    output: "index.html"
    shell: "touch {output}"
rule page:
    input: "r/{c}/notebook.ipynb"
    output: "pages/{c}.html"
    shell: "touch {output}"
rule notebook:
    input: "r/{c}/verdict.json", "r/{c}/theory.json"
    output: "r/{c}/notebook.ipynb"
    shell: "touch {output}"
rule verdict:
    input: "r/{c}/data.npz", "r/{c}/theory.json", expand("r/{{c}}/train/{p}.npz", p=["a", "b", "c"])
    output: "r/{c}/verdict.json", "r/{c}/metrics.json"
    shell: "touch {output}"
rule train:
    input: "r/{c}/data.npz"
    output: "r/{c}/train/{p}.npz"
    shell: "touch {output}"
rule generate:
    output: "r/{c}/data.npz", "r/{c}/theory.json"
    shell: "touch {output}"
"""


def bare_project(count: int) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f"replica-bare-{count}-"))
    (tmp / "Snakefile").write_text(BARE_SNAKEFILE)
    (tmp / "config.yaml").write_text(f"claims: {count}\n")
    return tmp


def add_built_gallery(project: Path) -> None:
    """Give every claim of the copy its original's quick results and gallery files."""
    results, figures = ROOT / "results/quick", ROOT / "figures"
    if not (figures / "summary.json").exists():
        raise SystemExit("--noop needs a finished quick gallery here (make gallery)")
    shutil.copytree(figures, project / "figures", symlinks=True)
    for manifest in (project / "workflow/claims").glob("*.yaml"):
        slug = manifest.stem
        original = re.sub(r"_copy\d+$", "", slug)
        shutil.copytree(results / original, project / "results/quick" / slug, symlinks=True)
        if slug != original:
            for suffix in (".html", ".ipynb", ".png", "_logs"):
                src = figures / "claims" / f"{original}{suffix}"
                dest = project / "figures/claims" / f"{slug}{suffix}"
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
    _snakemake(project, "--touch", "--cores", "1", "--quiet", "all")


def _snakemake(project: Path, *args: str) -> tuple[float, str]:
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
        raise SystemExit(out.stderr[-3000:])
    return elapsed, out.stdout + out.stderr


def time_noop(project: Path) -> float:
    elapsed, log = _snakemake(project, "--cores", "2")
    if "Nothing to be done" not in log:
        raise SystemExit(f"not a no-op run:\n{log[-3000:]}")
    return elapsed


def time_dry_run(project: Path) -> tuple[float, int]:
    elapsed, log = _snakemake(project, "-n", "--forceall", "--cores", "2", "--quiet", "rules")
    total = re.search(r"^total\s+(\d+)$", log, flags=re.M)
    return elapsed, int(total.group(1)) if total else -1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[25, 60, 120])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--noop", action="store_true", help="also time a no-op run")
    parser.add_argument("--floor", action="store_true", help="also time a bare workflow")
    args = parser.parse_args()
    rows = []
    for count in args.counts:
        if args.floor:
            bare = bare_project(count)
            dry = [time_dry_run(bare) for _ in range(args.repeats)]
            _snakemake(bare, "--cores", "2", "--quiet", "all")  # build it, for the no-op
            noop = min(time_noop(bare) for _ in range(args.repeats))
            dry_s = min(t for t, _ in dry)
            print(
                f"{count:4d} claims  {dry[0][1]:5d} jobs  bare Snakemake workflow: "
                f"-n {dry_s:6.2f} s  no-op {noop:6.2f} s",
                flush=True,
            )
            rows.append(
                {
                    "claims": count,
                    "bare": True,
                    "jobs": dry[0][1],
                    "dry_run_s": dry_s,
                    "noop_s": noop,
                }
            )
            shutil.rmtree(bare)
        project = synthetic_project(count)
        dry = [time_dry_run(project) for _ in range(args.repeats)]
        row = {"claims": count, "jobs": dry[0][1], "dry_run_s": min(t for t, _ in dry)}
        line = f"{count:4d} claims  {row['jobs']:5d} jobs  snakemake -n: {row['dry_run_s']:6.2f} s"
        if args.noop:
            add_built_gallery(project)
            row["noop_s"] = min(time_noop(project) for _ in range(args.repeats))
            line += f"  no-op run: {row['noop_s']:6.2f} s"
        rows.append(row)
        print(line + f"  (best of {args.repeats})", flush=True)
        shutil.rmtree(project)
    out = ROOT / "benchmarks/out"
    out.mkdir(exist_ok=True)
    (out / "dag_scaling.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
