# The model half: cVAE, the conditional flow on its latent space, the deterministic
# baseline and the calibrated evaluation on the test set.


DATASET = dict(
    maps=shard_files(MAPS),
    split="results/dataset/split.csv",
    stats="results/dataset/normalisation.json",
)
# samples.h5 only when evaluate.n_saved_samples > 0 (0 writes no file).
SAMPLES_OUTPUT = (
    {"samples": "results/evaluation/samples.h5"}
    if config["evaluate"]["n_saved_samples"] > 0
    else {}
)


rule train_cvae:
    input:
        **DATASET,
    output:
        model="results/models/cvae.pt",
        history="results/models/cvae_history.csv",
    log:
        "results/logs/train_cvae.log",
    benchmark:
        "results/benchmarks/train_cvae.tsv"
    # The longest path of the DAG (cVAE, flow, recalibration, evaluation): started first when cores are
    # short, so the U-net and the baselines fill the cores beside it, not the other way round.
    priority: 1
    conda:
        "../../envs/exsitu.yaml"
    threads: side_by_side_threads("train")
    resources:
        **job_resources("train"),
    params:
        args=stage_args(
            device=config["device"], checkpoint="results/checkpoints/cvae.pt"
        ),
        settings=settings("cvae", "conditions", "train", "plan.weighting"),
    shell:
        "exsitu train_cvae {params.args} --settings {params.settings:q} > {log} 2>&1"


rule train_flow:
    input:
        **DATASET,
        cvae="results/models/cvae.pt",
    output:
        model="results/models/flow.pt",
        history="results/models/flow_history.csv",
    log:
        "results/logs/train_flow.log",
    benchmark:
        "results/benchmarks/train_flow.tsv"
    priority: 1
    conda:
        "../../envs/exsitu.yaml"
    threads: job_threads("flow")
    resources:
        **job_resources("flow"),
    params:
        args=stage_args(
            device=config["device"], checkpoint="results/checkpoints/flow.pt"
        ),
        settings=settings("flow", "conditions", "plan.weighting"),
    shell:
        "exsitu train_flow {params.args} --settings {params.settings:q} > {log} 2>&1"


rule recalibrate:
    input:
        **DATASET,
        cvae="results/models/cvae.pt",
        flow="results/models/flow.pt",
    output:
        out="results/models/noise_scale.json",
    log:
        "results/logs/recalibrate.log",
    benchmark:
        "results/benchmarks/recalibrate.tsv"
    priority: 1
    conda:
        "../../envs/exsitu.yaml"
    threads: job_threads("recalibrate")
    resources:
        **job_resources("recalibrate"),
    params:
        args=stage_args(device=config["device"]),
        settings=settings("recalibrate", "conditions"),
    shell:
        "exsitu recalibrate {params.args} --settings {params.settings:q} > {log} 2>&1"


rule train_baseline:
    input:
        **DATASET,
    output:
        model="results/models/baseline.pt",
        history="results/models/baseline_history.csv",
    log:
        "results/logs/train_baseline.log",
    benchmark:
        "results/benchmarks/train_baseline.tsv"
    conda:
        "../../envs/exsitu.yaml"
    threads: side_by_side_threads("train")
    resources:
        **job_resources("train"),
    params:
        args=stage_args(
            device=config["device"], checkpoint="results/checkpoints/baseline.pt"
        ),
        # The deterministic baseline shares the cVAE's network; baseline: keys override its optimiser.
        settings=settings(
            "cvae",
            "baseline",
            "conditions",
            "train",
            "plan.weighting",
            exclude=cvae_keys_baseline_ignores(),
        ),
    shell:
        "exsitu train_baseline {params.args} --settings {params.settings:q} > {log} 2>&1"


rule evaluate:
    input:
        **DATASET,
        cvae="results/models/cvae.pt",
        flow="results/models/flow.pt",
        baseline_maps="results/evaluation/baseline_maps.h5",
        noise_scale="results/models/noise_scale.json",
    output:
        **SAMPLES_OUTPUT,
        metrics=report(
            "results/evaluation/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
        summaries="results/evaluation/summaries.h5",
    log:
        "results/logs/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate.tsv"
    conda:
        "../../envs/exsitu.yaml"
    threads: job_threads("evaluate")
    resources:
        **job_resources("evaluate"),
    params:
        args=stage_args(device=config["device"]),
        # maps: fov_rhalf converts pixel radius to r / rhalf for the radial-profile baseline.
        settings=settings("evaluate", "maps", "conditions", "plan.weighting"),
    shell:
        "exsitu evaluate {params.args} --settings {params.settings:q} > {log} 2>&1"


rule model_card:
    input:
        cvae="results/models/cvae.pt",
        flow="results/models/flow.pt",
        stats="results/dataset/normalisation.json",
        noise_scale="results/models/noise_scale.json",
    output:
        out="results/models/model.json",
    log:
        "results/logs/model_card.log",
    benchmark:
        "results/benchmarks/model_card.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        args=stage_args(),
        settings=settings(*MODEL_SECTIONS),
    shell:
        "exsitu model_card {params.args} --settings {params.settings:q} > {log} 2>&1"
