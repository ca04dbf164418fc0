"""The warm worker (replica/warm.py): a job forked from it behaves like a job of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import add_toy_claim
from replica import runtime

pytestmark = pytest.mark.slow

WARM_LINE = "[replica] in a child of warm worker"


def _env(project: Path, warm: bool) -> dict:
    return dict(
        os.environ,
        PYTHONPATH=str(project / "src"),
        REPLICA_WARM_WORKER=str(int(warm)),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
    )


def _step(project: Path, slug: str, *args: str, warm: bool = True, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "replica", *args[:1], slug, "--scale", "smoke", *args[1:]],
        cwd=project,
        env=_env(project, warm),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _warm_run(project: Path, slug: str, *args: str) -> str:
    """Run a step until it runs in a worker's child (the first job starts the worker)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log, _ = _step(project, slug, *args).communicate(timeout=60)
        if WARM_LINE in log:
            return log
        time.sleep(0.5)
    raise AssertionError(f"no warm worker took the job within 60 s: {log}")


def _wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running any more
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:  # reaped since
        return False


def start_worker_for(project: Path) -> None:
    """Start the worker that `python -m replica` jobs in this project use; wait until it listens."""
    start = (
        "from replica import warm\n"
        "p = warm.socket_path()\n"
        "if not p.exists():\n"
        "    warm.start_worker(p)\n"
        "print(p)"
    )
    path = subprocess.run(
        [sys.executable, "-c", start],
        cwd=project,
        env=_env(project, warm=True),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    _wait_until(Path(path).exists, timeout=60)


@pytest.fixture
def toy_data(toy_project) -> Path:
    add_toy_claim(toy_project, "toy_long", loop_steps=40, step_seconds=0.1, checkpoint_every_s=0)
    data = toy_project / "results/smoke/toy_mean/data.npz"
    for slug in ("toy_mean", "toy_long"):
        out = toy_project / "results/smoke" / slug / "data.npz"
        log, _ = _step(toy_project, slug, "generate", "--out", str(out), warm=False).communicate()
        assert out.exists(), log
    return data


def test_a_warm_job_writes_what_a_cold_one_does_and_reads_edited_code(toy_project, toy_data):
    train = ("train", "--point", "n-100", "--data", str(toy_data))
    cold, warm = toy_project / "cold.npz", toy_project / "warm.npz"
    log, _ = _step(toy_project, "toy_mean", *train, "--out", str(cold), warm=False).communicate()
    assert WARM_LINE not in log and cold.exists(), log
    log = _warm_run(toy_project, "toy_mean", *train, "--out", str(warm))
    assert "train n-100 done" in log, log  # the job's own log gets the step's output
    with np.load(cold) as one, np.load(warm) as two:
        assert set(one.files) == set(two.files)
        for key in one.files:
            if key != runtime.TRAIN_SECONDS_KEY:
                np.testing.assert_array_equal(one[key], two[key])
    # An edit to the claim module reaches the next warm job: no replica module is kept.
    module = toy_project / "src/replica/claims/toy_mean.py"
    module.write_text(module.read_text() + "\nraise RuntimeError('edited after the worker')\n")
    log = _warm_run(toy_project, "toy_mean", *train, "--out", str(toy_project / "edited.npz"))
    assert "edited after the worker" in log, log


def test_a_warm_jobs_exit_status_and_signals_are_its_own(toy_project, toy_data):
    # a step that fails: its status and message, as in a cold job
    bad = _step(toy_project, "toy_mean", "train", "--point", "n-7", "--data", str(toy_data))
    log, _ = bad.communicate(timeout=60)
    _warm_run(toy_project, "toy_mean", "train", "--point", "n-10", "--data", str(toy_data))
    bad = _step(toy_project, "toy_mean", "train", "--point", "n-7", "--data", str(toy_data))
    log, _ = bad.communicate(timeout=60)
    assert WARM_LINE in log and bad.returncode == 1 and "unknown grid point" in log, log
    # SIGTERM to the job reaches the step (which dies of it, 128 + 15, as bash reports it)
    out = toy_project / "results/smoke/toy_long/train/n-10.npz"
    long = ("train", "--point", "n-10", "--data", str(toy_data), "--out", str(out))
    job = _step(toy_project, "toy_long", *long)
    assert job.stdout.readline().startswith(WARM_LINE)
    time.sleep(0.5)
    job.send_signal(signal.SIGTERM)
    job.communicate(timeout=30)
    assert job.returncode == 128 + signal.SIGTERM and not out.exists()


def test_a_job_killed_by_sigkill_takes_its_forked_step_with_it(toy_project, toy_data):
    out = toy_project / "results/smoke/toy_long/train/n-10.npz"
    long = ("train", "--point", "n-10", "--data", str(toy_data), "--out", str(out))
    _warm_run(toy_project, "toy_mean", "train", "--point", "n-10", "--data", str(toy_data))
    job = _step(toy_project, "toy_long", *long, start_new_session=True)
    first = job.stdout.readline()
    assert first.startswith(WARM_LINE), first
    step = int(first.split()[-1])  # the forked child that runs the step
    _wait_until(Path(f"{out}.ckpt.npz").exists)
    os.killpg(job.pid, signal.SIGKILL)  # as a hard kill of the run takes its job processes
    job.wait()
    _wait_until(lambda: not _alive(step), timeout=10)
    time.sleep(1.0)  # longer than a few of its steps
    assert not out.exists(), "the step outlived its job and wrote its output"


def test_a_notebook_run_warm_has_the_outputs_of_one_run_cold(built_toy_project, tmp_path):
    """The notebook step and its kernel both fork warm; every cell's outputs are the same."""
    import json

    project = built_toy_project  # read only: the notebooks are written to tmp_path
    verdict = project / "results/smoke/toy_mean/verdict.json"
    start_worker_for(project)
    runs = {}
    for warm in (False, True):
        out = tmp_path / f"warm_{warm}.ipynb"
        args = ("notebook", "--verdict", str(verdict), "--out", str(out))
        log, _ = _step(
            project, "toy_mean", *args, "--figure", str(out.with_suffix(".png")), warm=warm
        ).communicate(timeout=120)
        assert (log.count(WARM_LINE) == 2) == warm, log  # the step's child and the kernel's
        runs[warm] = json.loads(out.read_text())
    assert runs[True]["metadata"]["replica"]["error"] is None
    cells = [[cell.get("outputs") for cell in run["cells"]] for run in runs.values()]
    assert cells[0] == cells[1] and any(cells[0])
    assert (tmp_path / "warm_True.png").read_bytes() == (tmp_path / "warm_False.png").read_bytes()


def test_a_warm_kernel_shows_a_figure_left_open_at_the_end_of_a_cell(
    built_toy_project, tmp_path, monkeypatch, capfd
):
    """The inline backend flushes open figures after each cell, in a warm kernel as in a cold
    one (the worker imported matplotlib before the kernel chose its backend)."""
    import nbformat
    import papermill

    from replica import notebooks

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import matplotlib\nprint(matplotlib.get_backend())"),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2]);"),
    ]
    nbformat.write(nb, tmp_path / "figure.ipynb")
    start_worker_for(built_toy_project)
    monkeypatch.chdir(built_toy_project)
    outputs = {}
    for warm in (False, True):
        monkeypatch.setenv("REPLICA_WARM_WORKER", str(int(warm)))
        out = tmp_path / f"warm_{warm}.ipynb"
        papermill.execute_notebook(
            str(tmp_path / "figure.ipynb"),
            str(out),
            kernel_name="python3",
            progress_bar=False,
            kernel_manager_class=notebooks._kernel_manager(),
        )
        assert (WARM_LINE in capfd.readouterr().out) == warm  # the kernel's output
        cells = nbformat.read(out, as_version=4).cells
        outputs[warm] = [
            [(o.output_type, o.get("text"), list(o.get("data", {}))) for o in c.outputs]
            for c in cells
        ]
    assert outputs[True] == outputs[False]
    assert outputs[True][1] == [("display_data", None, ["image/png", "text/plain"])]
