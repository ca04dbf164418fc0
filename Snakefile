# replica: each claim of workflow/claims/*.yaml becomes the chain
#   generate (data, theory) -> train (one job per grid point) -> verdict (metrics, verdict)
#   -> notebook (papermill) -> claim page (nbconvert) -> gallery, at one scale per run
# Usage: snakemake --cores N [--config scale=paper claims='[ntk]'] [--profile profiles/slurm]


configfile: "workflow/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    slug="[a-z0-9_]+",
    point="[A-Za-z0-9_.+-]+",


include: "workflow/rules/claim.smk"
include: "workflow/rules/gallery.smk"


rule all:
    default_target: True
    input:
        f"{GALLERY}/index.html",
        f"{GALLERY}/coverage.html",
        f"{GALLERY}/summary.json",
        f"{GALLERY}/.no-errors",


onerror:
    # A job failed (a training error fails its job so that nothing enters the cache): the
    # gallery is still built, with an error card and the logs for each claim that stopped.
    from replica import gallery as replica_gallery

    try:
        replica_gallery.build_after_failure(
            SCALE, Path(GALLERY), Path("results"), CLAIMS
        )
    except Exception as err:
        # the run has failed already: say why the gallery did not build as well
        print(f"replica: no gallery after the failure: {err}", file=sys.stderr)
