"""Manifest text is escaped in the gallery; result files are never unpickled."""

import ast
import json
from pathlib import Path

import pytest

from conftest import ROOT, SCRIPT_PAYLOAD


@pytest.mark.slow
def test_script_in_a_claim_title_is_escaped(built_toy_project):
    gallery = built_toy_project / "figures/smoke"
    for page in ("index.html", "coverage.html", "claims/toy_mean.html"):
        html = (gallery / page).read_text()
        assert SCRIPT_PAYLOAD not in html, page
    assert "&lt;script&gt;" in (gallery / "index.html").read_text()
    summary = json.loads((gallery / "summary.json").read_text())
    assert SCRIPT_PAYLOAD in summary["claims"][0]["title"]  # data stays data; HTML escapes it


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


@pytest.mark.parametrize("path", sorted((ROOT / "src").rglob("*.py")), ids=lambda p: p.name)
def test_no_source_unpickles_result_files(path: Path):
    tree = ast.parse(path.read_text())
    for call, name in _calls(tree):
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert not name.startswith("pickle."), f"{path.name}: {name}"
        if name.endswith("torch.load"):
            assert keywords.get("weights_only") == "True", f"{path.name}: torch.load"
        if name in ("np.load", "numpy.load"):
            assert keywords.get("allow_pickle") == "False", f"{path.name}: np.load"
