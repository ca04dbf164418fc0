"""Bad input is reported with the file and the field, before any job runs (table-driven)."""

import copy
import json
import math

import pytest
import yaml

from conftest import FIXTURES
from replica import registry


def _manifest():
    return yaml.safe_load((FIXTURES / "toy" / "toy_mean.yaml").read_text())


def _drop(key):
    return lambda m: m.pop(key)


def _set(path, value):
    def mutate(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


MANIFEST_CASES = [
    ("missing checks", _drop("checks"), "checks"),
    ("missing controls", _drop("controls"), "controls"),
    ("missing paper", _drop("paper"), "paper"),
    ("seeds mistyped", _set(["scales", "quick", "seeds"], "two"), "scales.quick.seeds"),
    ("negative seed count", _set(["scales", "smoke", "seeds"], -3), "scales.smoke.seeds"),
    ("NaN threshold", _set(["checks", 0, "threshold"], math.nan), "checks.0.threshold"),
    ("infinite threshold", _set(["controls", 0, "threshold"], math.inf), "controls.0.threshold"),
    ("unknown comparison", _set(["checks", 0, "op"], "=>"), "checks.0.op"),
    (
        "unknown scale",
        _set(["scales", "huge"], {"seeds": 1, "grid": {}, "params": {}}),
        "scales.huge",
    ),
    ("missing scale", lambda m: m["scales"].pop("paper"), "scales.paper"),
    ("empty grid axis", _set(["scales", "smoke", "grid", "n"], []), "scales.smoke.grid.n"),
    ("typo in a top-level key", lambda m: m.update(deviation=m.pop("deviations")), "deviation"),
    ("slug with a path in it", _set(["slug"], "../evil"), "slug"),
    ("slug not the file name", _set(["slug"], "other_name"), "slug"),
    ("bad arXiv id", _set(["paper", "arxiv"], "arXiv:1234"), "paper.arxiv"),
    ("claim too short", _set(["claim"], "true"), "claim"),
    (
        "duplicate check name",
        lambda m: m["controls"].append(
            {**copy.deepcopy(m["controls"][0]), "name": m["checks"][0]["name"]}
        ),
        "checks",
    ),
    ("key statistic missing", _drop("key_statistic"), "key_statistic"),
]


@pytest.fixture
def claims_dir(toy_project):
    return toy_project / "workflow" / "claims"


@pytest.mark.parametrize("name,mutate,field", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_bad_manifest_names_file_and_field(claims_dir, monkeypatch, name, mutate, field):
    _use_project(monkeypatch, claims_dir.parents[1])
    manifest = _manifest()
    mutate(manifest)
    path = claims_dir / "toy_mean.yaml"
    path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(registry.InvalidInput) as err:
        registry.load_registry(claims_dir)
    assert err.value.field == field, str(err.value)
    assert str(path) in str(err.value)


def _use_project(monkeypatch, project):
    monkeypatch.setattr(registry, "SRC_DIR", project / "src")
    monkeypatch.setattr(registry, "NOTEBOOK_DIR", project / "notebooks")


def test_invalid_yaml_is_reported(claims_dir, monkeypatch):
    _use_project(monkeypatch, claims_dir.parents[1])
    (claims_dir / "toy_mean.yaml").write_text("slug: [unclosed\n")
    with pytest.raises(registry.InvalidInput, match="not valid YAML"):
        registry.load_registry(claims_dir)


def test_notebook_without_parameters_cell(claims_dir, monkeypatch):
    project = claims_dir.parents[1]
    _use_project(monkeypatch, project)
    nb_path = project / "notebooks" / "toy_mean.ipynb"
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("tags", None)
    nb_path.write_text(json.dumps(nb))
    with pytest.raises(registry.InvalidInput) as err:
        registry.load_registry(claims_dir)
    assert err.value.field == "cells.parameters" and str(nb_path) in str(err.value)


def test_missing_module(claims_dir, monkeypatch):
    project = claims_dir.parents[1]
    _use_project(monkeypatch, project)
    (project / "src/replica/claims/toy_mean.py").unlink()
    with pytest.raises(registry.InvalidInput, match="no claim module"):
        registry.load_registry(claims_dir)


CONFIG_CASES = [
    ("unknown scale", {"scale": "huge"}, "scale"),
    ("typo in a config key", {"scael": "quick"}, "scael"),
    ("claims not a list", {"claims": "ntk"}, "claims"),
    ("negative base seed", {"base_seed": -1}, "base_seed"),
    ("unknown device", {"device": "tpu"}, "device"),
]


@pytest.mark.parametrize("name,config,field", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_names_the_field(name, config, field):
    with pytest.raises(registry.InvalidInput) as err:
        registry.load_config(config, source="config")
    assert err.value.field == field, str(err.value)


def test_unknown_claim_lists_the_valid_ones():
    reg = registry.load_registry()
    with pytest.raises(registry.InvalidInput) as err:
        registry.selected_claims({"claims": ["no_such_claim"]}, reg)
    for slug in reg:
        assert slug in str(err.value)


def test_defaults_fill_a_partial_config():
    assert registry.load_config({}) == {
        "scale": "quick",
        "claims": "all",
        "device": "auto",
        "base_seed": 0,
        "warm_worker": True,
    }


def test_import_scan_finds_every_form_of_replica_import():
    source = (
        "from replica import (\n    runtime,\n    margins as m,\n)\n"
        "import replica.verdicts, numpy\n"
        "    from replica.claims.x import y  # indented, inside a function\n"
        "from numpy import replica_like\n"
    )
    assert registry.imported_replica_modules(source) == {
        "replica",
        "replica.runtime",
        "replica.margins",
        "replica.verdicts",
        "replica.claims.x",
        "replica.claims.x.y",
    }


def test_a_cached_manifest_is_checked_again_once_edited(tmp_path, monkeypatch):
    """The registry's cache of validated manifests is keyed by content: an edit that breaks a
    manifest is reported as before, and an invalid manifest is never stored."""
    cache = registry._ValidatedManifests(tmp_path / "cache.json")
    monkeypatch.setattr(registry, "_VALIDATED", cache)
    path = tmp_path / "ntk.yaml"
    text = (registry.CLAIMS_DIR / "ntk.yaml").read_text()
    path.write_text(text)
    first = registry.load_manifest(path)
    cache.save({cache._key(path)})
    assert len(json.loads((tmp_path / "cache.json").read_text())) == 1
    reloaded = registry._ValidatedManifests(tmp_path / "cache.json")
    assert reloaded.get(path) == first.data  # served from the file, same data

    path.write_text(text.replace("seeds:", "seeds: -1 #", 1))
    with pytest.raises(registry.InvalidInput, match="seeds"):
        registry.load_manifest(path)
    assert reloaded.get(path) is None and cache.get(path) is None


def test_a_manifest_alone_is_checked_before_its_module_and_notebook_exist(tmp_path, capsys):
    """Pre-registration commits the manifest first: `python -m replica check` validates it on
    its own, and reports a bad one with its file and field."""
    from replica import steps

    good = tmp_path / "toy_mean.yaml"
    good.write_text(yaml.safe_dump(_manifest()))
    bad_manifest = _manifest()
    bad_manifest["checks"][0]["op"] = "=>"
    bad = tmp_path / "bad" / "toy_mean.yaml"
    bad.parent.mkdir()
    bad.write_text(yaml.safe_dump(bad_manifest))
    assert steps.main(["check", str(good)]) == 0  # no module, no notebook beside it
    assert steps.main(["check", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "checks.0.op" in err
    with pytest.raises(registry.InvalidInput, match="no notebook"):
        registry._validated(good)  # the full check still asks for the notebook
