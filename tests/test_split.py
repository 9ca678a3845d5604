"""Grouped split (no galaxy in two subsets) and training-only normalisation, on real map files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from exsitu.io import InputError
from exsitu.splitting import assign_subsets
from exsitu.stages.split import main as split_main

SETTINGS = '{"split": {"train": 0.75, "val": 0.1, "test": 0.15, "seed": 0}}'


def write_shard(
    path: Path, shard: int, galaxy_id: np.ndarray, rng: np.random.Generator, p: int = 6, scalars: bool = True
) -> None:
    n = galaxy_id.size
    mask = rng.uniform(size=(n, 1, p, p)) < 0.6
    cond = (rng.normal(size=(n, 5, p, p)) + np.arange(5)[None, :, None, None]).astype(np.float32) * mask
    with h5py.File(path, "w") as f:
        f["conditions"], f["mask"] = cond, mask
        f["exsitu"] = (rng.uniform(size=(n, 1, p, p)) * mask).astype(np.float32)
        f["subhalo_id"], f["snapshot"], f["galaxy_id"] = galaxy_id % 1000, np.full(n, 99), galaxy_id
        f["exsitu_total"], f["fov_kpc"] = rng.uniform(size=n).astype(np.float32), np.full(n, 20.0, np.float32)
        if scalars:
            f["log_mstar"], f["log_rhalf_kpc"] = 10 + galaxy_id / 40, np.full(n, np.log10(5.0))
            f["redshift"] = np.where(galaxy_id % 2, 0.1, 0.0)
        f.attrs["shard"] = shard


@pytest.fixture
def shards(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for k in range(3):
        # every galaxy has several maps (lines of sight, snapshots), some in two shards
        gal = np.repeat(rng.integers(0, 40, 25), rng.integers(1, 4, 25))
        paths.append(str(tmp_path / f"maps_{k}.h5"))
        write_shard(Path(paths[-1]), k, gal, rng)
    return paths


def run_split(paths: list[str], out: Path, settings: str = SETTINGS) -> tuple[pd.DataFrame, dict]:
    split_main(
        [
            "--maps",
            *paths,
            "--settings",
            settings,
            "--out-table",
            str(out / "split.csv"),
            "--out-stats",
            str(out / "norm.json"),
        ]
    )
    return pd.read_csv(out / "split.csv"), json.loads((out / "norm.json").read_text())


def test_no_galaxy_in_two_subsets_and_shares_are_close(shards, tmp_path: Path) -> None:
    table, stats = run_split(shards, tmp_path)
    assert list(table.columns) == [
        "shard",
        "row",
        "subhalo_id",
        "snapshot",
        "galaxy_id",
        "exsitu_total",
        "fov_kpc",
        "log_mstar",
        "log_rhalf_kpc",
        "redshift",
        "subset",
    ]
    # The galaxy scalars travel from the shards into split.csv unchanged.
    np.testing.assert_allclose(table["log_mstar"], 10 + table["galaxy_id"] / 40)
    np.testing.assert_allclose(table["redshift"], np.where(table["galaxy_id"] % 2, 0.1, 0.0))
    assert (table.groupby("galaxy_id")["subset"].nunique() == 1).all()
    share = table["subset"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.75, abs=0.12) and share["test"] == pytest.approx(0.15, abs=0.1)
    assert stats["n_maps"] == table["subset"].value_counts().to_dict()
    again, _ = run_split(shards, tmp_path)
    pd.testing.assert_frame_equal(table, again)
    other, _ = run_split(shards, tmp_path, SETTINGS.replace('"seed": 0', '"seed": 5'))
    assert not other["subset"].equals(table["subset"])


def test_statistics_use_training_galaxy_pixels_only(shards, tmp_path: Path) -> None:
    table, stats = run_split(shards, tmp_path)
    pix = []
    for path in shards:
        with h5py.File(path) as f:
            rows = table[(table["shard"] == f.attrs["shard"]) & (table["subset"] == "train")]["row"].to_numpy()
            c, m = f["conditions"][()][rows].astype(np.float64), f["mask"][()][rows, 0]
            pix.append(c.transpose(1, 0, 2, 3)[:, m])
    pix = np.concatenate(pix, axis=1)
    assert stats["channels"] == ["mass", "velocity", "dispersion", "age", "metallicity"]
    np.testing.assert_allclose(stats["mean"], pix.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(stats["std"], pix.std(axis=1), rtol=1e-5)


def test_assign_subsets_groups_and_covers_all() -> None:
    gal = np.repeat(np.arange(100), 3)
    sub = assign_subsets(gal, {"train": 0.75, "val": 0.1, "test": 0.15}, 1)
    assert set(sub) == {"train", "val", "test"}
    assert all(len(set(sub[gal == g])) == 1 for g in range(100))


def test_empty_subset_is_named(tmp_path: Path) -> None:
    path = tmp_path / "maps_0.h5"
    write_shard(path, 0, np.array([1, 1, 2, 2]), np.random.default_rng(1))
    with pytest.raises(InputError, match="'(val|test)' subset is empty"):
        run_split([str(path)], tmp_path)
    assert not (tmp_path / "split.csv").exists() and not (tmp_path / "norm.json").exists()


def test_shares_must_sum_to_one(shards, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="sum to 1"):
        run_split(shards, tmp_path, '{"split": {"train": 0.8, "val": 0.1, "test": 0.15, "seed": 0}}')


def test_shards_without_galaxy_scalars_name_them_and_the_stage_to_rerun(tmp_path: Path) -> None:
    path = tmp_path / "maps_0.h5"
    write_shard(path, 0, np.arange(20), np.random.default_rng(1), scalars=False)
    with pytest.raises(InputError, match=r"galaxy scalar datasets \['log_mstar', 'log_rhalf_kpc', 'redshift'\].*rerun"):
        run_split([str(path)], tmp_path)
    assert not (tmp_path / "split.csv").exists()
