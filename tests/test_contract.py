"""The claim contract, run over every registered claim (in the spirit of check_estimator)."""

import inspect
import json

import pytest

from replica import registry
from replica.steps import claim_module

REGISTRY = registry.load_registry()
SLUGS = sorted(REGISTRY)
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
