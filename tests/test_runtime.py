"""Progress lines and the divergence check shared by every step."""

import numpy as np
import pytest

from replica import runtime


@pytest.mark.parametrize("total", [1, 7, 15, 1000])
def test_progress_writes_at_most_about_ten_lines_and_always_the_last(total, capsys):
    tick = runtime.Progress(total, "train demo")
    for step in range(total):
        tick(step, loss=1.0 / (step + 1), step=step)  # "step" may also be a reported value
    lines = capsys.readouterr().out.splitlines()
    assert 1 <= len(lines) <= 11
    assert lines[-1].startswith(f"[progress] train demo {total}/{total} (100%)")
    assert all(line.startswith("[progress] train demo ") for line in lines)


def test_require_finite_names_every_bad_array():
    good = {"w": np.ones(3), "steps": np.arange(3), "flag": np.array([True])}
    runtime.require_finite(good, "train x")
    bad = dict(good, loss=np.array([1.0, np.nan]), grad=np.array([np.inf]))
    with pytest.raises(runtime.NonFiniteResult, match=r"train x: NaN/inf in loss \(1 of 2"):
        runtime.require_finite(bad, "train x")
    with pytest.raises(runtime.NonFiniteResult, match="grad"):
        runtime.require_finite(bad, "train x")


def test_log_spaced_steps_are_distinct_integers_covering_the_run():
    np.testing.assert_array_equal(runtime.log_spaced_steps(100, 5), [1, 3, 10, 32, 100])
    np.testing.assert_array_equal(
        runtime.log_spaced_steps(100, 5, with_zero=True), [0, 1, 3, 10, 32, 100]
    )
    # more points than steps: rounding merges duplicates, every step is kept once
    np.testing.assert_array_equal(runtime.log_spaced_steps(6, 50), np.arange(1, 7))
    assert runtime.log_spaced_steps(1, 10).tolist() == [1]


def _python(code: str) -> str:
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(runtime.Path(runtime.__file__).parents[1]))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_no_claim_module_imports_torch_until_it_is_used():
    """Generate and verdict jobs skip torch's import when they never call it."""
    out = _python(
        "import importlib, sys\n"
        "from replica import registry, runtime\n"
        "runtime.defer_torch()\n"
        "for path in sorted(registry.CLAIMS_DIR.glob('*.yaml')):\n"
        "    importlib.import_module(f'replica.claims.{path.stem}')\n"
        "    if runtime.torch_loaded():\n"
        "        print(path.stem)\n"
        "        break\n"
    )
    assert out == "", f"importing {out.strip()} loads torch: use it only inside functions"


def test_deferred_torch_loads_on_first_use_and_is_then_the_real_module():
    out = _python(
        "import sys\n"
        "from replica import runtime\n"
        "runtime.defer_torch()\n"
        "import torch\n"
        "from replica.claims import ntk\n"
        "assert not runtime.torch_loaded()\n"
        "x = torch.ones(3)\n"  # first use: the real torch, one thread
        "assert runtime.torch_loaded() and sys.modules['torch'].ones is torch.ones\n"
        "assert ntk.torch is sys.modules['torch'], 'claim modules are rebound to it'\n"
        "print(torch.get_num_threads(), float(x.sum()))\n"
    )
    assert out.split() == ["1", "3.0"]


def test_a_job_with_a_validated_manifest_skips_the_schema_validator():
    """jsonschema is a fifth of a job's start-up; a manifest the DAG build validated (cached by
    content) is not validated again in each job."""
    _python("from replica import registry\nregistry.load_registry()\n")  # what the DAG build does
    out = _python(
        "import sys\n"
        "from replica import steps\n"
        "steps._context('ntk', 'quick', 0)\n"
        "print('jsonschema' in sys.modules)\n"
    )
    assert out.strip() == "False"
