# The data half: simulation on disk -> catalogue -> tagged particles -> maps -> split.


rule simulate_mock:
    output:
        directory(MOCK_ROOT),
    log:
        "results/logs/simulate_mock.log",
    benchmark:
        "results/benchmarks/simulate_mock.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        mock=settings("mock"),
        snapshots=config["simulation"]["snapshots"],
    shell:
        "python -m exsitu.simulate_mock --out {output} --snapshots {params.snapshots}"
        " --settings {params.mock:q} > {log} 2>&1"


rule select:
    input:
        simulation_input,
    output:
        "results/catalog/subhalos.csv",
    log:
        "results/logs/select.log",
    benchmark:
        "results/benchmarks/select.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        basepath=simulation_basepath(),
        snapshots=config["simulation"]["snapshots"],
        selection=settings("selection"),
    shell:
        "python -m exsitu.select --basepath {params.basepath:q}"
        " --snapshots {params.snapshots} --settings {params.selection:q}"
        " --out {output} > {log} 2>&1"


rule tag:
    input:
        simulation_input,
        catalog="results/catalog/subhalos.csv",
    output:
        "results/particles/shard_{shard}.h5",
    log:
        "results/logs/tag/shard_{shard}.log",
    benchmark:
        "results/benchmarks/tag/shard_{shard}.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        basepath=simulation_basepath(),
        n_shards=config["maps"]["n_shards"],
    shell:
        "python -m exsitu.tag --basepath {params.basepath:q} --catalog {input.catalog}"
        " --shard {wildcards.shard} --n-shards {params.n_shards}"
        " --out {output} > {log} 2>&1"


rule plan:
    input:
        particles=shard_files("results/particles/shard_{shard}.h5"),
    output:
        "results/catalog/projections.csv",
    log:
        "results/logs/plan.log",
    benchmark:
        "results/benchmarks/plan.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        plan=settings("plan"),
    shell:
        "python -m exsitu.plan --particles {input.particles}"
        " --settings {params.plan:q} --out {output} > {log} 2>&1"


rule project:
    input:
        particles="results/particles/shard_{shard}.h5",
        plan="results/catalog/projections.csv",
    output:
        "results/maps/shard_{shard}.h5",
    log:
        "results/logs/project/shard_{shard}.log",
    benchmark:
        "results/benchmarks/project/shard_{shard}.tsv"
    conda:
        "../../envs/exsitu.yaml"
    threads: 1
    resources:
        cpus_per_task=resource("project", "cpus", 1),
        mem_mb=resource("project", "mem_mb", 4000),
    params:
        maps=settings("maps"),
    shell:
        "python -m exsitu.project --particles {input.particles} --plan {input.plan}"
        " --shard {wildcards.shard} --settings {params.maps:q}"
        " --out {output} > {log} 2>&1"


rule split:
    input:
        maps=shard_files("results/maps/shard_{shard}.h5"),
    output:
        table="results/dataset/split.csv",
        stats="results/dataset/normalisation.json",
    log:
        "results/logs/split.log",
    benchmark:
        "results/benchmarks/split.tsv"
    conda:
        "../../envs/exsitu.yaml"
    params:
        split=settings("split"),
    shell:
        "python -m exsitu.split --maps {input.maps} --settings {params.split:q}"
        " --out-table {output.table} --out-stats {output.stats} > {log} 2>&1"
