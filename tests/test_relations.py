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
from exsitu.relations import MASS_EDGES, measure_relations
from exsitu.relations_figures import (
    dispersion_figure,
    exsitu_fraction_figure,
    exsitu_profile_figure,
    metallicity_figure,
    size_figure,
)
from exsitu.tagging import tag_shard


@pytest.fixture(scope="module")
def mock_relations(tmp_path_factory) -> dict:
    """Relations of a small mock universe, through the real mock, TNG-layout writer, selection and tagging."""
    root = tmp_path_factory.mktemp("relations") / "TNGmock"
    simulate(root, [99], 40, seed=3)
    base = str(root / "output")
    shard = root.parent / "shard_0.h5"
    tag_shard(base, select_snapshot(base, 99, 1e10, "SubhaloMassType"), 0, 1, str(shard))
    return measure_relations([shard])


def _band_at(relations: dict, key: str, log_m: float) -> tuple[float, float]:
    bands = relations["bands"]
    return tuple(float(np.interp(log_m, bands["log_mstar"], bands[key][e])) for e in ("lo", "hi"))


def test_mock_exsitu_fraction_medians_lie_in_the_published_band(mock_relations: dict) -> None:
    centres = 0.5 * (np.array(MASS_EDGES[:-1]) + np.array(MASS_EDGES[1:]))
    checked = 0
    for c, median in zip(centres, mock_relations["exsitu_fraction"]["median"]):
        if median is None:
            continue
        lo, hi = _band_at(mock_relations, "exsitu_fraction", c)
        assert lo <= median <= hi, f"median f_ex {median:.3f} at log M* {c} outside [{lo:.2f}, {hi:.2f}]"
        checked += 1
    assert checked >= 2


def test_relations_are_json_and_self_consistent(mock_relations: dict) -> None:
    again = json.loads(json.dumps(mock_relations))
    assert again["n_galaxies"] == 40 and again["snapshot"] == 99
    assert sum(again["exsitu_fraction"]["n"]) == 40
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
        for name in ("pos", "vel", "mass", "metallicity", "exsitu"):
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
        "exsitu": np.repeat([False, True], 1000),
    }
    _write_shard(tmp_path / "s.h5", [galaxy])
    rel = measure_relations([tmp_path / "s.h5"])
    assert rel["galaxies"]["log_mstar"] == [pytest.approx(np.log10(2e11))]
    assert rel["galaxies"]["exsitu_fraction"] == [pytest.approx(0.5)]
    assert rel["galaxies"]["rhalf_kpc"][0] == pytest.approx(1.0, abs=1e-6)
    assert rel["galaxies"]["sigma_central_kms"][0] == pytest.approx(100.0, rel=0.1)
    assert rel["metallicity"]["overlap"][3] == pytest.approx(0.0)  # log M* = 11.3: Z separates them fully
    assert 1.0 < rel["exsitu_profile"]["transition_kpc"][3] < 5.0


def test_a_shard_without_particle_metallicity_is_named(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "s.h5", "w") as f:
        for name in ("snapshot", "start", "count"):
            f[f"galaxies/{name}"] = np.zeros(1, np.int64)
        for name in ("pos", "vel", "mass", "exsitu"):
            f[f"particles/{name}"] = np.zeros(1)
    with pytest.raises(InputError, match=r"s\.h5.*metallicity"):
        measure_relations([tmp_path / "s.h5"])


@pytest.mark.parametrize(
    "figure", [exsitu_fraction_figure, size_figure, dispersion_figure, exsitu_profile_figure, metallicity_figure]
)
def test_figures_draw_the_mock_and_the_bands(mock_relations: dict, figure) -> None:
    fig = figure(mock_relations)
    assert isinstance(fig, Figure)
    artists = [a for ax in fig.axes for a in (*ax.collections, *ax.lines, *ax.patches)]
    assert len(artists) >= 2
    if figure in (exsitu_fraction_figure, size_figure, dispersion_figure):
        assert any(t.get_text().startswith(("Rodriguez", "Kravtsov", "Zahid")) for t in fig.axes[0].get_legend().texts)
