"""The mock universe: TNG layout readable by illustris_python, TNG particle order, physics."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import illustris_python as il
import numpy as np
import pytest

from exsitu.io import InputError
from exsitu.mock.simulate import simulate
from exsitu.stages.simulate_mock import main as simulate_main

SNAPS = [99, 91]


@pytest.fixture(scope="module")
def mock(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mock") / "TNGmock"
    simulate_main(["--out", str(root), "--snapshots", "99", "91", "--settings", '{"mock": {"n_galaxies": 30, "seed": 5}}'])
    return root


def test_layout_is_the_tng_one(mock: Path) -> None:
    for s in SNAPS:
        chunks = sorted((mock / "output" / f"snapdir_{s:03d}").glob(f"snap_{s:03d}.*.hdf5"))
        assert len(chunks) > 1
        assert (mock / "output" / f"groups_{s:03d}" / f"fof_subhalo_tab_{s:03d}.0.hdf5").exists()
        assert (mock / "postprocessing" / "offsets" / f"offsets_{s:03d}.hdf5").exists()
        assert (mock / "postprocessing" / "StellarAssembly" / f"stars_{s:03d}.hdf5").exists()
    assert (mock / "postprocessing" / "trees" / "SubLink" / "tree_extended.0.hdf5").exists()
    assert not list(mock.parent.glob(".TNGmock*"))  # the atomic temporary is gone


def test_particle_slices_follow_the_group_catalogue(mock: Path) -> None:
    base = str(mock / "output")
    for s in SNAPS:
        subs = il.groupcat.loadSubhalos(base, s, fields=["SubhaloLenType", "SubhaloMassType", "SubhaloGrNr"])
        groups = il.groupcat.loadHalos(base, s, fields=["GroupFirstSub", "GroupNsubs", "GroupLenType"])
        with h5py.File(mock / "postprocessing" / "offsets" / f"offsets_{s:03d}.hdf5") as f:
            sub_off = f["Subhalo/SnapByType"][:, 4]
            grp_off = f["Group/SnapByType"][:, 4]
        # subhalos of a group are contiguous from the group's first particle; fuzz follows them
        for g in range(len(grp_off)):
            first, n = groups["GroupFirstSub"][g], groups["GroupNsubs"][g]
            assert sub_off[first] == grp_off[g]
            assert subs["SubhaloLenType"][first : first + n, 4].sum() < groups["GroupLenType"][g, 4]
            assert np.all(subs["SubhaloGrNr"][first : first + n] == g)
        header = il.groupcat.loadHeader(base, s)
        with h5py.File(il.snapshot.snapPath(base, s)) as f:
            n_stars = int(f["Header"].attrs["NumPart_Total"][4])
        assert header["Nsubgroups_Total"] == len(sub_off)
        with h5py.File(mock / "postprocessing" / "StellarAssembly" / f"stars_{s:03d}.hdf5") as f:
            assert f["InSitu"].shape == (n_stars,) and f["InSitu"].dtype == np.int8
        assert grp_off[-1] + groups["GroupLenType"][-1, 4] < n_stars  # unbound particles come last
        for sid in (0, len(sub_off) // 2, len(sub_off) - 1):
            stars = il.snapshot.loadSubhalo(base, s, sid, "stars", fields=["Masses", "GFM_StellarFormationTime"])
            not_wind = stars["GFM_StellarFormationTime"] > 0
            assert stars["count"] == subs["SubhaloLenType"][sid, 4]
            assert (~not_wind).sum() >= 1  # wind particles sit inside the subhalo's slice
            assert stars["Masses"][not_wind].sum() == pytest.approx(subs["SubhaloMassType"][sid, 4], rel=1e-4)


def test_population_has_what_the_selection_must_handle(mock: Path) -> None:
    base = str(mock / "output")
    h = il.groupcat.loadHeader(base, 99)["HubbleParam"]
    subs = il.groupcat.loadSubhalos(base, 99, fields=["SubhaloMassType", "SubhaloFlag"])
    mass = subs["SubhaloMassType"][:, 4] * 1e10 / h
    good = subs["SubhaloFlag"] == 1
    assert ((mass > 1e10) & good).sum() == 30
    assert ((mass > 1e10) & ~good).any() and (mass < 1e10).any()
    assert mass.max() < 3e12
    first = il.groupcat.loadHalos(base, 99, fields=["GroupFirstSub"])
    assert len(first) < len(mass)  # there are satellites


def test_ex_situ_fraction_rises_with_mass_and_the_halo_is_old_and_metal_poor(mock: Path) -> None:
    base = str(mock / "output")
    subs = il.groupcat.loadSubhalos(base, 99, fields=["SubhaloLenType", "SubhaloFlag", "SubhaloMassType"])
    with h5py.File(mock / "postprocessing" / "offsets" / "offsets_099.hdf5") as f:
        off = f["Subhalo/SnapByType"][:, 4]
    with h5py.File(mock / "postprocessing" / "StellarAssembly" / "stars_099.hdf5") as f:
        insitu = f["InSitu"][()]
    logm, fex, z_ex, z_in, sft_ex, sft_in = [], [], [], [], [], []
    for sid in np.flatnonzero(subs["SubhaloMassType"][:, 4] > 0.7):
        p = il.snapshot.loadSubhalo(base, 99, int(sid), "stars", fields=["Masses", "GFM_Metallicity", "GFM_StellarFormationTime"])
        flag = insitu[off[sid] : off[sid] + subs["SubhaloLenType"][sid, 4]]
        star = p["GFM_StellarFormationTime"] > 0
        assert np.all(flag[~star] == -1) and np.all(flag[star] >= 0)
        ex = flag == 0
        logm.append(np.log10(p["Masses"][star].sum()))
        fex.append(p["Masses"][ex].sum() / p["Masses"][star].sum())
        z_ex.append(np.median(p["GFM_Metallicity"][ex])), z_in.append(np.median(p["GFM_Metallicity"][star & ~ex]))
        sft_ex.append(np.median(p["GFM_StellarFormationTime"][ex])), sft_in.append(np.median(p["GFM_StellarFormationTime"][star & ~ex]))
    assert np.corrcoef(logm, fex)[0, 1] > 0.4
    assert 0.02 < min(fex) and max(fex) < 0.98
    assert np.mean(np.array(z_ex) < np.array(z_in)) > 0.9
    assert np.mean(np.array(sft_ex) < np.array(sft_in)) > 0.8  # ex-situ stars formed earlier


def test_same_seed_same_universe(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    simulate(tmp_path / "a", [99, 91], 8, seed=11)
    assert time.perf_counter() - t0 < 20
    simulate(tmp_path / "b", [99, 91], 8, seed=11)
    simulate(tmp_path / "c", [99, 91], 8, seed=12)
    rel = "output/snapdir_099/snap_099.1.hdf5"
    with h5py.File(tmp_path / "a" / rel) as a, h5py.File(tmp_path / "b" / rel) as b, h5py.File(tmp_path / "c" / rel) as c:
        for name in ("Coordinates", "Masses", "GFM_Metallicity", "ParticleIDs"):
            np.testing.assert_array_equal(a["PartType4"][name][()], b["PartType4"][name][()])
        assert a["PartType4"]["Masses"].shape != c["PartType4"]["Masses"].shape or not np.array_equal(
            a["PartType4"]["Coordinates"][()], c["PartType4"]["Coordinates"][()]
        )


def test_unknown_snapshot_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="snapshots"):
        simulate_main(["--out", str(tmp_path / "m"), "--snapshots", "98", "--settings", '{"mock": {"n_galaxies": 2, "seed": 1}}'])
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())
