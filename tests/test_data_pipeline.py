"""The data rules end to end: the data half and the fitted baselines on the tiny mock universe, checked
against the map contract of docs/design.md; a bad basepath fails with one clear message."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml
from conftest import snakemake

from exsitu.fitted_baselines import load_baselines
from exsitu.mock.simulate import simulate

CHANNELS = ["mass", "velocity", "dispersion", "age", "metallicity"]


def test_data_half_and_baselines_on_the_tiny_config_meet_the_contract(workflow_copy: Path) -> None:
    # The fitted baselines need exactly the data half (up to split) plus their own rule.
    snakemake(workflow_copy, "--cores", "2", "results/models/baselines.joblib")
    tiny = yaml.safe_load((workflow_copy / "tests" / "config" / "tiny.yaml").read_text())
    p, n_shards = tiny["maps"]["npix"], tiny["maps"]["n_shards"]
    res = workflow_copy / "results"
    catalog = pd.read_csv(res / "catalog" / "subhalos.csv")
    plan = pd.read_csv(res / "catalog" / "projections.csv")
    split = pd.read_csv(res / "dataset" / "split.csv")
    stats = json.loads((res / "dataset" / "normalisation.json").read_text())

    assert set(catalog["snapshot"]) == {99, 91} and (catalog["stellar_mass"] > 1e10).all()
    assert (
        plan.groupby(["snapshot", "subhalo_id"]).size().between(tiny["plan"]["min_los"], tiny["plan"]["max_los"]).all()
    )
    n_maps = 0
    for k in range(n_shards):
        with h5py.File(res / "maps" / f"shard_{k}.h5") as f:
            n = f["conditions"].shape[0]
            n_maps += n
            assert f["conditions"].shape == (n, 5, p, p) and f["conditions"].dtype == np.float32
            assert f["exsitu"].shape == (n, 1, p, p) and f["exsitu"].dtype == np.float32
            assert f["mask"].shape == (n, 1, p, p) and f["mask"].dtype == bool
            for name in ("subhalo_id", "snapshot", "galaxy_id"):
                assert f[name].shape == (n,) and f[name].dtype == np.int64
            assert f["los"].shape == (n, 3) and f["los"].dtype == np.float32
            assert f["rotation"].shape == (n, 3, 3) and f["rotation"].dtype == np.float64
            assert f["fov_kpc"].dtype == np.float32 and f["exsitu_total"].dtype == np.float32
            assert list(f.attrs["channels"]) == CHANNELS
            assert int(f.attrs["shard"]) == k and int(f.attrs["npix"]) == p
            assert f.attrs["simulation"] == "TNGmock" and len(f.attrs["units"]) == 5 and f.attrs["config_hash"]
            cond, ex, mask = f["conditions"][()], f["exsitu"][()], f["mask"][()]
            np.testing.assert_allclose(f["los"][()], f["rotation"][()][:, 2], atol=1e-7)
            rows = catalog.set_index(["snapshot", "subhalo_id"]).loc[list(zip(f["snapshot"][()], f["subhalo_id"][()]))]
            np.testing.assert_allclose(f["fov_kpc"][()], 4 * rows["rhalf_kpc"], rtol=1e-5)
            np.testing.assert_array_equal(f["galaxy_id"][()], rows["galaxy_id"])
            # Galaxy scalars: the catalogue's mass and 3D radius, the snapshot's redshift (the mock's z = 0.1 at 91).
            np.testing.assert_allclose(f["log_mstar"][()], np.log10(rows["stellar_mass"]), rtol=1e-12)
            np.testing.assert_allclose(f["log_rhalf_kpc"][()], np.log10(rows["rhalf_kpc"]), rtol=1e-12)
            np.testing.assert_allclose(f["redshift"][()], np.where(f["snapshot"][()] == 99, 0.0, 0.1), atol=1e-9)
            in_split = split[split["shard"] == k].sort_values("row")
            for name in ("log_mstar", "log_rhalf_kpc", "redshift"):
                np.testing.assert_allclose(in_split[name], f[name][()], rtol=1e-12, err_msg=name)
        assert np.all(cond[~np.repeat(mask, 5, axis=1)] == 0) and np.all(ex[~mask] == 0)
        assert np.all((ex >= 0) & (ex <= 1)) and np.all(np.isfinite(cond))
        assert mask.mean() > 0.3  # galaxies fill a good part of a 4 r_half field
    assert n_maps == len(plan) == len(split)
    assert (split.groupby("galaxy_id")["subset"].nunique() == 1).all()  # no galaxy leaks across subsets
    assert set(split["subset"]) == {"train", "val", "test"}
    assert stats["channels"] == CHANNELS and len(stats["mean"]) == 5 and all(s > 0 for s in stats["std"])
    assert stats["n_maps"] == split["subset"].value_counts().to_dict()
    assert not list(res.rglob(".*.h5")) and not list(res.rglob(".*.csv"))  # no temporaries left
    baselines = load_baselines(res / "models" / "baselines.joblib")
    assert baselines.scalars == ("log_mstar", "log_rhalf_kpc") and baselines.channels == tuple(CHANNELS)
    assert baselines.n_maps == (split["subset"] == "train").sum() and baselines.weighting == "natural"
    assert (res / "logs" / "fit_baselines.log").exists() and (res / "benchmarks" / "fit_baselines.tsv").exists()


def test_bad_basepath_fails_the_rule_with_one_clear_message(workflow_copy: Path) -> None:
    overlay = workflow_copy / "tng.yaml"
    overlay.write_text("simulation: {source: tng, basepath: /nonexistent/output, snapshots: [99]}\n")
    tiny = workflow_copy / "tests" / "config" / "tiny.yaml"
    proc = snakemake(
        workflow_copy, "--cores", "1", "--until", "select", "--configfile", str(tiny), str(overlay), check=False
    )
    assert proc.returncode != 0
    log = (workflow_copy / "results" / "logs" / "select.log").read_text()
    assert "error: simulation basepath /nonexistent/output does not exist" in log
    assert "Traceback" not in log
    assert not (workflow_copy / "results" / "catalog" / "subhalos.csv").exists()


def test_tng_source_reads_a_tng_layout_from_the_basepath(workflow_copy: Path, tmp_path: Path) -> None:
    simulate(tmp_path / "TNG100-1", [99, 91], 6, seed=2)
    overlay = workflow_copy / "tng.yaml"
    overlay.write_text(
        f"simulation: {{source: tng, basepath: {tmp_path / 'TNG100-1' / 'output'}, snapshots: [99, 91]}}\n"
    )
    tiny = workflow_copy / "tests" / "config" / "tiny.yaml"
    snakemake(workflow_copy, "--cores", "2", "--until", "plan", "--configfile", str(tiny), str(overlay))
    res = workflow_copy / "results"
    assert not (res / "mock").exists()  # nothing simulated: the data came from the basepath
    assert (pd.read_csv(res / "catalog" / "subhalos.csv")["snapshot"] == 99).sum() == 6
    with h5py.File(res / "particles" / "shard_0.h5") as f:
        assert f.attrs["simulation"] == "TNG100-1"
    assert len(pd.read_csv(res / "catalog" / "projections.csv")) > 0
