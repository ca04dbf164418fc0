"""Snakemake end to end: dry runs, the smoke gallery, re-run behaviour, failure isolation."""

import json
import re
import time

import pytest
from browsing import CHROMIUM, page_problems
from cdp import Browser

from conftest import ROOT, add_toy_claim, snakemake
from replica import registry

pytestmark = pytest.mark.slow


def planned_jobs(project, *args):
    """{rule: count} of what a dry run would execute."""
    out = snakemake(project, "-n", "--quiet", "rules", *args)
    assert out.returncode == 0, out.stderr
    counts = {}
    for line in out.stdout.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


@pytest.mark.parametrize("scale", registry.SCALES)
def test_dry_run_every_scale(scale):
    out = snakemake(ROOT, "-n", "--forceall", "--config", f"scale={scale}")
    assert out.returncode == 0, out.stderr
    for slug in registry.load_registry():
        assert f"results/{scale}/{slug}/verdict.json" in out.stdout


def test_bad_config_stops_before_any_job(toy_project):
    out = snakemake(toy_project, "--config", "scael=quick")
    assert out.returncode != 0
    assert "field 'scael'" in out.stderr and "unknown key" in out.stderr
    assert not (toy_project / "results").exists()
    out = snakemake(toy_project, "--config", "scale=huge")
    assert out.returncode != 0 and "field 'scale'" in out.stderr


def test_bad_manifest_stops_before_any_job(toy_project):
    path = toy_project / "workflow/claims/toy_mean.yaml"
    path.write_text(path.read_text().replace("seeds: 4", "seeds: -4"))
    out = snakemake(toy_project, "--config", "scale=smoke")
    assert out.returncode != 0
    assert "toy_mean.yaml: field 'scales.smoke.seeds'" in out.stderr
    assert not (toy_project / "results").exists()


def test_unknown_claim_target_lists_valid_claims(toy_project):
    out = snakemake(toy_project, "results/smoke/nope/verdict.json", "--config", "scale=smoke")
    assert out.returncode != 0
    assert "unknown claim 'nope'; valid claims: toy_mean" in out.stdout + out.stderr
    out = snakemake(toy_project, "--config", "claims=[nope]")
    assert out.returncode != 0 and "valid claims: toy_mean" in out.stderr


# What an edit to a notebook or to a manifest's text re-runs: the notebook and everything after.
PAGE_JOBS = {"notebook", "claim_page", "gallery", "check_errors", "all"}


def test_toy_chain_reruns_only_what_an_edit_touches(toy_project):
    out = snakemake(toy_project, "--config", "scale=smoke")
    assert out.returncode == 0, out.stderr
    verdict = json.loads((toy_project / "results/smoke/toy_mean/verdict.json").read_text())
    assert verdict["status"] == "replicated"
    assert planned_jobs(toy_project, "--config", "scale=smoke") == {}

    # Snakemake compares checksums of small inputs, so an edit must change content.
    time.sleep(1.1)
    _append(toy_project / "notebooks/toy_mean.ipynb", "\n")
    assert set(planned_jobs(toy_project, "--config", "scale=smoke")) == PAGE_JOBS

    # the manifest's text (claim, deviations) is shown by the notebook, page and gallery only
    manifest = toy_project / "workflow/claims/toy_mean.yaml"
    manifest.write_text(manifest.read_text().replace("claim: ", "claim: Edited. ", 1))
    assert set(planned_jobs(toy_project, "--config", "scale=smoke")) == PAGE_JOBS

    # a check's threshold: the verdict job (which measures, then judges) and the pages
    manifest.write_text(manifest.read_text().replace("threshold: 0.3", "threshold: 0.31", 1))
    assert set(planned_jobs(toy_project, "--config", "scale=smoke")) == {"verdict", *PAGE_JOBS}

    _append(toy_project / "src/replica/claims/toy_mean.py", "\n# edited\n")
    jobs = planned_jobs(toy_project, "--config", "scale=smoke")
    assert jobs["train"] == 3 and jobs["generate"] == 1 and jobs["verdict"] == 1

    # The step driver runs every compute job, so it is their input too (and in the cache key).
    out = snakemake(toy_project, "--config", "scale=smoke")
    assert out.returncode == 0, out.stderr
    _append(toy_project / "src/replica/steps.py", "\n# edited\n")
    jobs = planned_jobs(toy_project, "--config", "scale=smoke")
    assert jobs["train"] == 3 and jobs["generate"] == 1 and jobs["verdict"] == 1


