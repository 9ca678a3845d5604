# The self-contained HTML report a scientist reads (figures embedded).


rule report:
    input:
        catalog="results/catalog/subhalos.csv",
        plan="results/catalog/projections.csv",
        split="results/dataset/split.csv",
        histories=expand(
            "results/models/{model}_history.csv", model=["cvae", "flow", "baseline"]
        ),
        metrics="results/evaluation/metrics.json",
        summaries="results/evaluation/summaries.h5",
    output:
        report(
            "results/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        run_config=json.dumps(config, sort_keys=True, default=str),
        benchmarks="results/benchmarks",
    shell:
        "python -m exsitu.report --catalog {input.catalog} --plan {input.plan}"
        " --split {input.split} --histories {input.histories}"
        " --metrics {input.metrics} --summaries {input.summaries}"
        " --benchmarks {params.benchmarks} --run-config {params.run_config:q}"
        " --out {output} > {log} 2>&1"
