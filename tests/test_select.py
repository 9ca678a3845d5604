"""Subhalo selection on a real mock TNG tree: cuts, units, galaxy ids from SubLink, errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import illustris_python as il
import pandas as pd
import pytest

from exsitu.io import InputError
from exsitu.mock.simulate import simulate
from exsitu.stages.select import main as select_main

SETTINGS = '{"selection": {"min_stellar_mass": 1e10, "mass_field": "SubhaloMassType"}}'


@pytest.fixture(scope="module")
def mock(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mock") / "TNGmock"
    simulate(root, [99, 91], 12, seed=3)
    return root


def run_select(base: Path, out: Path, settings: str = SETTINGS) -> pd.DataFrame:
    select_main(["--basepath", str(base), "--snapshots", "99", "91", "--settings", settings, "--out", str(out)])
    return pd.read_csv(out)


def test_selection_cuts_units_and_galaxy_ids(mock: Path, tmp_path: Path) -> None:
    base = mock / "output"
    cat = run_select(base, tmp_path / "subhalos.csv")
    for col in ("snapshot", "subhalo_id", "galaxy_id", "stellar_mass", "rhalf_kpc", "is_central"):
        assert col in cat.columns
    assert (cat["stellar_mass"] > 1e10).all()
    assert (cat["snapshot"] == 99).sum() == 12
    subs = il.groupcat.loadSubhalos(str(base), 99, fields=["SubhaloFlag", "SubhaloHalfmassRadType", "SubhaloMassType"])
    assert (subs["SubhaloFlag"][cat.loc[cat.snapshot == 99, "subhalo_id"]] == 1).all()
    h = 0.6774
    row = cat[cat.snapshot == 91].iloc[0]
    subs91 = il.groupcat.loadSubhalos(str(base), 91, fields=["SubhaloHalfmassRadType", "SubhaloMassType"])
    sid = int(row["subhalo_id"])
    assert row["rhalf_kpc"] == pytest.approx(subs91["SubhaloHalfmassRadType"][sid, 4] / 1.1 / h, rel=1e-5)
    assert row["stellar_mass"] == pytest.approx(subs91["SubhaloMassType"][sid, 4] * 1e10 / h, rel=1e-5)
    # a z=0.1 galaxy shares galaxy_id with its z=0 descendant (SubLink main branch)
    tree = il.sublink.loadTree(str(base), 91, sid, fields=["DescendantID", "RootDescendantID"], onlyMDB=True)
    assert row["galaxy_id"] == tree["RootDescendantID"][0]
    z0 = cat[(cat.snapshot == 99) & (cat.galaxy_id == row["galaxy_id"])]
    assert len(z0) == 1
    assert cat.groupby("snapshot")["galaxy_id"].nunique().to_dict() == cat.groupby("snapshot").size().to_dict()
    assert cat["is_central"].any() and not cat["is_central"].all()


def test_mass_field_is_configurable(mock: Path, tmp_path: Path) -> None:
    total = run_select(mock / "output", tmp_path / "a.csv")
    in_radius = '{"selection": {"min_stellar_mass": 1e10, "mass_field": "SubhaloMassInRadType"}}'
    in_rad = run_select(mock / "output", tmp_path / "b.csv", in_radius)
    assert len(in_rad) <= len(total)
    assert (
        in_rad["stellar_mass"]
        < total.set_index(["snapshot", "subhalo_id"])
        .loc[list(zip(in_rad.snapshot, in_rad.subhalo_id)), "stellar_mass"]
        .to_numpy()
    ).all()


def test_without_trees_each_subhalo_is_its_own_galaxy(mock: Path, tmp_path: Path, caplog) -> None:
    copy = tmp_path / "TNGmock"
    shutil.copytree(mock, copy)
    shutil.rmtree(copy / "postprocessing" / "trees")
    with caplog.at_level(logging.WARNING, logger="exsitu"):
        cat = run_select(copy / "output", tmp_path / "c.csv")
    assert "no SubLink tree" in caplog.text
    assert cat["galaxy_id"].is_unique


def test_empty_selection_fails_and_writes_nothing(mock: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub.csv"
    with pytest.raises(InputError, match="empty selection"):
        run_select(mock / "output", out, '{"selection": {"min_stellar_mass": 1e15, "mass_field": "SubhaloMassType"}}')
    assert not out.exists() and not list(tmp_path.iterdir())


def test_missing_basepath_or_snapshot_is_named(mock: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        run_select(tmp_path / "nowhere", tmp_path / "x.csv")
    with pytest.raises(InputError, match="snapshot 98"):
        select_main(
            [
                "--basepath",
                str(mock / "output"),
                "--snapshots",
                "98",
                "--settings",
                SETTINGS,
                "--out",
                str(tmp_path / "y.csv"),
            ]
        )
    with pytest.raises(InputError, match="config key 'selection.mass_field'"):
        run_select(mock / "output", tmp_path / "z.csv", '{"selection": {"mass_field": "SubhaloMass"}}')


def test_missing_offsets_file_is_named(mock: Path, tmp_path: Path) -> None:
    copy = tmp_path / "TNGmock"
    shutil.copytree(mock, copy)
    (copy / "postprocessing" / "offsets" / "offsets_091.hdf5").unlink()
    with pytest.raises(InputError, match="offsets_091.hdf5"):
        run_select(copy / "output", tmp_path / "o.csv")
    assert h5py.is_hdf5(copy / "postprocessing" / "offsets" / "offsets_099.hdf5")