def test_a_broken_claim_does_not_take_the_gallery_down(toy_project):
    """One run, two broken claims beside a good one: a module that does not parse (reported
    with file and line, no traceback) and a training that raises; both get error cards."""
    add_toy_claim(toy_project, "toy_syntax")
    module = toy_project / "src/replica/claims/toy_syntax.py"
    module.write_text(module.read_text() + "\ndef broken(:\n")
    add_toy_claim(toy_project, "toy_broken", fail="train")
    out = snakemake(toy_project, "--config", "scale=smoke")
    text = out.stdout + out.stderr
    assert out.returncode != 0, "the command must still report the failure"
    assert (
        f"{module}:" in text
        and "SyntaxError" in text
        and "Traceback" not in text.split("SyntaxError")[0][-500:]
    )
    assert "claim toy_broken: ERROR" in text
    summary = json.loads((toy_project / "figures/smoke/summary.json").read_text())
    status = {c["slug"]: c["status"] for c in summary["claims"]}
    assert status == {"toy_mean": "replicated", "toy_syntax": "error", "toy_broken": "error"}
    broken = next(c for c in summary["claims"] if c["slug"] == "toy_broken")
    assert "deliberate failure" in broken["reason"]
    error_page = (toy_project / "figures/smoke/claims/toy_broken.html").read_text()
    assert "toy_broken_logs/train_n-10.log" in error_page
    log = toy_project / "figures/smoke/claims/toy_broken_logs"
    assert "deliberate failure" in (log / "train_n-10.log").read_text()
    if CHROMIUM:  # error cards and pages link only to what exists
        gallery = toy_project / "figures/smoke"
        with Browser(CHROMIUM) as browser:
            for page in [gallery / "index.html", *sorted((gallery / "claims").glob("*.html"))]:
                browser.goto(page)
                assert not page_problems(browser, page)


def _append(path, text):
    path.write_text(path.read_text() + text)


def test_smoke_gallery_of_every_claim(smoke_project):
    """The real claims at smoke scale, end to end (built once per session), no-op re-run."""
    summary = json.loads((smoke_project / "figures/smoke/summary.json").read_text())
    slugs = {c["slug"] for c in summary["claims"]}
    assert slugs == set(registry.load_registry())
    for claim in summary["claims"]:
        assert claim["status"] in ("replicated", "partial", "inconclusive", "not-replicated"), claim
        assert claim["primary"] and set(claim["counts"]["checks"]) == {
            "pass",
            "fail",
            "inconclusive",
        }
        assert "fraction" in claim["robustness"]
        assert claim["notebook_error"] is None, claim
        assert (smoke_project / "figures/smoke" / claim["page"]).exists()
        assert claim["runtime_s"] > 0
    coverage = (smoke_project / "figures/smoke/coverage.html").read_text()
    assert coverage.count("<tr data-search=") == 120  # one row per ledger paper
    assert planned_jobs(smoke_project, "--config", "scale=smoke") == {}


def test_snakemake_lint_is_clean(toy_project):
    out = snakemake(toy_project, "--lint")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Congratulations" in out.stdout + out.stderr


@pytest.mark.parametrize("warm", [False, True], ids=["own_kernel", "warm_kernel"])
def test_a_hung_notebook_cell_times_out_into_an_error_card(
    built_toy_project, tmp_path, monkeypatch, capfd, warm
):
    from test_warm import WARM_LINE, start_worker_for

    from replica import notebooks, runtime

    if warm:  # the kernel forks from the warm worker (nbclient interrupts, then kills it)
        start_worker_for(built_toy_project)
        monkeypatch.setenv("REPLICA_WARM_WORKER", "1")

    project = built_toy_project  # read only: the hung notebook is a copy in tmp_path
    nb = json.loads((project / "notebooks/toy_mean.ipynb").read_text())
    nb["cells"].append(
        {
            "cell_type": "code",
            "metadata": {},
            "outputs": [],
            "execution_count": None,
            "source": ["import time\n", "time.sleep(600)\n"],
        }
    )
    (tmp_path / "toy_mean.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(notebooks.registry, "ROOT", project)
    monkeypatch.setattr(notebooks.registry, "CLAIMS_DIR", project / "workflow/claims")
    monkeypatch.setattr(notebooks.registry, "NOTEBOOK_DIR", tmp_path)
    monkeypatch.setattr(notebooks.registry, "SRC_DIR", project / "src")
    monkeypatch.setenv("REPLICA_CELL_TIMEOUT_S", "3")
    results = project / "results/smoke/toy_mean"
    started = time.monotonic()
    notebooks.execute("toy_mean", "smoke", results, tmp_path / "nb.ipynb", tmp_path / "nb.png")
    assert time.monotonic() - started < 120
    error = runtime.read_json(tmp_path / "nb.ipynb")["metadata"]["replica"]["error"]
    assert error and "3 s" in error
    assert (WARM_LINE in capfd.readouterr().out) == warm  # the kernel's output is the job's


def test_snakemake_report_groups_figures_verdicts_and_pages_by_theme(built_toy_project, tmp_path):
    import zipfile

    report = tmp_path / "report.zip"
    out = snakemake(built_toy_project, "--report", str(report), "--config", "scale=smoke")
    assert out.returncode == 0, out.stderr[-3000:]
    with zipfile.ZipFile(report) as archive:
        names = archive.namelist()
        text = "\n".join(
            archive.read(n).decode(errors="replace") for n in names if n.endswith(".html")
        )
    for kind in ("figure.png", "verdict.json", "toy_mean.html"):
        assert any(n.endswith(kind) for n in names), (kind, names[:40])
    assert "testing" in text  # the toy claim's theme is its category
