# Helpers shared by the rules: where the simulation lives, the shard list, and `stage_args`,
# which turns a rule's named input and output files into its stage's command-line flags, so a
# flag is spelled once (as the file's name in the rule) and the stage's argparse checks it.
import json
import shlex

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
OBSERVED = config["observe"]["enabled"]
# The maps the model stages read: ideal projections, or their mock IFU observations.
MAPS = (
    "results/observed/shard_{shard}.h5" if OBSERVED else "results/maps/shard_{shard}.h5"
)
# Every config section that shapes a trained model (its model.json records their hash).
MODEL_SECTIONS = (
    "simulation", "mock", "selection", "plan", "maps", "observe", "split", "conditions", "cvae", "flow",
    "recalibrate", "train",
)  # fmt: skip


def simulation_basepath():
    """TNG 'output' directory the data stages read: the mock's or the user's."""
    if config["simulation"]["source"] == "mock":
        return f"{MOCK_ROOT}/output"
    return config["simulation"]["basepath"]


def simulation_input(wildcards):
    """The mock universe is a rule output; real TNG data is outside the DAG."""
    return [MOCK_ROOT] if config["simulation"]["source"] == "mock" else []


def settings(*sections, exclude=()):
    """JSON {section: config[section]} of the config sections a stage reads (its --settings).

    Passed through params:, so changing a key reruns exactly the stages that read it. A dotted
    name ("plan.weighting") passes one key of a section; ``exclude`` drops dotted keys.
    """
    out = {}
    for name in sections:
        section, _, key = name.partition(".")
        value = config[section] if not key else {key: config[section][key]}
        out[section] = {**out.get(section, {}), **value}
    for name in exclude:
        section, _, key = name.partition(".")
        out[section] = {k: v for k, v in out[section].items() if k != key}
    return json.dumps(out, sort_keys=True)


def cvae_keys_baseline_ignores():
    """The cvae keys the deterministic baseline does not read (dotted, for ``settings(exclude=)``): the KL
    weights (its loss has no latent) and the optimiser keys its own ``baseline`` section sets.
    """
    overridden = [key for key, value in config["baseline"].items() if value is not None]
    return [
        "cvae.beta",
        "cvae.free_bits",
        "cvae.kl_warmup_epochs",
        *(f"cvae.{key}" for key in overridden),
    ]


def _flag(name, value):
    values = value if isinstance(value, list) else [value]
    return " ".join(
        [f"--{name.replace('_', '-')}", *(shlex.quote(str(v)) for v in values)]
    )


def stage_args(**extra):
    """params: function giving the stage's flags: named inputs, named outputs, wildcards, ``extra``."""

    def render(wildcards, input, output):
        named = [*input.items(), *output.items(), *wildcards.items(), *extra.items()]
        return " ".join(_flag(name, value) for name, value in named)

    return render


def shard_files(pattern):
    return expand(pattern, shard=SHARDS)


# Snakemake's names for the keys of a config resources.<group> section (the SLURM executor turns
# gpu into --gpus, cpus_per_task into --cpus-per-task, mem_mb into --mem and runtime into -t).
RESOURCE_NAMES = {
    "gpus": "gpu",
    "cpus": "cpus_per_task",
    "mem_mb": "mem_mb",
    "runtime": "runtime",
}


def job_resources(group):
    """resources: of a rule from config resources.<group> (validate() filled in the schema's defaults).

    A section without `gpus` (a CPU-only rule, e.g. resources.baselines) asks for no GPU.
    """
    return {
        RESOURCE_NAMES[key]: value for key, value in config["resources"][group].items()
    }


def job_threads(group):
    """threads: of a rule, the CPUs it asks for (resources.<group>.cpus): Snakemake sets
    OMP_NUM_THREADS to it, so torch uses what the scheduler gave the job."""
    return config["resources"][group]["cpus"]


def side_by_side_threads(group):
    """threads: of train_cvae, train_baseline and predict_baselines, which do not wait for the cVAE's
    training. On a cluster, the CPUs they ask for (resources.<group>.cpus); on this machine at most
    half of --cores, so they run beside train_cvae. Torch gains ~1.6x from a second thread, so on 2
    cores the cVAE and the U-net take the cVAE's one-thread time, not the sum of both at two threads,
    and the baselines' test maps are predicted meanwhile (README, Measured results: "Time").
    """
    cpus = job_threads(group)
    # No --cores (snakemake --report, --list-rules, ...): nothing runs, the CPUs asked for stand.
    cores = workflow.resource_settings.cores
    if not workflow.local_exec or cores is None:
        return cpus
    return max(1, min(cpus, cores // 2))


def predict_inputs(wildcards):
    """The galaxies' FITS files and directories (and the list file); an error when none is configured."""
    predict = config["predict"]
    if not predict["inputs"] and not predict["list"]:
        raise WorkflowError(
            "the predict_catalogue target needs galaxies: set config key 'predict.inputs' (FITS files or "
            "directories of observed galaxies) or 'predict.list' (a list file, see exsitu.survey), e.g. "
            "in an overlay given with --configfile"
        )
    return [*predict["inputs"], *([predict["list"]] if predict["list"] else [])]
