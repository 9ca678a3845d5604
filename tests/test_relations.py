"""Galaxy relations from tagged particle shards: measurement, published bands, figures, and the mock against them."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.figure import Figure

from exsitu.catalog import select_snapshot
from exsitu.io import InputError
from exsitu.mock.simulate import simulate
from exsitu.relations import mass_edges, measure_relations
from exsitu.relations_figures import (
    dispersion_figure,
    exsitu_fraction_figure,
    exsitu_profile_figure,
    metallicity_figure,
    size_figure,
    within_galaxy_figure,
)
from exsitu.tagging import tag_shard


@pytest.fixture(scope="module")
def mock_relations(tmp_path_factory) -> dict:
    """Relations of a small mock universe, through the real mock, TNG-layout writer, selection and tagging."""
    root = tmp_path_factory.mktemp("relations") / "TNGmock"
    simulate(root, [99], 40, seed=3)
    base = str(root / "output")
    shard = root.parent / "shard_0.h5"
    catalog = select_snapshot(base, 99, 1e10, "SubhaloMassType")
    catalog.to_csv(root.parent / "subhalos.csv", index=False)
    tag_shard(base, catalog, 0, 1, str(shard))
    return measure_relations([shard], root.parent / "subhalos.csv")


def test_the_comparison_with_tng100_is_complete(mock_relations: dict) -> None:
    tng = mock_relations["tng100"]
    assert len(tng["bins"]) == len(mass_edges()) - 1 == 7
    assert sum(b["n"] for b in tng["bins"]) == 40
    assert sum(b["share"] for b in tng["bins"]) == pytest.approx(1.0)
    for b in tng["bins"]:
        assert b["tng100"]["fex_median"] > 0 and 0.5 < b["tng100"]["central_share"] < 0.8
        if b["n"] >= 3:
            assert b["fex_p16"] <= b["fex_median"] <= b["fex_p84"]
            assert 0.0 <= b["central_share"] <= 1.0
    checked = {c["what"] for c in tng["checks"]}
    assert {"fex_median", "fex_p16", "fex_p84", "share"} <= checked  # the bins with >= 10 galaxies
    assert tng["all_passed"] == all(c["passed"] for c in tng["checks"])


def test_relations_are_json_and_self_consistent(mock_relations: dict) -> None:
    again = json.loads(json.dumps(mock_relations))
    assert again["n_galaxies"] == 40 and again["snapshot"] == 99
    assert sum(again["exsitu_fraction"]["n"]) == 40
    within = again["within_galaxy"]["metallicity_overlap"]
    assert all(0.0 <= v <= 1.0 for v in within["median"] if v is not None)
    met = again["metallicity"]
    width = np.diff(met["edges"])
    for b, overlap in enumerate(met["overlap"]):
        if overlap is not None:
            assert 0.0 < overlap < 1.0
            assert np.sum(np.array(met["insitu_density"][b]) * width) == pytest.approx(1.0)
    low = next(m for m in again["exsitu_profile"]["fex"] if m is not None)
    values = [v for v in low if v is not None]
    assert values[-1] > values[0]  # accreted stars dominate the outskirts


def _write_shard(path: Path, galaxies: list[dict]) -> None:
    """A tag shard holding ``galaxies`` (dicts of particle arrays), in the tag stage's layout."""
    counts = [g["mass"].size for g in galaxies]
    with h5py.File(path, "w") as f:
        f["galaxies/snapshot"] = np.full(len(galaxies), 99)
        f["galaxies/start"] = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        f["galaxies/count"] = np.array(counts, np.int64)
        f["galaxies/subhalo_id"] = np.arange(len(galaxies), dtype=np.int64)
        for name in ("pos", "vel", "mass", "age", "metallicity", "exsitu"):
            f[f"particles/{name}"] = np.concatenate([g[name] for g in galaxies])


def test_measures_of_a_known_galaxy(tmp_path: Path) -> None:
    # 1000 in-situ stars on a sphere of 1 kpc, 1000 ex-situ ones on a sphere of 5 kpc, |v_i| = 100 km/s.
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(2000, 3))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    radius = np.repeat([1.0, 5.0], 1000)
    galaxy = {
        "pos": unit * radius[:, None],
        "vel": rng.choice([-100.0, 100.0], size=(2000, 3)),
        "mass": np.full(2000, 1e8),
        "metallicity": np.repeat([0.02, 0.002], 1000),
        "age": np.repeat([4.0, 11.0], 1000),
        "exsitu": np.repeat([False, True], 1000),
    }
    _write_shard(tmp_path / "s.h5", [galaxy])
    rel = measure_relations([tmp_path / "s.h5"])
    assert rel["galaxies"]["log_mstar"] == [pytest.approx(np.log10(2e11))]
    assert rel["galaxies"]["exsitu_fraction"] == [pytest.approx(0.5)]
    assert rel["galaxies"]["rhalf_kpc"][0] == pytest.approx(1.0, abs=1e-6)
    assert rel["galaxies"]["sigma_central_kms"][0] == pytest.approx(100.0, rel=0.1)
    assert rel["metallicity"]["overlap"][5] == pytest.approx(0.0)  # log M* = 11.3: Z separates them fully
    assert rel["galaxies"]["metallicity_overlap"] == [pytest.approx(0.0)]
    assert rel["galaxies"]["metallicity_insitu_minus_exsitu"] == [pytest.approx(1.0, abs=0.01)]
    assert rel["galaxies"]["age_insitu_minus_exsitu"] == [pytest.approx(-7.0, abs=0.01)]
    assert 1.0 < rel["exsitu_profile"]["transition_kpc"][5] < 5.0


def test_a_shard_without_particle_metallicity_is_named(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "s.h5", "w") as f:
        for name in ("snapshot", "start", "count", "subhalo_id"):
            f[f"galaxies/{name}"] = np.zeros(1, np.int64)
        for name in ("pos", "vel", "mass", "age", "exsitu"):
            f[f"particles/{name}"] = np.zeros(1)
    with pytest.raises(InputError, match=r"s\.h5.*metallicity"):
        measure_relations([tmp_path / "s.h5"])


@pytest.mark.parametrize(
    "figure",
    [
        exsitu_fraction_figure,
        size_figure,
        dispersion_figure,
        exsitu_profile_figure,
        metallicity_figure,
        within_galaxy_figure,
    ],
)
def test_figures_draw_the_mock_and_the_bands(mock_relations: dict, figure) -> None:
    fig = figure(mock_relations)
    assert isinstance(fig, Figure)
    artists = [a for ax in fig.axes for a in (*ax.collections, *ax.lines, *ax.patches)]
    assert len(artists) >= 2
    if figure in (exsitu_fraction_figure, size_figure, dispersion_figure):
        assert any(t.get_text().startswith(("TNG100", "Kravtsov", "Zahid")) for t in fig.axes[0].get_legend().texts)
