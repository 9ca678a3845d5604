"""Tagging: wind removal, periodic wrap, unit conversion, ex-situ flags, bad input."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import illustris_python as il
import numpy as np
import pandas as pd
import pytest

from exsitu.io import InputError
from exsitu.mock.simulate import simulate
from exsitu.stages.select import main as select_main
from exsitu.stages.tag import main as tag_main
from exsitu.tagging import to_physical
from exsitu.units import cosmology, stellar_age_gyr

HEADER = {"Time": 0.5, "HubbleParam": 0.7, "BoxSize": 1000.0, "Omega0": 0.3, "OmegaLambda": 0.7}


def test_to_physical_drops_winds_wraps_and_converts() -> None:
    raw = {
        "Coordinates": np.array([[999.0, 10.0, 10.0], [1.0, 10.0, 10.0], [5.0, 12.0, 10.0]]),
        "Velocities": np.array([[100.0, 0, 0], [0, 0, 0], [0, 0, 0]]),
        "Masses": np.array([1.0, 2.0, 3.0]),
        "GFM_StellarFormationTime": np.array([0.25, -0.3, 0.4]),
        "GFM_Metallicity": np.array([0.01, 0.02, 0.03]),
    }
    insitu = np.array([0, -1, 1], np.int8)
    t = to_physical(raw, insitu, np.array([1.0, 10.0, 10.0]), np.array([10.0, 0, 0]), HEADER)
    assert t.mass.size == 2  # the wind particle is gone
    np.testing.assert_allclose(t.pos[0], [-2.0 * 0.5 / 0.7, 0, 0])  # across the box edge, not 998
    np.testing.assert_allclose(t.pos[1], [4.0 * 0.5 / 0.7, 2.0 * 0.5 / 0.7, 0])
    np.testing.assert_allclose(t.vel[0], [100 * np.sqrt(0.5) - 10.0, 0, 0])
    np.testing.assert_allclose(t.mass, [1e10 / 0.7, 3e10 / 0.7])
    np.testing.assert_array_equal(t.exsitu, [True, False])
    np.testing.assert_allclose(t.metallicity, [0.01, 0.03])
    np.testing.assert_allclose(t.age, stellar_age_gyr(np.array([0.25, 0.4]), 0.5, cosmology(HEADER)))
    assert t.exsitu_total == pytest.approx(1 / 4)


@pytest.fixture(scope="module")
def universe(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tag") / "TNGmock"
    simulate(root, [99, 91], 6, seed=21)
    catalog = root.parent / "subhalos.csv"
    select_main(
        [
            "--basepath",
            str(root / "output"),
            "--snapshots",
            "99",
            "91",
            "--out",
            str(catalog),
            "--settings",
            '{"selection": {"min_stellar_mass": 1e10, "mass_field": "SubhaloMassType"}}',
        ]
    )
    return root, catalog


def run_tag(root: Path, catalog: Path, out: Path, shard: int = 0, n_shards: int = 2) -> None:
    tag_main(
        [
            "--basepath",
            str(root / "output"),
            "--catalog",
            str(catalog),
            "--shard",
            str(shard),
            "--n-shards",
            str(n_shards),
            "--out",
            str(out),
        ]
    )


def test_shard_file_holds_the_shard_rows_in_physical_units(universe, tmp_path: Path) -> None:
    root, catalog = universe
    cat = pd.read_csv(catalog)
    run_tag(root, catalog, tmp_path / "shard_1.h5", shard=1)
    with h5py.File(tmp_path / "shard_1.h5") as f:
        g = {k: f["galaxies"][k][()] for k in f["galaxies"]}
        p = {k: f["particles"][k][()] for k in f["particles"]}
        assert f.attrs["shard"] == 1 and f.attrs["simulation"] == "TNGmock"
    expected = cat.iloc[1::2]
    np.testing.assert_array_equal(g["subhalo_id"], expected["subhalo_id"])
    np.testing.assert_array_equal(g["galaxy_id"], expected["galaxy_id"])
    assert g["count"].sum() == p["mass"].size and np.all(
        g["start"] == np.concatenate([[0], np.cumsum(g["count"])[:-1]])
    )
    # masses of a galaxy add up to its catalogue stellar mass (winds are not stars)
    for k in range(len(g["count"])):
        sl = slice(g["start"][k], g["start"][k] + g["count"][k])
        assert p["mass"][sl].sum() == pytest.approx(g["stellar_mass"][k], rel=1e-4)
        assert g["exsitu_total"][k] == pytest.approx(
            p["mass"][sl][p["exsitu"][sl]].sum() / p["mass"][sl].sum(), rel=1e-5
        )
        r = np.linalg.norm(p["pos"][sl], axis=1)
        assert np.median(r) < 5 * g["rhalf_kpc"][k]  # centred, in physical kpc
        assert abs(np.average(p["vel"][sl], axis=0, weights=p["mass"][sl])).max() < 60  # relative to SubhaloVel
    assert p["age"].min() > 0 and p["age"].max() < 13.9
    assert 0 < p["exsitu"].mean() < 1


def test_missing_stellar_assembly_is_named(universe, tmp_path: Path) -> None:
    root, catalog = universe
    copy = tmp_path / "TNGmock"
    shutil.copytree(root, copy)
    (copy / "postprocessing" / "StellarAssembly" / "stars_099.hdf5").unlink()
    out = tmp_path / "s.h5"
    with pytest.raises(InputError, match=r"stars_099\.hdf5.*InSitu"):
        run_tag(copy, catalog, out)
    assert not out.exists()


def test_stellar_assembly_length_mismatch_fails(universe, tmp_path: Path) -> None:
    root, catalog = universe
    copy = tmp_path / "TNGmock"
    shutil.copytree(root, copy)
    path = copy / "postprocessing" / "StellarAssembly" / "stars_091.hdf5"
    with h5py.File(path, "r+") as f:
        short = f["InSitu"][:-5]
        del f["InSitu"]
        f["InSitu"] = short
    with pytest.raises(InputError, match="InSitu has .* entries but snapshot 91"):
        run_tag(copy, catalog, tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()


def test_missing_offsets_file_is_named(universe, tmp_path: Path) -> None:
    root, catalog = universe
    copy = tmp_path / "TNGmock"
    shutil.copytree(root, copy)
    (copy / "postprocessing" / "offsets" / "offsets_099.hdf5").unlink()
    with pytest.raises(InputError, match=r"offsets_099\.hdf5.*particle slice"):
        run_tag(copy, catalog, tmp_path / "s.h5")


def _edit_subhalo_field(root: Path, snap: int, sid: int, field: str, value: float) -> None:
    """Overwrite one PartType4 field of one subhalo's particles, in whatever chunks hold them."""
    base = str(root / "output")
    subset = il.snapshot.getSnapOffsets(base, snap, sid, "Subhalo")
    lo, n = int(subset["offsetType"][4]), int(subset["lenType"][4])
    starts = subset["snapOffsets"][4]
    for k, start in enumerate(starts):
        with h5py.File(il.snapshot.snapPath(base, snap, k), "r+") as f:
            data = f["PartType4"][field]
            a, b = max(lo - start, 0), min(lo + n - start, data.shape[0])
            if a < b:
                data[a:b] = value


