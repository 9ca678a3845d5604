# Helpers shared by the rules: where the simulation lives, the shard list and the
# config subsets each stage receives (passed through params: so that a change to one
# setting reruns only the stages that read it).
import json

from snakemake.exceptions import WorkflowError

if config["simulation"]["source"] == "tng" and not config["simulation"].get("basepath"):
    # Fail before any job: without it every data stage would fail later with a worse message.
    raise WorkflowError(
        "config key 'simulation.basepath' is not set: with simulation.source 'tng' it must be "
        "the TNG 'output' directory (the one holding snapdir_099/ and groups_099/); set it in "
        "your config file or with --config 'simulation={source: tng, basepath: <dir>}'"
    )

MOCK_ROOT = "results/mock/TNGmock"
SHARDS = list(range(config["maps"]["n_shards"]))


def simulation_basepath():
    """TNG 'output' directory the data stages read: the mock's or the user's."""
    if config["simulation"]["source"] == "mock":
        return f"{MOCK_ROOT}/output"
    return config["simulation"]["basepath"]


def simulation_input(wildcards):
    """The mock universe is a rule output; real TNG data is outside the DAG."""
    return [MOCK_ROOT] if config["simulation"]["source"] == "mock" else []


def settings(*sections, **extra):
    """JSON of the named config sections (merged) plus extra keys, for --settings."""
    merged = {}
    for section in sections:
        merged.update(config[section])
    merged.update(extra)
    return json.dumps(merged, sort_keys=True)


def shard_files(pattern):
    return expand(pattern, shard=SHARDS)


def resource(group, key, default):
    return config.get("resources", {}).get(group, {}).get(key, default)
