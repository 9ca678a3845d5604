"""Lines of sight balance the ex-situ distribution; orientations are isotropic rotations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from exsitu.io import InputError
from exsitu.settings import PlanSettings
from exsitu.sightlines import lines_of_sight, make_plan, random_rotations


def test_rare_ex_situ_fractions_get_more_lines_of_sight() -> None:
    rng = np.random.default_rng(0)
    fex = np.concatenate([rng.uniform(0.1, 0.2, 90), rng.uniform(0.7, 0.8, 10)])
    n = lines_of_sight(fex, 2, 12, 10)
    assert n.min() >= 2 and n.max() <= 12
    assert np.all(n[:90] == 2) and np.all(n[90:] > 2)
    # projections per bin are closer to flat than galaxies per bin
    assert n[90:].sum() / n[:90].sum() > 3 * 10 / 90
    assert np.all(lines_of_sight(fex, 3, 3, 10) == 3)


def test_bad_bounds_are_an_input_error() -> None:
    with pytest.raises(InputError, match="min_los"):
        lines_of_sight(np.array([0.1]), 5, 2, 10)


def test_rotations_are_proper_and_isotropic() -> None:
    rot = random_rotations(np.random.default_rng(1), 20000)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-10)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-10)
    los = rot[:, 2]
    assert np.abs(los.mean(axis=0)).max() < 0.02
    np.testing.assert_allclose((los**2).mean(axis=0), 1 / 3, atol=0.01)


def test_plan_is_deterministic_and_complete() -> None:
    galaxies = pd.DataFrame(
        {
            "snapshot": [99, 99, 91],
            "subhalo_id": [0, 4, 2],
            "galaxy_id": [0, 7, 0],
            "exsitu_total": [0.1, 0.9, 0.12],
            "shard": [0, 1, 0],
        }
    )
    settings = PlanSettings.from_config({"min_los": 1, "max_los": 4, "n_bins": 5, "seed": 3})
    a = make_plan(galaxies, settings)
    b = make_plan(galaxies.iloc[::-1], settings)
    pd.testing.assert_frame_equal(a, b)
    counts = a.groupby(["snapshot", "subhalo_id"]).size()
    assert counts[(99, 4)] > counts[(99, 0)]
    assert list(a.loc[a["subhalo_id"] == 4, "los_index"]) == list(range(counts[(99, 4)]))
    assert not a[[c for c in a.columns if c.startswith("r")]].duplicated().any()
