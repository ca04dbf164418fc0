# replica: each claim of workflow/claims/*.yaml becomes the chain
#   generate -> theory | train (one job per grid point) -> measure -> verdict
#   -> notebook (papermill) -> claim page (nbconvert) -> gallery
# Usage: snakemake --cores N [--config scale=paper claims='[ntk]'] [--profile profiles/slurm]


configfile: "workflow/config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    scale="smoke|quick|paper",
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
