"""Job-seconds per claim and step, read from a finished run (a script, not a timed test).

    python benchmarks/job_seconds.py [--scale quick] [--save out.json [--note "..."]]
                                     [--compare before.json]

Reads Snakemake's benchmark files (results/<scale>/<claim>/benchmarks/<step>.tsv: wall seconds
of each job, start-up included) and, for training, the seconds each train step records in its
output (a cached rule may not have a benchmark file; the in-process time excludes the ~2 s
start-up of each train job). With --snakemake-log (the log of the run that built the results,
e.g. `make gallery > run.log`), each train job's wall time from that log is used instead:
start-up included, to the second. Prints one row per claim, the total and the mean per claim,
and with --compare the same table of an earlier run beside it. --save writes the form kept in
benchmarks/reference/: {"note": how it was measured, "status": each claim's verdict,
"claims": the table}; --compare reads that form and the bare table of older files.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("generate", "train", "verdict", "notebook")
TRAIN_SECONDS_KEY = "__train_seconds__"  # replica.runtime.TRAIN_SECONDS_KEY (no import: fast)


def job_seconds(results: Path) -> dict[str, dict[str, float]]:
    table = {}
    for claim in sorted(p for p in results.iterdir() if (p / "benchmarks").is_dir()):
        row = {}
        for step in STEPS:
            tsv = claim / "benchmarks" / f"{step}.tsv"
            if tsv.exists():
                with tsv.open() as handle:
                    row[step] = float(next(csv.DictReader(handle, delimiter="\t"))["s"])
        runs = sorted((claim / "train").glob("*.npz"))
        seconds = []
        for run in runs:
            with np.load(run, allow_pickle=False) as arrays:
                if TRAIN_SECONDS_KEY in arrays.files:
                    seconds.append(float(arrays[TRAIN_SECONDS_KEY]))
        row["train"] = sum(seconds)
        row["train_jobs"] = len(runs)
        table[claim.name] = row
    return table


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]{8} \d{4})\]$")


def train_job_walls(log: Path) -> dict[str, float]:
    """Wall seconds of the train jobs in a Snakemake log, summed per claim: a job starts at
    the time stamp above its `rule train:` block and ends at the one above `Finished jobid`."""
    started, slug_of, walls = {}, {}, {}
    stamp = block = job = None
    for line in log.read_text().splitlines():
        if match := STAMP.match(line.strip()):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif line.strip().endswith("rule train:"):
            block = stamp
        elif block is not None and line.strip().startswith("jobid:"):
            job = int(line.split(":")[1])
            started[job] = block
        elif block is not None and line.strip().startswith("wildcards:"):
            slug_of[job] = re.search(r"slug=(\w+)", line).group(1)
            block = None
        elif match := re.match(r"Finished jobid: (\d+) \(Rule: train\)", line.strip()):
            job = int(match.group(1))
            seconds = (stamp - started[job]).total_seconds()
            walls[slug_of[job]] = walls.get(slug_of[job], 0.0) + seconds
    return walls


def total(row: dict[str, float]) -> float:
    """Every step's seconds (an older table may have other steps: theory, measure)."""
    return sum(value for step, value in row.items() if step != "train_jobs")


def statuses(results: Path) -> dict[str, str]:
    """Each claim's verdict status, to show that a faster run reached the same outcomes."""
    return {
        path.parent.name: json.loads(path.read_text())["status"]
        for path in sorted(results.glob("*/verdict.json"))
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--save", type=Path)
    parser.add_argument("--note", default="", help="how it was measured (with --save)")
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--snakemake-log", type=Path, help="train jobs' wall time from a log")
    args = parser.parse_args()
    results = ROOT / "results" / args.scale
    table = job_seconds(results)
    if args.snakemake_log:
        for claim, seconds in train_job_walls(args.snakemake_log).items():
            table[claim]["train"] = seconds
    before = json.loads(args.compare.read_text()) if args.compare else {}
    before = before.get("claims", before)
    header = f"{'claim':<36}" + "".join(f"{s[:8]:>9}" for s in STEPS) + f"{'jobs':>5}{'total':>8}"
    print(header + (f"{'before':>8}{'ratio':>7}" if before else ""))
    for claim, row in table.items():
        line = f"{claim:<36}" + "".join(f"{row.get(s, 0.0):9.1f}" for s in STEPS)
        line += f"{row['train_jobs']:5d}{total(row):8.1f}"
        if claim in before:
            line += f"{total(before[claim]):8.1f}{total(before[claim]) / total(row):7.2f}"
        print(line)
    grand = sum(map(total, table.values()))
    print(f"{'total':<36}{'':>{9 * len(STEPS) + 5}}{grand:8.1f}", end="")
    if before:
        old = sum(total(before[c]) for c in table if c in before)
        print(f"{old:8.1f}{old / grand:7.2f}", end="")
    print(f"\nmean per claim: {grand / max(1, len(table)):.1f} job-s over {len(table)} claims")
    if args.save:
        saved = {"note": args.note, "status": statuses(results), "claims": table}
        args.save.write_text(json.dumps(saved, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
