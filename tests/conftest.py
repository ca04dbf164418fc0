"""Shared fixtures: a sandbox copy of the project, and a way to run Snakemake in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
PROJECT_PARTS = ("Snakefile", "workflow", "src", "notebooks", "envs", "profiles")


def copy_project(dest: Path, with_claims: bool = True) -> Path:
    """A copy of the workflow (no results, no venv) that a test may break freely."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in PROJECT_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore)
        else:
            shutil.copy(src, dest / part)
    if not with_claims:
        for manifest in (dest / "workflow" / "claims").glob("*.yaml"):
            manifest.unlink()
    return dest


def add_toy_claim(project: Path, slug: str = "toy_mean", **params) -> None:
    """Install the toy claim (optionally under another slug, with extra params)."""
    import yaml

    text = (FIXTURES / "toy" / "toy_mean.yaml").read_text().replace("toy_mean", slug)
    manifest = yaml.safe_load(text)
    for scale in manifest["scales"].values():
        scale["params"].update(params)
    (project / "workflow" / "claims" / f"{slug}.yaml").write_text(yaml.safe_dump(manifest))
    shutil.copy(FIXTURES / "toy" / "toy_mean.py", project / "src/replica/claims" / f"{slug}.py")
    shutil.copy(FIXTURES / "toy" / "toy_mean.ipynb", project / "notebooks" / f"{slug}.ipynb")


def snakemake(project: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(project / "src"))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def toy_project(tmp_path) -> Path:
    project = copy_project(tmp_path / "project", with_claims=False)
    add_toy_claim(project)
    return project


# Manifest text that must reach HTML escaped (tests/test_security.py).
SCRIPT_PAYLOAD = "<script>alert('x')</script>"


@pytest.fixture(scope="session")
def built_toy_project(tmp_path_factory) -> Path:
    """The toy claim built once at smoke scale, for tests that only read a finished build
    (the report, escaping, notebook execution); its title and claim carry a script payload."""
    import yaml

    project = copy_project(tmp_path_factory.mktemp("toy") / "project", with_claims=False)
    add_toy_claim(project)
    path = project / "workflow/claims/toy_mean.yaml"
    manifest = yaml.safe_load(path.read_text())
    manifest["paper"]["title"] = f"Means {SCRIPT_PAYLOAD}"
    manifest["claim"] = f"The error shrinks {SCRIPT_PAYLOAD} like n^-1/2."
    path.write_text(yaml.safe_dump(manifest))
    out = snakemake(project, "--config", "scale=smoke")
    assert out.returncode == 0, out.stderr[-3000:]
    return project


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory) -> Path:
    """Every registered claim at smoke scale, gallery included, built once per test session."""
    project = copy_project(tmp_path_factory.mktemp("smoke") / "project")
    claims = len(list((project / "workflow/claims").glob("*.yaml")))
    # a guard against a hung run, not a speed gate: about 4 s of wall time per claim on a quiet
    # 2-core machine with the warm worker (13 s before it), several times that when it is shared
    out = snakemake(project, "--config", "scale=smoke", timeout=max(900, 30 * claims))
    assert out.returncode == 0, out.stderr[-3000:]
    return project


@pytest.fixture(scope="session")
def rerun_results(tmp_path_factory) -> Path:
    """Every registered claim at smoke scale re-run from nothing, outside Snakemake: the whole
    chain of each claim in one process, claims split over one worker per core. Tests compare
    it byte for byte with the smoke gallery's results."""
    from replica import registry

    out = tmp_path_factory.mktemp("rerun")
    slugs = sorted(registry.load_registry())
    workers = max(1, min(len(slugs), os.cpu_count() or 1))
    code = (
        "import sys; from pathlib import Path; from replica import steps\n"
        "for slug in sys.argv[2:]:\n"
        "    steps.run_chain(slug, 'smoke', Path(sys.argv[1]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(out), *slugs[i::workers]],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    errors = [p.communicate(timeout=1800)[1] for p in procs]
    for proc, err in zip(procs, errors, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return out / "smoke"
