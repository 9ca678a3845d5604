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
        # The training prior: natural | balanced.
        args=stage_args(weighting=config["plan"]["weighting"]),
        settings=settings("conditions"),
    shell:
        "exsitu fit_baselines {params.args} --settings {params.settings:q} > {log} 2>&1"
