# Survey scale, outside `all`: `snakemake predict_catalogue` applies a model directory to the
# observed galaxies of `predict.inputs` / `predict.list`, sharded over jobs like `project`
# (input i goes to shard i mod predict.n_shards), and merges the shard catalogues.

PREDICT = config["predict"]
PREDICT_SHARDS = list(range(PREDICT["n_shards"]))


# Optional exsitu predict flags: only the keys that are set.
PREDICT_OPTIONS = {
    name: PREDICT[name] for name in ("list", "pipe3d_dir") if PREDICT[name] is not None
}


rule predict_shard:
    input:
        predict_inputs,
        f"{PREDICT['model_dir']}/model.json",
    output:
        out_dir=directory("results/predictions/shard_{shard}"),
    log:
        "results/logs/predict/shard_{shard}.log",
    benchmark:
        "results/benchmarks/predict/shard_{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/exsitu.yaml"
    threads: job_threads("predict")
    resources:
        **job_resources("predict"),
    params:
        galaxies=" ".join(shlex.quote(str(path)) for path in PREDICT["inputs"]),
        args=stage_args(
            model_dir=PREDICT["model_dir"],
            n_shards=PREDICT["n_shards"],
            samples=PREDICT["samples"],
            seed=PREDICT["seed"],
            device=config["device"],
            **PREDICT_OPTIONS,
        ),
        write_samples="" if PREDICT["write_samples"] else "--summaries-only",
    shell:
        "exsitu predict {params.galaxies} {params.args} {params.write_samples} --allow-failures > {log} 2>&1"


rule predict_catalogue:
    input:
        shards=expand("results/predictions/shard_{shard}", shard=PREDICT_SHARDS),
    output:
        "results/predictions/catalogue.fits",
        "results/predictions/catalogue.csv",
    log:
        "results/logs/predict_catalogue.log",
    benchmark:
        "results/benchmarks/predict_catalogue.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        args=stage_args(out_dir="results/predictions"),
    shell:
        "exsitu predict_catalogue {params.args} > {log} 2>&1"
