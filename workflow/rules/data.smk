# The data half: simulation on disk -> catalogue -> tagged particles -> maps -> split.


rule simulate_mock:
    output:
        out=directory(MOCK_ROOT),
    log:
        "results/logs/simulate_mock.log",
    benchmark:
        "results/benchmarks/simulate_mock.tsv"
    conda:
        "../../envs/exsitu.yaml"
    threads: job_threads("mock")
    resources:
        **job_resources("mock"),
    params:
        args=stage_args(snapshots=config["simulation"]["snapshots"]),
        settings=settings("mock"),
    shell:
        "exsitu simulate_mock {params.args} --workers {threads} --settings {params.settings:q} > {log} 2>&1"


rule select:
    input:
        simulation_input,
    output:
        out="results/catalog/subhalos.csv",
    log:
        "results/logs/select.log",
    benchmark:
        "results/benchmarks/select.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        args=stage_args(
            basepath=simulation_basepath(), snapshots=config["simulation"]["snapshots"]
        ),
        settings=settings("selection"),
    shell:
        "exsitu select {params.args} --settings {params.settings:q} > {log} 2>&1"


rule tag:
    input:
        simulation_input,
        catalog="results/catalog/subhalos.csv",
    output:
        out="results/particles/shard_{shard}.h5",
    log:
        "results/logs/tag/shard_{shard}.log",
    benchmark:
        "results/benchmarks/tag/shard_{shard}.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        args=stage_args(
            basepath=simulation_basepath(), n_shards=config["maps"]["n_shards"]
        ),
    shell:
        "exsitu tag {params.args} > {log} 2>&1"


rule plan:
    input:
        particles=shard_files("results/particles/shard_{shard}.h5"),
    output:
        out="results/catalog/projections.csv",
    log:
        "results/logs/plan.log",
    benchmark:
        "results/benchmarks/plan.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        args=stage_args(),
        # plan.weighting is the training prior: it changes no line of sight.
        settings=settings("plan", exclude=["plan.weighting"]),
    shell:
        "exsitu plan {params.args} --settings {params.settings:q} > {log} 2>&1"


rule project:
    input:
        particles="results/particles/shard_{shard}.h5",
        plan="results/catalog/projections.csv",
    output:
        out="results/maps/shard_{shard}.h5",
    log:
        "results/logs/project/shard_{shard}.log",
    benchmark:
        "results/benchmarks/project/shard_{shard}.tsv"
    conda:
        "../../envs/exsitu.yaml"
    threads: job_threads("project")
    resources:
        **job_resources("project"),
    params:
        args=stage_args(),
        settings=settings("maps"),
    shell:
        "exsitu project {params.args} --settings {params.settings:q} > {log} 2>&1"


rule observe:
    input:
        maps="results/maps/shard_{shard}.h5",
    output:
        out="results/observed/shard_{shard}.h5",
    log:
        "results/logs/observe/shard_{shard}.log",
    benchmark:
        "results/benchmarks/observe/shard_{shard}.tsv"
    conda:
        "../../envs/exsitu.yaml"
    threads: job_threads("project")
    resources:
        **job_resources("project"),
    params:
        args=stage_args(),
        settings=settings("observe"),
    shell:
        "exsitu observe {params.args} --settings {params.settings:q} > {log} 2>&1"


rule relations:
    input:
        particles=shard_files("results/particles/shard_{shard}.h5"),
        catalog="results/catalog/subhalos.csv",
    output:
        out="results/catalog/relations.json",
    log:
        "results/logs/relations.log",
    benchmark:
        "results/benchmarks/relations.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        args=stage_args(),
    shell:
        "exsitu relations {params.args} > {log} 2>&1"


rule split:
    input:
        maps=shard_files(MAPS),
    output:
        out_table="results/dataset/split.csv",
        out_stats="results/dataset/normalisation.json",
    log:
        "results/logs/split.log",
    benchmark:
        "results/benchmarks/split.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        args=stage_args(),
        settings=settings("split"),
    shell:
        "exsitu split {params.args} --settings {params.settings:q} > {log} 2>&1"
