# The non-spatial baselines (radial profile, per-pixel lookup, gradient-boosted trees), fitted
# once on the training maps; evaluate and the learning-curve benchmark apply them.


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
    params:
        args=stage_args(),
        # The training prior (natural | balanced), a plain value so that Snakemake sees it change
        # (a function in params, like args, is not compared between runs).
        weighting=config["plan"]["weighting"],
        settings=settings("conditions"),
    shell:
        "exsitu fit_baselines {params.args} --weighting {params.weighting} --settings {params.settings:q} > {log} 2>&1"
