"""The SLURM profile on a real one-node SLURM cluster (scripts/slurm-cluster.sh: munged,
slurmctld and slurmd on localhost, with a fake GPU).

`snakemake --profile slurm` runs the tiny pipeline from the workflow directory, so the
profile name resolves through the `slurm` link exactly as it does for users. Every job
except the target rule `all` must be an sbatch job, and the run must match a local run
(the `tiny_run` fixture):

* data products are deterministic, so they must be identical: the catalogue, the
  projection plan, the split table and normalisation statistics byte for byte, and every
  dataset of every map shard array-equal;
* training is seeded and runs with the same thread count in both (the test overlay gives
  train_cvae and train_baseline the 1 CPU each that they use side by side locally on
  `--cores 2`, and the flow the 2 CPUs it uses there), so the trained weights must be
  identical too, tensor for tensor, with the same epochs in the histories;
* evaluation is compared in structure (the same metric keys) and a report must exist:
  its numbers are sample averages, and we do not want this test to fail on a change of
  sampling batch size between runs.

Without root, the Debian packages or a working cluster the test skips and says why;
under CI (CI=true) it must run, so a cluster that does not start fails the test.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, TINY, copy_workflow, snakemake

CLUSTER_SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# The test node has the CI machine's 2 CPUs: ask for what fits (the defaults in
# config.yaml are sized for a real cluster and could never be scheduled here).
FITS_THE_TEST_NODE = """\
resources:
  project: {cpus: 1, mem_mb: 1000}
  train: {gpus: 1, cpus: 1, mem_mb: 2000, runtime: 30}
  flow: {gpus: 1, cpus: 2, mem_mb: 2000, runtime: 30}
  recalibrate: {gpus: 1, cpus: 2, mem_mb: 2000, runtime: 30}
  evaluate: {gpus: 1, cpus: 2, mem_mb: 2000, runtime: 30}
  baselines: {cpus: 1, mem_mb: 2000, runtime: 30}
"""
IDENTICAL = [
    "results/catalog/subhalos.csv",
    "results/catalog/projections.csv",
    "results/dataset/split.csv",
]


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true but the SLURM test cluster is unavailable: {reason}")
    pytest.skip(f"SLURM test cluster unavailable: {reason}")


@pytest.fixture(scope="module")
def cluster() -> None:
    if os.geteuid() != 0:
        _unavailable("scripts/slurm-cluster.sh must run as root to start munged/slurmctld/slurmd")
    missing = [tool for tool in ("slurmctld", "slurmd", "munged", "sbatch", "squeue") if not shutil.which(tool)]
    if missing:
        _unavailable(f"not installed: {missing} (scripts/install-system-deps.sh installs slurm-wlm and munge)")
    proc = subprocess.run([str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        _unavailable(f"{CLUSTER_SCRIPT.name} start failed:\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm") / "wf")
    os.symlink("profiles/slurm", workdir / "slurm")
    overlay = workdir / "slurm-test.yaml"
    overlay.write_text(FITS_THE_TEST_NODE)
    proc = snakemake(
        workdir,
        "--cores",
        "2",
        "--profile",
        "slurm",
        "--configfile",
        str(TINY),
        str(overlay),
        # No accounting storage on the test cluster: sacct cannot report job states.
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        timeout=1500,
    )
    return workdir, proc


def test_every_job_went_through_sbatch(slurm_run):
    workdir, proc = slurm_run
    output = proc.stdout + proc.stderr
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    finished = re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", output)
    assert finished, output
    remote = [rule for rule in finished if rule != "all"]
    assert len(submitted) == len(remote), f"{len(submitted)} sbatch jobs for {len(remote)} rule jobs:\n{output}"
    assert {"train_cvae", "train_flow", "project", "tag", "report"} <= set(remote)
    assert not re.search(r"^localrule (?!all:)", output, flags=re.M), "only `all` may run locally"

    # slurmctld itself confirms each job ran and completed (MinJobAge keeps finished jobs).
    states = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T"], capture_output=True, text=True, check=True
    ).stdout
    state_of = dict(line.split("|") for line in states.split())
    for slurm_id in submitted.values():
        assert state_of.get(slurm_id) == "COMPLETED", f"SLURM job {slurm_id}: {state_of.get(slurm_id)}"


@pytest.mark.parametrize("rule", ["train_cvae", "train_flow", "train_baseline", "recalibrate", "evaluate"])
def test_gpu_jobs_were_given_the_gpu(slurm_run, rule):
    workdir, _ = slurm_run
    logs = sorted((workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}").glob("*.log"))
    assert logs, f"no SLURM log for {rule}"
    job_id = logs[-1].stem
    info = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True).stdout
    assert "gpu" in info, info


def _h5_datasets(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def test_data_products_are_identical_to_a_local_run(slurm_run, tiny_run):
    workdir, _ = slurm_run
    for rel in IDENTICAL:
        assert filecmp.cmp(workdir / rel, tiny_run / rel, shallow=False), f"{rel} differs from the local run"
    local_stats = json.loads((tiny_run / "results/dataset/normalisation.json").read_text())
    assert json.loads((workdir / "results/dataset/normalisation.json").read_text()) == local_stats
    shards = sorted((tiny_run / "results" / "maps").glob("shard_*.h5"))
    assert shards
    for shard in shards:
        local, remote = _h5_datasets(shard), _h5_datasets(workdir / "results" / "maps" / shard.name)
        assert local.keys() == remote.keys(), shard.name
        for name, array in local.items():
            np.testing.assert_array_equal(remote[name], array, err_msg=f"{shard.name}:{name}")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    flat: dict[str, torch.Tensor] = {}

    def walk(value, prefix):
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, f"{prefix}.{key}" if prefix else str(key))

    walk(state, "")
    return flat


def _key_paths(value, prefix=""):
    if isinstance(value, dict):
        return {p for key, sub in value.items() for p in _key_paths(sub, f"{prefix}.{key}" if prefix else key)}
    return {prefix}


def test_models_are_identical_and_evaluation_matches_in_structure(slurm_run, tiny_run):
    workdir, _ = slurm_run
    for model in ("cvae", "flow", "baseline"):
        # Identical weights need the same CPU thread count in both runs: check that first, so a
        # difference in the setup is not reported as a difference in training.
        threads = [
            re.findall(r"with (\d+) CPU threads", (run / f"results/logs/train_{model}.log").read_text())
            for run in (workdir, tiny_run)
        ]
        assert threads[0] and threads[0] == threads[1], f"{model}: CPU threads SLURM {threads[0]}, local {threads[1]}"
        remote = _tensors(workdir / f"results/models/{model}.pt")
        local = _tensors(tiny_run / f"results/models/{model}.pt")
        assert remote and remote.keys() == local.keys(), model
        for name, tensor in local.items():
            assert torch.equal(remote[name], tensor), f"{model}: {name} differs from the local run"
        history = pd.read_csv(workdir / f"results/models/{model}_history.csv")
        local_history = pd.read_csv(tiny_run / f"results/models/{model}_history.csv")
        assert list(history.columns) == list(local_history.columns) and len(history) == len(local_history), model
    remote_metrics = json.loads((workdir / "results/evaluation/metrics.json").read_text())
    local_metrics = json.loads((tiny_run / "results/evaluation/metrics.json").read_text())
    assert _key_paths(remote_metrics) == _key_paths(local_metrics)
    assert (workdir / "results/report.html").stat().st_size > 0
