# The gallery: one page per claim, then the index, coverage page and summary.json.
# These are quick file operations: on a cluster they run where Snakemake runs, not as jobs.


localrules:
    claim_page,
    gallery_assets,
    gallery,
    check_errors,


rule claim_page:
    input:
        notebook=f"results/{SCALE}/{{slug}}/notebook.ipynb",
        figure=f"results/{SCALE}/{{slug}}/figure.png",
        verdict=f"results/{SCALE}/{{slug}}/verdict.json",
        provenance=f"results/{SCALE}/{{slug}}/provenance.json",
        manifest="workflow/claims/{slug}.yaml",
        module=claim_module,  # copied into the gallery as the page's sources
        notebook_source=notebook_source,
        code=code(
            "gallery.py",
            "notebooks.py",
            "report.py",
            "verdict_figure.py",
            "templates/claim_page.html.j2",
        ),
    output:
        page=report(
            f"{GALLERY}/claims/{{slug}}.html",
            caption="../report/page.rst",
            category=claim_theme,
            subcategory="{slug}",
            labels={"claim": "{slug}", "file": "claim page"},
        ),
        notebook=f"{GALLERY}/claims/{{slug}}.ipynb",
        thumbnail=f"{GALLERY}/claims/{{slug}}.png",
        verdict_figure=f"{GALLERY}/claims/{{slug}}.verdict.svg",
        sources=directory(f"{GALLERY}/claims/{{slug}}_src"),
        logs=directory(f"{GALLERY}/claims/{{slug}}_logs"),
    log:
        f"results/{SCALE}/{{slug}}/logs/page.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        scale=SCALE,
        gallery=lambda wildcards, output: Path(output.page).parent.parent,
    shell:
        "python -m replica gallery page {wildcards.slug} --scale {params.scale} "
        "--gallery {params.gallery} > {log} 2>&1"


rule gallery_assets:
    output:
        directory(f"{GALLERY}/assets"),
    log:
        f"results/{SCALE}/logs/gallery_assets.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        gallery=lambda wildcards, output: Path(output[0]).parent,
    shell:
        "python -m replica gallery assets --gallery {params.gallery} > {log} 2>&1"


rule gallery:
    input:
        pages=expand(f"{GALLERY}/claims/{{slug}}.html", slug=CLAIMS),
        verdicts=expand(f"results/{SCALE}/{{slug}}/verdict.json", slug=CLAIMS),
        manifests=expand("workflow/claims/{slug}.yaml", slug=CLAIMS),  # titles, claims, themes
        assets=f"{GALLERY}/assets",
        code=code(
            "gallery.py",
            "report.py",
            "verdict_figure.py",
            "templates/index.html.j2",
            "templates/coverage.html.j2",
            "templates/style.css",
            "templates/gallery.js",
            "data/ledger.yaml",
        ),
    output:
        index=f"{GALLERY}/index.html",
        coverage=f"{GALLERY}/coverage.html",
        summary=f"{GALLERY}/summary.json",
    log:
        f"results/{SCALE}/logs/gallery.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        scale=SCALE,
        gallery=lambda wildcards, output: Path(output.index).parent,
        claims=CLAIMS,
    shell:
        "python -m replica gallery build {params.claims} --scale {params.scale} "
        "--gallery {params.gallery} "
        "> {log} 2>&1"


rule check_errors:
    """Fails the run, after the gallery is built, when any claim ended in `error`."""
    input:
        f"{GALLERY}/summary.json",
    output:
        touch(f"{GALLERY}/.no-errors"),
    log:
        f"results/{SCALE}/logs/check_errors.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        gallery=lambda wildcards, output: Path(output[0]).parent,
    shell:
        "python -m replica gallery check --gallery {params.gallery} 2>&1 | tee {log}"
