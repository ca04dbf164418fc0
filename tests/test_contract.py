"""The claim contract, run over every registered claim (in the spirit of check_estimator)."""

import inspect
import json
import math
import re

import pytest

from replica import registry
from replica.steps import claim_module

# One manifest at a time: a claim whose manifest is invalid fails its own tests (with the
# file and field), never the collection of every other claim's.
SLUGS = sorted(p.stem for p in registry.CLAIMS_DIR.glob("*.yaml"))


class _Registry(dict):
    def __missing__(self, slug):
        self[slug] = registry.load_manifest(registry.CLAIMS_DIR / f"{slug}.yaml")
        return self[slug]


REGISTRY = _Registry()
SIGNATURES = {
    "generate": ["params", "seeds"],
    "theory": ["data", "params"],
    "train": ["data", "point", "params", "seeds", "device"],
    "measure": ["data", "runs", "points", "params"],
    "verdict": ["metrics", "theory", "params"],
}


def test_the_exemplar_claims_are_registered():
    assert {"adam_linf_margin", "advani_saxe_hd_dynamics", "ntk"} <= set(SLUGS)


@pytest.mark.parametrize("slug", SLUGS)
def test_manifest_is_valid(slug):
    registry.load_manifest(registry.CLAIMS_DIR / f"{slug}.yaml")


@pytest.mark.parametrize("slug", SLUGS)
def test_module_exposes_the_chain_functions(slug):
    module = claim_module(slug)
    assert module.__doc__, "a claim module opens with the claim and its theory"
    for name, params in SIGNATURES.items():
        fn = getattr(module, name)
        assert list(inspect.signature(fn).parameters)[: len(params)] == params, name


@pytest.mark.parametrize("slug", SLUGS)
def test_manifest_is_complete(slug):
    m = REGISTRY[slug]
    assert m.path.stem == slug
    assert m.data["checks"] and m.data["controls"], "a claim needs checks and negative controls"
    for scale in registry.SCALES:
        assert m.points(scale), scale
    # smoke is for tests: it must be the cheapest scale
    assert m.scale("smoke")["seeds"] <= m.scale("quick")["seeds"] <= m.scale("paper")["seeds"]


@pytest.mark.parametrize("slug", SLUGS)
def test_notebook_is_parameterised_and_stripped(slug):
    nb = json.loads(REGISTRY[slug].notebook_path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"]["tags"]
    source = "".join(code[0]["source"])
    for name in ("results_dir", "figure_path", "scale"):
        assert name in source
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["metadata"]["language_info"]["name"] == "python"
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None


@pytest.mark.parametrize("slug", SLUGS)
def test_notebook_never_trains(slug):
    text = REGISTRY[slug].notebook_path.read_text()
    for forbidden in (".train(", "import torch", "generate("):
        assert forbidden not in text, forbidden


@pytest.mark.parametrize("slug", SLUGS)
def test_module_sources_track_shared_imports(slug):
    sources = registry.module_sources(slug)
    assert sources[0].name.endswith(".py")
    assert REGISTRY[slug].module_path in sources


STATUS_WORDS = re.compile(r"(?<![\\\w-])(replicated|not-replicated|inconclusive|partial)\b", re.I)
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+|\d+(?:\.\d+)?\s?%")
SEED_COUNT = re.compile(r"\b\d+\s+of\s+\d+\s+(?:seeds|runs)\b", re.I)


def _manifest_numbers(m) -> set[float]:
    """Every number the manifest or the claim module states (settings, thresholds, constants
    fixed in code): pre-registered, not results."""
    text = m.path.read_text() + m.module_path.read_text()
    return {float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)}


