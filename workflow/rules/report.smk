# The self-contained HTML report a scientist reads, and its figures as files of their own
# (PNG + SVG under results/figures/, each registered for `snakemake --report`).

FIGURES = [
    "exsitu_distribution",
    "relation_exsitu_fraction",
    "relation_size",
    "relation_dispersion",
    "relation_exsitu_profile",
    "relation_metallicity",
    "relation_within_galaxy",
    "training_curves",
    "latent_kl",
    "example_posteriors",
    "residuals",
    "radial_profile",
    "integrated_by_mass",
    "integrated_fraction",
    "calibration",
    "stratified_coverage",
    "coverage_by_truth",
    "functional_ranks",
    "residual_tails",
    "mahalanobis_per_pixel",
]


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
        relations="results/catalog/relations.json",
        model_card="results/models/model.json",
        noise_scale="results/models/noise_scale.json",
    output:
        report=report(
            "results/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
        figures=[
            report(
                f"results/figures/{name}.png",
                caption=f"../report/figures/{name}.rst",
                category="Figures",
            )
            for name in FIGURES
        ]
        + [f"results/figures/{name}.svg" for name in FIGURES],
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        args=stage_args(benchmarks="results/benchmarks"),
        run_config=json.dumps(config, sort_keys=True, default=str),
    shell:
        "exsitu report {params.args} --run-config {params.run_config:q} > {log} 2>&1"
