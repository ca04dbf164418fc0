"""The SLURM profile against a real Slurm: a single-node cluster on localhost, started here.

Needs root and Debian's slurmctld, slurmd and slurm-client, plus the executor plugin in
.venv/slurm-extras (`make slurm-deps` installs all of it). Where any of that is missing the
test is skipped with the reason. The daemons are started in the foreground as child
processes and stopped by PID at the end; a slurm.conf written to /etc/slurm is removed again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, copy_project

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

EXTRAS = ROOT / ".venv" / "slurm-extras"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
CLAIMS = ("adam_linf_margin", "advani_saxe_hd_dynamics")
CONF = """\
ClusterName=replica-test
SlurmctldHost=localhost(127.0.0.1)
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/pgid
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
SlurmUser=root
SlurmdUser=root
ReturnToService=2
# finished jobs stay visible to squeue (the profile's status command) for an hour
MinJobAge=3600
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd needs root"
    for tool in ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (make slurm-deps installs slurmctld slurmd slurm-client)"
    if not (EXTRAS / "snakemake_executor_plugin_slurm").is_dir():
        return f"snakemake-executor-plugin-slurm not in {EXTRAS} (make slurm-deps)"
    if SYSTEM_CONF.exists():
        return f"{SYSTEM_CONF} exists: a Slurm installation that is not ours to replace"
    return None


def _wait_for(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def _node_state() -> str:
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    for sub in ("ctld", "spool"):
        (state / sub).mkdir()
    text = CONF.format(state=state, cpus=os.cpu_count())
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    # The job step reads /etc/slurm/slurm.conf (SLURM_CONF does not reach it).
    SYSTEM_CONF.write_text(text)
    started = time.monotonic()
    daemons = [
        subprocess.Popen(
            ["slurmctld", "-D", "-i"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        ),
        subprocess.Popen(
            ["slurmd", "-D", "-N", "localhost"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        ),
    ]
    try:
        _wait_for(lambda: _node_state() in ("idle", "mixed"), 90, "the Slurm node")
        yield {"state": state, "bring_up_s": time.monotonic() - started}
    finally:
        for proc in daemons:
            proc.terminate()
        for proc in daemons:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        SYSTEM_CONF.unlink(missing_ok=True)


def _squeue_states() -> dict[str, str]:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True, check=True
    )
    return dict(line.split() for line in out.stdout.splitlines())


def test_smoke_chains_run_as_slurm_jobs_through_the_profile(slurm_cluster, tmp_path):
    project = copy_project(tmp_path / "project")
    before = set(_squeue_states())
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(EXTRAS), str(project / "src")]),
    )
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            "profiles/slurm",
            "--config",
            "scale=smoke",
            f"claims=[{','.join(CLAIMS)}]",
            "--default-resources",
            "slurm_partition=debug",
            "--slurm-init-seconds-before-status-checks",
            "2",
            "--latency-wait",
            "10",
            # No accounting database on this test cluster: sacct would know no jobs.
            "--slurm-status-command",
            "squeue",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-4000:]

    for slug in CLAIMS:
        verdict = (project / "results/smoke" / slug / "verdict.json").read_text()
        assert '"status"' in verdict and '"error"' not in verdict
        assert (project / "figures/smoke/claims" / f"{slug}.html").exists()
    assert (project / "figures/smoke/index.html").exists()

    # every job this run submitted is known to Slurm and COMPLETED
    jobs = {i: s for i, s in _squeue_states().items() if i not in before}
    n_train = sum(
        1 for slug in CLAIMS for _ in (project / "results/smoke" / slug / "train").glob("*.npz")
    )
    expected = len(CLAIMS) * 3 + n_train  # generate, verdict, notebook + train
    assert len(jobs) == expected, (jobs, run.stderr[-2000:])
    assert set(jobs.values()) == {"COMPLETED"}, jobs
    print(
        f"\n[slurm] bring-up {slurm_cluster['bring_up_s']:.1f} s; {len(jobs)} jobs "
        f"through Slurm in {elapsed:.1f} s"
    )


def test_slurm_profile_settings_are_not_replaced_by_the_workflow_profile():
    """profiles/default is loaded after --profile and wins on shared keys (Snakemake's cli)."""
    if not (EXTRAS / "snakemake_executor_plugin_slurm").is_dir():
        pytest.skip("the slurm executor plugin is not installed (make slurm-deps)")
    code = (
        "from snakemake.cli import parse_args; "
        "_, a = parse_args(['--profile', 'profiles/slurm', '-n']); "
        "print('|'.join(map(str, [a.latency_wait, a.retries, a.jobs, a.executor, "
        "getattr(a, 'slurm_status_command', 'unset')])))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(EXTRAS), str(ROOT / "src")]))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    latency, retries, jobs, executor, status = out.stdout.strip().splitlines()[-1].split("|")
    assert (latency, retries, jobs, executor) == ("60", "1", "100", "slurm")
    # The plugin's own choice (sacct where accounting exists) is the default, not squeue.
    assert status != "squeue"
