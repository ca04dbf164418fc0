"""How the test suite's time grows with the number of claims (a script, not a timed test).

    python benchmarks/test_scaling.py [--claims 120] [--all]

Builds a copy of the project with synthetic claims (benchmarks/dag_scaling.py: the real claims
copied under new slugs, CITATION.cff regenerated) and times pytest in it. By default only the
tests that grow with the claims run (the smoke gallery of every claim, its browser check, the
dry runs, the from-scratch re-runs, the contract tests); their time beside the same tests'
time in a full `make test` at the real claims gives the suite's time at this many claims.
--all runs the whole suite. Writes a JUnit report to benchmarks/out/test_scaling_<n>.xml.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from dag_scaling import ROOT, synthetic_project  # noqa: E402

GROWING = [
    "tests/test_workflow.py::test_smoke_gallery_of_every_claim",
    "tests/test_workflow.py::test_dry_run_every_scale",
    "tests/test_reliability.py::test_rerun_from_scratch_is_bit_identical",
    "tests/test_contract.py",
    "tests/test_gallery_browser.py",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--claims", type=int, default=120)
    parser.add_argument(
        "--all", action="store_true", help="the whole suite, not only the growing tests"
    )
    args = parser.parse_args()
    project = synthetic_project(args.claims)
    for part in ("tests", "pyproject.toml", "LICENSE", "README.md"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / part)
    env = dict(os.environ, PYTHONPATH=str(project / "src"))
    citation = subprocess.run(
        [sys.executable, "-m", "replica.citation"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    (project / "CITATION.cff").write_text(citation.stdout)
    out = ROOT / "benchmarks/out"
    out.mkdir(exist_ok=True)
    junit = out / f"test_scaling_{args.claims}.xml"
    selection = [] if args.all else GROWING
    started = time.perf_counter()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            *selection,
        ],
        cwd=project,
        env=env,
    )
    elapsed = time.perf_counter() - started
    print(
        f"{args.claims} claims: pytest {'(all)' if args.all else '(growing tests)'} "
        f"{elapsed:.0f} s, exit {run.returncode}; JUnit: {junit}"
    )
    shutil.rmtree(project)
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