def _markdown(slug) -> list[str]:
    nb = json.loads(REGISTRY[slug].notebook_path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("slug", SLUGS)
def test_one_primary_check_and_every_control_an_ablation(slug):
    data = REGISTRY[slug].data
    assert sum(bool(c.get("primary")) for c in data["checks"]) == 1
    assert data["controls"], "at least one ablation per claim"
    for control in data["controls"]:
        assert control["kind"] == "ablation"
        assert len(control["how_it_could_fail"].split()) >= 5, control["name"]


@pytest.mark.parametrize("slug", SLUGS)
def test_every_gate_is_declared_and_complete(slug):
    data = REGISTRY[slug].data
    for row in data["checks"] + data["controls"] + data.get("preconditions", []):
        gate = row.get("gate", "interval")
        if gate == "band":
            assert "band" in row or "relative_to" in row, row["name"]
        else:
            assert row["op"] in (">", ">=", "<", "<=") and math.isfinite(row["threshold"])
        if gate == "mean":
            assert row["gate_reason"].strip(), row["name"]


@pytest.mark.parametrize("slug", SLUGS)
def test_notebook_markdown_types_no_result(slug):
    """Narrative from data: no verdict word and no result number typed in a markdown cell."""
    allowed = _manifest_numbers(REGISTRY[slug])
    for text in _markdown(slug):
        assert not STATUS_WORDS.search(text), STATUS_WORDS.search(text).group(0)
        assert not SEED_COUNT.search(text), SEED_COUNT.search(text).group(0)
        assert "what we found" not in text.lower(), "generate it: report.show_findings"
        for token in NUMBER.findall(text):
            value = float(token.rstrip("% ").strip())
            as_fraction = value / 100 if token.endswith("%") else value
            assert value in allowed or as_fraction in allowed, (
                f"{token!r} is typed in markdown but stated in neither manifest nor module"
            )


@pytest.mark.parametrize("slug", SLUGS)
def test_notebook_shows_the_generated_findings(slug):
    text = REGISTRY[slug].notebook_path.read_text()
    assert "show_findings(" in text and "show_verdict(" in text


def test_citation_cff_lists_every_claim_paper():
    from replica import citation

    committed = (registry.ROOT / "CITATION.cff").read_text()
    assert committed == citation.render(), "regenerate: python -m replica.citation > CITATION.cff"


def test_shared_blocks_are_sources_of_the_claims_that_use_them():
    """A claim importing a block re-runs when the block is edited (module sources follow it)."""
    blocks = registry.SRC_DIR / "replica" / "blocks"
    assert blocks / "signal_noise.py" in registry.module_sources("benign_overfit_trainable_cnn")
    assert blocks / "margins.py" in registry.module_sources("adam_linf_margin")


def test_sources_digest_follows_every_source_and_not_the_checkout(tmp_path):
    """The compute rules' sources param: the same in two checkouts of the same code (so they
    share the training cache), changed by an edit to a block the claim imports or to the step
    driver, and not by an edit to a block it does not import."""
    import subprocess
    import sys

    from conftest import copy_project

    driver = ("src/replica/steps.py", "src/replica/runtime.py")

    def digest(project):
        files = tuple(str(project / d) for d in driver)
        code = (
            "from replica import registry; "
            f"print(registry.sources_digest('adam_linf_margin', {files}))"
        )
        env = {"PYTHONPATH": str(project / "src"), "PATH": ""}
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    first, second = copy_project(tmp_path / "a"), copy_project(tmp_path / "b")
    original = digest(first)
    assert len(original) == 64 and digest(second) == original
    blocks = second / "src/replica/blocks"
    (blocks / "signal_noise.py").write_text((blocks / "signal_noise.py").read_text() + "\n# x\n")
    assert digest(second) == original, "adam_linf_margin does not import signal_noise"
    (blocks / "margins.py").write_text((blocks / "margins.py").read_text() + "\n# x\n")
    edited_block = digest(second)
    assert edited_block != original
    steps = second / "src/replica/steps.py"
    steps.write_text(steps.read_text() + "\n# x\n")
    assert digest(second) not in (original, edited_block)


def test_shared_blocks_know_nothing_of_the_workflow_engine():
    engine = {"registry", "steps", "runtime", "gallery", "notebooks", "provenance", "report"}
    for path in (registry.SRC_DIR / "replica" / "blocks").glob("*.py"):
        imported = registry.imported_replica_modules(path.read_text())
        assert not {name.split(".")[1] for name in imported if "." in name} & engine, path.name


@pytest.mark.parametrize("slug", SLUGS)
def test_claim_module_leaves_torchs_process_defaults_alone(slug):
    """A claim that sets torch's default dtype or device changes every later claim run in the
    same process (the in-process chain, the tests): pass dtype and device explicitly."""
    text = REGISTRY[slug].module_path.read_text()
    for forbidden in ("set_default_dtype", "set_default_tensor_type", "set_default_device"):
        assert forbidden not in text, forbidden
