"""The mock universe: TNG layout readable by illustris_python, TNG particle order, physics."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import illustris_python as il
import numpy as np
import pytest

from exsitu.io import InputError
from exsitu.mock.galaxies import draw_galaxy, draw_population, make_particles, progenitor
from exsitu.mock.simulate import simulate
from exsitu.stages.simulate_mock import main as simulate_main

SNAPS = [99, 91]


@pytest.fixture(scope="module")
def mock(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mock") / "TNGmock"
    simulate_main(
        ["--out", str(root), "--snapshots", "99", "91", "--settings", '{"mock": {"n_galaxies": 30, "seed": 5}}']
    )
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
    assert mass.max() < 10**12.6  # TNG100's mass function, which the mock follows, ends near 10^12.5
    first = il.groupcat.loadHalos(base, 99, fields=["GroupFirstSub"])
    assert len(first) < len(mass)  # there are satellites


def test_ex_situ_fraction_rises_with_mass_and_accreted_stars_are_metal_poorer(mock: Path) -> None:
    base = str(mock / "output")
    subs = il.groupcat.loadSubhalos(base, 99, fields=["SubhaloLenType", "SubhaloFlag", "SubhaloMassType"])
    with h5py.File(mock / "postprocessing" / "offsets" / "offsets_099.hdf5") as f:
        off = f["Subhalo/SnapByType"][:, 4]
    with h5py.File(mock / "postprocessing" / "StellarAssembly" / "stars_099.hdf5") as f:
        insitu = f["InSitu"][()]
    logm, fex, z_ex, z_in = [], [], [], []
    for sid in np.flatnonzero(subs["SubhaloMassType"][:, 4] > 0.7):
        p = il.snapshot.loadSubhalo(
            base, 99, int(sid), "stars", fields=["Masses", "GFM_Metallicity", "GFM_StellarFormationTime"]
        )
        flag = insitu[off[sid] : off[sid] + subs["SubhaloLenType"][sid, 4]]
        star = p["GFM_StellarFormationTime"] > 0
        assert np.all(flag[~star] == -1) and np.all(flag[star] >= 0)
        ex = flag == 0
        logm.append(np.log10(p["Masses"][star].sum()))
        fex.append(p["Masses"][ex].sum() / p["Masses"][star].sum())
        z_ex.append(np.median(p["GFM_Metallicity"][ex])), z_in.append(np.median(p["GFM_Metallicity"][star & ~ex]))
    logm, fex = np.array(logm), np.array(fex)
    heavy = logm > np.median(logm)
    assert np.median(fex[heavy]) > np.median(fex[~heavy])
    assert 0.0 < fex.min() and fex.max() < 0.98
    assert np.mean(np.array(z_ex) < np.array(z_in)) > 0.7  # satellites are less massive, so metal poorer


def test_merger_mix_follows_rodriguez_gomez_and_depends_on_host_mass() -> None:
    def mix(models: list) -> dict[str, float]:
        mass = {"major": 0.0, "minor": 0.0, "very_minor": 0.0, "stripped": 0.0}
        for model in models:
            for s in model.satellites:
                mass[s.kind] += 10**s.log_mass
        return {k: v / sum(mass.values()) for k, v in mass.items()}

    rng = np.random.default_rng(3)
    # RG16's figures are for all ex-situ stars of the population: ~50% major, ~20% minor, ~20% very minor, ~10%
    # stripped (their abstract); majors bring the most. The mock's population brings 0.61-0.65 / 0.14-0.17 / 0.12 /
    # 0.09-0.10 (1500 galaxies of seeds 5 and 6; the README): more from majors than Illustris.
    everything = mix(draw_population(rng, 1000))
    assert max(everything, key=everything.get) == "major" and 0.4 < everything["major"] < 0.7
    assert 0.1 < everything["minor"] < 0.3 and 0.05 < everything["very_minor"] < 0.3
    assert 0.05 < everything["stripped"] < 0.15
    # Majors bring more of a massive host's ex-situ stars than of a small one's.
    low, high = (mix([draw_galaxy(rng, log_m) for _ in range(150)]) for log_m in (10.2, 11.7))
    assert low["major"] < high["major"]


def test_a_progenitor_lacks_later_stars_and_satellites() -> None:
    rng = np.random.default_rng(8)
    model = next(
        m for m in (draw_galaxy(rng, 11.3) for _ in range(50)) if any(s.arrival_gyr < 1.3 for s in m.satellites)
    )
    now = make_particles(model, 13.8, 0.0)
    before = make_particles(progenitor(model, rng), 12.5, 1.3)
    assert len(before) < len(now) and before.mass[0] == now.mass[0]
    assert before.mass[before.insitu == 0].sum() < now.mass[now.insitu == 0].sum()
    assert before.age.max() <= 12.5 - 0.2 and before.age.min() > 0


def _datasets(root: Path) -> dict[str, np.ndarray]:
    """Every dataset of every HDF5 file under ``root``, by relative path."""
    out: dict[str, np.ndarray] = {}
    for path in sorted(root.rglob("*.hdf5")):
        with h5py.File(path) as f:
            names: list[str] = []
            f.visit(names.append)
            out.update({f"{path.relative_to(root)}:{n}": f[n][()] for n in names if isinstance(f[n], h5py.Dataset)})
    return out


def test_same_seed_same_universe_with_any_number_of_workers(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    simulate(tmp_path / "a", [99, 91], 8, seed=11)
    assert time.perf_counter() - t0 < 20
    simulate(tmp_path / "b", [99, 91], 8, seed=11, workers=2)  # the snapshots built in two processes
    simulate(tmp_path / "c", [99, 91], 8, seed=12)
    a, b, c = _datasets(tmp_path / "a"), _datasets(tmp_path / "b"), _datasets(tmp_path / "c")
    assert a.keys() == b.keys() and len(a) > 20
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    rel = "output/snapdir_099/snap_099.1.hdf5:PartType4/Coordinates"
    assert a[rel].shape != c[rel].shape or not np.array_equal(a[rel], c[rel])


def test_unknown_snapshot_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="snapshots"):
        simulate_main(
            ["--out", str(tmp_path / "m"), "--snapshots", "98", "--settings", '{"mock": {"n_galaxies": 2, "seed": 1}}']
        )
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())