def test_galaxy_with_only_winds_is_skipped_with_a_warning(universe, tmp_path: Path, caplog) -> None:
    root, catalog = universe
    copy = tmp_path / "TNGmock"
    shutil.copytree(root, copy)
    first = pd.read_csv(catalog).iloc[0]
    _edit_subhalo_field(copy, int(first.snapshot), int(first.subhalo_id), "GFM_StellarFormationTime", -0.1)
    with caplog.at_level(logging.WARNING, logger="exsitu"):
        run_tag(copy, catalog, tmp_path / "s.h5")
    assert "only wind particles" in caplog.text
    with h5py.File(tmp_path / "s.h5") as f:
        assert int(first.subhalo_id) not in set(
            f["galaxies/subhalo_id"][()][f["galaxies/snapshot"][()] == first.snapshot]
        )


def test_nan_in_particles_fails(universe, tmp_path: Path) -> None:
    root, catalog = universe
    copy = tmp_path / "TNGmock"
    shutil.copytree(root, copy)
    first = pd.read_csv(catalog).iloc[0]
    _edit_subhalo_field(copy, int(first.snapshot), int(first.subhalo_id), "GFM_Metallicity", np.nan)
    with pytest.raises(InputError, match="NaN"):
        run_tag(copy, catalog, tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()
