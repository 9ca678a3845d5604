# The non-spatial baselines (radial profile, per-pixel lookup, gradient-boosted trees), fitted
# once on the training maps, and every baseline's predictions of the test maps (with the
# deterministic U-net of train_baseline), which evaluate scores; the learning-curve benchmark
# applies the fitted baselines itself.


rule fit_baselines:
    input:
        **DATASET,
    output:
        out="results/models/baselines.joblib",
    log:
        "results/logs/fit_baselines.log",
    benchmark:
        "results/benchmarks/fit_baselines.tsv"
    conda:
        "../../envs/exsitu.yaml"
    # One thread: scikit-learn's OpenMP threads spin-wait, which is many times slower when the
    # cores are shared with a training job (measured: 8.6 s against 0.9 s for one quantile model).
    threads: 1
    resources:
        **job_resources("baselines"),
    params:
        args=stage_args(),
        # The training prior (natural | balanced), a plain value so that Snakemake sees it change
        # (a function in params, like args, is not compared between runs).
        weighting=config["plan"]["weighting"],
        settings=settings("conditions"),
    shell:
        "exsitu fit_baselines {params.args} --weighting {params.weighting} --settings {params.settings:q} > {log} 2>&1"


rule predict_baselines:
    input:
        **DATASET,
        baseline="results/models/baseline.pt",
        baselines="results/models/baselines.joblib",
    output:
        out="results/evaluation/baseline_maps.h5",
    log:
        "results/logs/predict_baselines.log",
    benchmark:
        "results/benchmarks/predict_baselines.tsv"
    conda:
        "../../envs/exsitu.yaml"
    threads: side_by_side_threads("baselines")
    resources:
        **job_resources("baselines"),
    params:
        args=stage_args(device=config["device"]),
        settings=settings("conditions"),
    shell:
        "exsitu predict_baselines {params.args} --workers {threads} --settings {params.settings:q} > {log} 2>&1"
