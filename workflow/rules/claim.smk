# The generic claim chain. Nothing here names a claim: the registry drives it.


rule generate:
    """The synthetic data, then the theory's prediction for it: both depend only on the data
    distribution and the settings, and are always re-run together (one process, not two).
    """
    output:
        data=f"{RESULTS}/data.npz",
        theory=f"{RESULTS}/theory.json",
    log:
        f"{RESULTS}/logs/generate.log",
    benchmark:
        f"{RESULTS}/benchmarks/generate.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **STEP_RESOURCES,
    params:
        scale=SCALE,
        settings=scale_settings,
        sources=claim_sources_digest,
        base_seed=CONFIG["base_seed"],
    shell:
        "python -m replica generate {wildcards.slug} --scale {params.scale} "
        "--base-seed {params.base_seed} --out {output.data} --theory {output.theory} "
        "> {log} 2>&1"


rule train:
    input:
        data=f"{RESULTS}/data.npz",
    output:
        f"{RESULTS}/train/{{point}}.npz",
    log:
        f"{RESULTS}/logs/train/{{point}}.log",
    # Training is the expensive step: with --cache and SNAKEMAKE_OUTPUT_CACHE set, a second
    # checkout reuses it instead of retraining. The software stack is pinned, so it is left out
    # of the cache key. A cached rule may not have a benchmark: the step stores its own wall
    # time in the .npz (runtime.TRAIN_SECONDS_KEY) for the gallery.
    cache: "omit-software"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **STEP_RESOURCES,
        gpu=TRAIN_GPUS,
    params:
        scale=SCALE,
        settings=scale_settings,
        sources=claim_sources_digest,
        base_seed=CONFIG["base_seed"],
        device=CONFIG["device"],
        # The cache key hashes params and inputs but not wildcards: without this, every grid
        # point of a claim would share one cache entry.
        job=lambda wildcards: dict(wildcards.items()),
    shell:
        "python -m replica train {wildcards.slug} --scale {params.scale} "
        "--point {wildcards.point} --base-seed {params.base_seed} --device {params.device} "
        "--data {input.data} --out {output} > {log} 2>&1"


rule verdict:
    """The metrics of the trained runs, then the verdict on them (one process: a training
    re-runs both). An edit to the checks re-runs only this job and what reads it."""
    input:
        data=f"{RESULTS}/data.npz",
        runs=train_outputs,
        theory=f"{RESULTS}/theory.json",
        code=code("verdicts.py"),
    output:
        metrics=f"{RESULTS}/metrics.json",
        verdict=report(
            f"{RESULTS}/verdict.json",
            caption="../report/verdict.rst",
            category=claim_theme,
            subcategory="{slug}",
            labels={"claim": "{slug}", "file": "verdict"},
        ),
        provenance=f"{RESULTS}/provenance.json",
    log:
        f"{RESULTS}/logs/verdict.log",
    benchmark:
        f"{RESULTS}/benchmarks/verdict.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **STEP_RESOURCES,
    params:
        scale=SCALE,
        settings=scale_settings,
        sources=claim_sources_digest,
        base_seed=CONFIG["base_seed"],
        checks=verdict_settings,
    shell:
        "python -m replica verdict {wildcards.slug} --scale {params.scale} "
        "--base-seed {params.base_seed} --data {input.data} --runs {input.runs} "
        "--theory {input.theory} --metrics {output.metrics} --out {output.verdict} "
        "--provenance {output.provenance} > {log} 2>&1"


rule notebook:
    input:
        notebook=notebook_source,
        # notebooks print the manifest's text (claim, deviations): an edit re-runs them
        manifest="workflow/claims/{slug}.yaml",
        verdict=f"{RESULTS}/verdict.json",
        metrics=f"{RESULTS}/metrics.json",
        theory=f"{RESULTS}/theory.json",
        data=f"{RESULTS}/data.npz",
        code=code("report.py", "notebooks.py"),
    output:
        notebook=f"{RESULTS}/notebook.ipynb",
        figure=report(
            f"{RESULTS}/figure.png",
            caption="../report/figure.rst",
            category=claim_theme,
            subcategory="{slug}",
            labels={"claim": "{slug}", "file": "main figure"},
        ),
    log:
        f"{RESULTS}/logs/notebook.log",
    benchmark:
        f"{RESULTS}/benchmarks/notebook.tsv"
    retries: 2  # a kernel port race under parallel runs; the retry is clean
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **STEP_RESOURCES,
    params:
        scale=SCALE,
    shell:
        "python -m replica notebook {wildcards.slug} --scale {params.scale} "
        "--verdict {input.verdict} --out {output.notebook} --figure {output.figure} "
        "> {log} 2>&1"
