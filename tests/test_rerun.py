"""Rerunning single stages: after a real tiny run, changing one setting reruns exactly
the stages that read it (each rule gets its config through params:) and what depends
on their outputs, never the expensive data stages upstream."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import OBSERVED, TINY, snakemake

RECALIBRATION_AND_AFTER = {"recalibrate", "model_card", "evaluate", "report", "all"}
MODEL_AND_AFTER = {"train_flow", *RECALIBRATION_AND_AFTER}
FITS_AND_AFTER = {"train_cvae", "train_baseline", "fit_baselines", "predict_baselines", *MODEL_AND_AFTER}
TRAINING_AND_AFTER = {"split", *FITS_AND_AFTER}
PROJECT_AND_AFTER = {"project", *TRAINING_AND_AFTER}


@pytest.fixture
def finished_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished tiny run, with Snakemake's metadata and file times."""
    dest = tmp_path / "wf"
    shutil.copytree(tiny_run, dest, symlinks=True)
    return dest


def _with_overlay(workdir: Path, change: dict, *args: str, base: tuple[Path, ...] = (TINY,)):
    """Run with the ``base`` overlays plus ``change`` (one --configfile: the last flag wins)."""
    config: dict = {}
    for path in base:
        for section, values in yaml.safe_load(path.read_text()).items():
            config.setdefault(section, {}).update(values)
    for section, values in change.items():
        config.setdefault(section, {}).update(values)
    overlay = workdir / "change.yaml"
    overlay.write_text(yaml.safe_dump(config))
    return snakemake(workdir, "--configfile", str(overlay), *args)


def _planned_rules(dry_run_output: str) -> set[str]:
    if "Nothing to be done" in dry_run_output:
        return set()
    table = dry_run_output[dry_run_output.index("Job stats:") :].split("total")[0]
    return set(re.findall(r"^(\w+)\s+\d+\s*$", table, flags=re.M)) - {"job"}


def _reasons(dry_run_output: str) -> dict[str, str]:
    """Rule name -> the `reason:` Snakemake gives for running it."""
    return dict(re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    reason: (.*)$", dry_run_output, flags=re.M))


def test_unchanged_config_has_nothing_to_do(finished_copy):
    proc = snakemake(finished_copy, "--dry-run")
    assert _planned_rules(proc.stdout + proc.stderr) == set(), proc.stdout


def test_flow_hyperparameter_reruns_only_flow_evaluate_report(finished_copy):
    change = {"flow": {"num_layers": 3}}
    proc = _with_overlay(finished_copy, change, "--dry-run")
    assert _planned_rules(proc.stdout + proc.stderr) == MODEL_AND_AFTER, proc.stdout

    # Only train_flow is triggered by its own params; the rest by its updated output.
    # (`--list-changes params` cannot tell: Snakemake 9.27 lists the last output of every job.)
    reasons = _reasons(proc.stdout)
    assert "Params have changed" in reasons["train_flow"] and '"num_layers": 3' in reasons["train_flow"]
    assert reasons["evaluate"].startswith("Input files updated by another job"), reasons

    # Run it for real: upstream files stay untouched, the rerun completes cleanly.
    upstream = ["results/catalog/subhalos.csv", "results/dataset/split.csv", "results/models/cvae.pt"]
    before = {rel: (finished_copy / rel).stat().st_mtime_ns for rel in upstream}
    _with_overlay(finished_copy, change, "--cores", "2")
    assert {rel: (finished_copy / rel).stat().st_mtime_ns for rel in upstream} == before
    assert _planned_rules(_with_overlay(finished_copy, change, "--dry-run").stdout) == set()


def test_recalibration_setting_reruns_neither_training_nor_data(finished_copy):
    proc = _with_overlay(finished_copy, {"recalibrate": {"n_samples": 16}}, "--dry-run")
    assert _planned_rules(proc.stdout + proc.stderr) == RECALIBRATION_AND_AFTER, proc.stdout
    assert "Params have changed" in _reasons(proc.stdout)["recalibrate"]


def test_cvae_only_settings_retrain_the_cvae_never_the_baselines(finished_copy):
    """cvae.free_bits and cvae.beta weigh the latent's KL, which the deterministic U-net does not have; the
    tiny config sets baseline.epochs, so cvae.epochs is not the U-net's either."""
    proc = _with_overlay(finished_copy, {"cvae": {"free_bits": 1.0, "beta": 0.5, "epochs": 3}}, "--dry-run")
    assert _planned_rules(proc.stdout + proc.stderr) == {"train_cvae", *MODEL_AND_AFTER}, proc.stdout
    assert "Params have changed" in _reasons(proc.stdout)["train_cvae"]
    # ... while a cvae key the baseline inherits (baseline.lr is null) retrains it.
    proc = _with_overlay(finished_copy, {"cvae": {"lr": 5e-4}}, "--dry-run")
    assert "Params have changed" in _reasons(proc.stdout)["train_baseline"]


def test_training_prior_reruns_every_fit_and_after_but_never_the_plan(finished_copy):
    proc = _with_overlay(finished_copy, {"plan": {"weighting": "balanced"}}, "--dry-run")
    planned = _planned_rules(proc.stdout + proc.stderr)
    assert planned == FITS_AND_AFTER, proc.stdout
    reasons = _reasons(proc.stdout)
    # The fits that read the maps see the changed prior themselves; train_flow reruns after the new cVAE
    # (Snakemake then gives that as its reason).
    for rule in ("fit_baselines", "train_cvae", "train_baseline"):
        assert "Params have changed" in reasons[rule], (rule, reasons[rule])


def test_npix_reruns_projection_and_after_but_never_the_data_stages(finished_copy):
    proc = _with_overlay(finished_copy, {"maps": {"npix": 24}}, "--dry-run")
    planned = _planned_rules(proc.stdout + proc.stderr)
    assert planned == PROJECT_AND_AFTER, proc.stdout
    assert not planned & {"simulate_mock", "select", "tag", "plan"}
    assert "Params have changed" in _reasons(proc.stdout)["project"]


def test_forcerun_one_stage(finished_copy):
    proc = snakemake(finished_copy, "--dry-run", "--forcerun", "train_flow")
    assert _planned_rules(proc.stdout + proc.stderr) == MODEL_AND_AFTER, proc.stdout


def test_observe_setting_reruns_observe_and_after_never_project(tiny_observed_run: Path, tmp_path: Path):
    workdir = tmp_path / "observed"
    shutil.copytree(tiny_observed_run, workdir, symlinks=True)
    proc = _with_overlay(workdir, {"observe": {"psf_fwhm_arcsec": 1.5}}, "--dry-run", base=(TINY, OBSERVED))
    planned = _planned_rules(proc.stdout + proc.stderr)
    assert planned == {"observe", *TRAINING_AND_AFTER}, proc.stdout
    assert "Params have changed" in _reasons(proc.stdout)["observe"]
