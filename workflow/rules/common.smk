# Config and claim registry -> targets and input functions. Everything is validated here, while
# the workflow is parsed, so a bad config or manifest stops the run before any job starts.
import json
import sys
from pathlib import Path

SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))

from replica import registry  # noqa: E402

try:
    CONFIG = registry.load_config(
        dict(config), source="config (workflow/config.yaml + --config)"
    )
    REGISTRY = registry.load_registry()
    CLAIMS = registry.selected_claims(CONFIG, REGISTRY)
except registry.InvalidInput as err:
    sys.exit(f"replica: invalid input: {err}")

SCALE = CONFIG["scale"]
# The quick gallery is the default one; other scales get their own folder.
GALLERY = "figures" if SCALE == "quick" else f"figures/{SCALE}"
RESULTS = f"results/{SCALE}/{{slug}}"  # one scale per run: --config scale=...
# Every job: bash strict mode, one BLAS thread (jobs run side by side instead, see
# DESIGN.md), the warm worker on or off (config warm_worker), this checkout's src/ first
# on the path, and `python` = the interpreter running Snakemake (the project's venv,
# activated or not) unless jobs deploy conda environments.
# Braces are doubled because Snakemake formats the prefix.
USE_CONDA = "CONDA" in {m.name for m in workflow.deployment_settings.deployment_method}
shell.prefix(
    "set -euo pipefail; "
    "export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1; "
    f"export REPLICA_WARM_WORKER={int(CONFIG['warm_worker'])}; "
    f"export PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    + ("" if USE_CONDA else f"export PATH={Path(sys.executable).parent}:$PATH; ")
)
# Cluster resources of every compute job at this scale (runtime in minutes, memory in MB).
# Local runs ignore them; a profile's set-resources overrides them per rule. Plain values, not
# functions of the job: Snakemake evaluates a function once per job, which added up in large
# DAGs. Training asks for one GPU at paper scale unless the config pins device=cpu (the claims
# pick the device in runtime.select_device).
STEP_RESOURCES = {
    "smoke": {"runtime": 10, "mem_mb": 1000},
    "quick": {"runtime": 30, "mem_mb": 2000},
    "paper": {"runtime": 360, "mem_mb": 16000},
}[SCALE]
TRAIN_GPUS = int(SCALE == "paper" and CONFIG["device"] != "cpu")


# Used only with --sdm conda; by default jobs run in the active environment (make gallery).
CONDA_ENV = "../../envs/replica.yaml"


def manifest(wildcards):
    return registry.require_claim(wildcards.slug, REGISTRY)


def claim_theme(wildcards):
    """The report groups a claim's figure, verdict and page under its theme."""
    return manifest(wildcards).data["theme"]


def claim_sources_digest(wildcards):
    """A digest of the claim module, the replica modules it imports and the step driver that
    runs them, as a param: editing any of them re-runs the chain (and changes the training
    cache key). A param and not the files as inputs: one value per job to compare instead of
    a dozen files to stat and checksum, which dominated the DAG build at 120 claims."""
    return registry.sources_digest(manifest(wildcards).slug, tuple(DRIVER))


def scale_settings(wildcards):
    """Tracked as a param: editing this scale's settings in the manifest re-runs the chain."""
    return json.dumps(manifest(wildcards).scale(SCALE), sort_keys=True)


def verdict_settings(wildcards):
    m = manifest(wildcards).data
    return json.dumps(
        {k: m[k] for k in ("checks", "controls", "key_statistic")}, sort_keys=True
    )


def train_outputs(wildcards):
    points = manifest(wildcards).points(SCALE)
    return [f"results/{SCALE}/{wildcards.slug}/train/{p}.npz" for p in points]


def claim_module(wildcards):
    return str(manifest(wildcards).module_path.relative_to(registry.ROOT))


def notebook_source(wildcards):
    return str(manifest(wildcards).notebook_path.relative_to(registry.ROOT))


def code(*names):
    """Library files a step runs; editing them re-runs that step and the steps after it."""
    return [str(SRC / "replica" / name) for name in names]


# The generic step driver every compute job runs (python -m replica <step>).
DRIVER = code("steps.py", "runtime.py", "__main__.py", "__init__.py")
